//! Dashboards as HTML: a self-contained page (inline CSS, histograms as inline SVG, no script, nothing
//! fetched), and the section of one latent for embedding in another report (`report.html`).

use std::fmt::Write;

use figures::html::{display_token, escape};
use model_pair::TokenRole;

use crate::dashboard::{Context, LatentDashboard};
use crate::lens::LensTokens;

/// The CSS a dashboard section needs (the standalone page includes it; a report embedding sections
/// adds it to its own `<style>`).
pub const DASHBOARD_CSS: &str = "\
.dash{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}\
.dash h3{margin:4px 0 6px}.dash h4{margin:12px 0 4px;font-size:14px}\
.dash .stats{color:#444;font-size:13px;margin:2px 0 8px}\
.dash .row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}\
.dash table{border-collapse:collapse;font-size:12px}.dash td,.dash th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}\
.dash td.l,.dash th.l{text-align:left}\
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;line-height:1.9;margin:2px 0;white-space:pre-wrap}\
.ctx span{border-radius:2px;padding:1px 0}.ctx .peak{outline:1px solid #b35900;font-weight:bold}\
.ctx .v{color:#888;font-size:11px;margin-right:8px}\
.lens{font-size:12px}.lens b{font-family:ui-monospace,Menlo,Consolas,monospace;font-weight:normal;background:#f3f3f3;padding:0 3px;margin:1px;display:inline-block}\
.muted{color:#888}";

/// A standalone page with every dashboard.
pub fn dashboards_page(title: &str, dashboards: &[LatentDashboard]) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\
         <style>body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;max-width:1100px;color:#222}}{DASHBOARD_CSS}</style>\
         </head><body><h1>{}</h1><p class=\"muted\">Tokens shaded by the latent's activation (darker is stronger; \
         hover for the value); the peak token is outlined. Lower-activation samples show what the latent does at \
         ordinary strength.</p>",
        escape(title),
        escape(title)
    );
    for d in dashboards {
        out.push_str(&dashboard_section(d));
    }
    out.push_str("</body></html>\n");
    out
}

/// One latent's section (`<section class="dash" id="latent-J">`).
pub fn dashboard_section(d: &LatentDashboard) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"dash\" id=\"latent-{}\"><h3>Latent #{}</h3><p class=\"stats\">fires on {} of {} tokens \
         (density {:.4}); largest activation {:.3}; mean where it fires {:.3}{}</p><div class=\"row\">",
        d.latent,
        d.latent,
        d.firing,
        d.tokens,
        d.density,
        d.max_activation,
        d.mean_when_firing,
        match d.decoder_norms {
            Some([base, chat]) => format!("; decoder norms base {base:.3}, chat {chat:.3}"),
            None => String::new(),
        }
    );
    histogram_svg(d, &mut out);
    roles_table(d, &mut out);
    out.push_str("</div>");
    if !d.lens.is_empty() {
        out.push_str("<h4>Logit lens of the decoder vectors</h4><div class=\"lens\">");
        for lens in &d.lens {
            lens_block(lens, &mut out);
        }
        out.push_str("</div>");
    }
    out.push_str("<h4>Top activations</h4>");
    if d.top_contexts.is_empty() {
        out.push_str("<p class=\"muted\">The latent never fires on these tokens.</p>");
    }
    for c in &d.top_contexts {
        context_line(c, d.max_activation, &mut out);
    }
    if d.intervals.iter().any(|i| !i.contexts.is_empty()) {
        out.push_str("<h4>Samples by activation interval</h4>");
        for interval in &d.intervals {
            let _ = write!(
                out,
                "<p class=\"stats\">({:.3}, {:.3}]: {} firings</p>",
                interval.low, interval.high, interval.firings
            );
            for c in &interval.contexts {
                context_line(c, d.max_activation, &mut out);
            }
        }
    }
    out.push_str("</section>");
    out
}

fn role_name(role: TokenRole) -> &'static str {
    match role {
        TokenRole::Bos => "<bos>",
        TokenRole::Pad => "padding",
        TokenRole::Template => "chat template",
        TokenRole::User => "user",
        TokenRole::Assistant => "assistant",
    }
}

fn roles_table(d: &LatentDashboard, out: &mut String) {
    out.push_str(
        "<table><tr><th class=\"l\">tokens</th><th>seen</th><th>firing</th><th>share of activation</th></tr>",
    );
    for r in d.roles.iter().filter(|r| r.tokens > 0) {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
            escape(role_name(r.role)),
            r.tokens,
            r.firing,
            100.0 * r.share
        );
    }
    out.push_str("</table>");
}

fn histogram_svg(d: &LatentDashboard, out: &mut String) {
    let (w, h) = (320.0, 110.0);
    let counts = &d.histogram.counts;
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar = w / counts.len().max(1) as f64;
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" \
         aria-label=\"histogram of the activations where the latent fires\">",
        h + 18.0
    );
    for (i, &c) in counts.iter().enumerate() {
        let height = h * c as f64 / top;
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#e6761b\"><title>{:.3}-{:.3}: {c}</title></rect>",
            i as f64 * bar,
            h - height,
            (bar - 1.0).max(0.5),
            d.histogram.edges[i],
            d.histogram.edges[i + 1]
        );
    }
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#999\"/>\
         <text x=\"0\" y=\"{}\" font-size=\"10\" fill=\"#555\">0</text>\
         <text x=\"{w}\" y=\"{}\" font-size=\"10\" fill=\"#555\" text-anchor=\"end\">{:.3}</text></svg>",
        h + 13.0,
        h + 13.0,
        d.max_activation
    );
}

fn lens_block(lens: &LensTokens, out: &mut String) {
    let side = if lens.model == 0 { "base" } else { "chat" };
    let _ = write!(
        out,
        "<p><span class=\"muted\">{side} decoder vector (norm {:.3}) through {}'s unembedding:</span><br>",
        lens.norm,
        escape(&lens.model_name)
    );
    if lens.promoted.is_empty() {
        out.push_str(
            "<span class=\"muted\">negligible next to the other model's: the latent writes (almost) nothing here</span></p>",
        );
        return;
    }
    for (label, tokens) in [
        ("promotes", &lens.promoted),
        ("suppresses", &lens.suppressed),
    ] {
        let _ = write!(out, "{label} ");
        for t in tokens {
            let _ = write!(
                out,
                "<b title=\"logit {:.3}\">{}</b>",
                t.logit,
                escape(&display_token(&t.token))
            );
        }
        out.push_str("<br>");
    }
    out.push_str("</p>");
}

/// One context: its peak value, then its tokens shaded by activation relative to `max`.
fn context_line(c: &Context, max: f32, out: &mut String) {
    let _ = write!(
        out,
        "<div class=\"ctx\"><span class=\"v\">{:.3}</span>",
        c.value
    );
    for (i, t) in c.tokens.iter().enumerate() {
        let alpha = if max > 0.0 {
            (t.value / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let _ = write!(
            out,
            "<span{} style=\"background:rgba(230,118,27,{alpha:.2})\" title=\"{:.3} ({})\">{}</span>",
            if i == c.peak { " class=\"peak\"" } else { "" },
            t.value,
            escape(role_name(t.role)),
            escape(&display_token(&t.token))
        );
    }
    out.push_str("</div>");
}
