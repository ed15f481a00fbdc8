//! `circuit.html`: one self-contained page (inline CSS, figures as `data:` URIs, no script, nothing
//! fetched) with the writers (heatmap, table, the top heads' attention patterns) and the readers
//! (heatmap, table). [`circuit_sections`] is the same content for another report (styled by
//! [`CIRCUIT_CSS`]).

use std::fmt::Write;

use figures::html::{base64, display_token, escape};
use steering::MeanCi;

use crate::output::CircuitReport;
use crate::writers::PatternView;

/// The page's CSS; classes are prefixed `cc-`.
pub const CIRCUIT_CSS: &str = "table.cc{border-collapse:collapse;font-size:12px;margin:8px 0}table.cc td,table.cc th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}\
table.cc th{background:#f6f6f6}table.cc td.l,table.cc th.l{text-align:left}.cc-note{color:#777}.cc-out{background:#fff4e0;font-weight:600}\
table.cc-pattern{border-collapse:collapse;font-size:10px;margin:6px 0}table.cc-pattern td{width:22px;height:18px;text-align:center;border:1px solid #fff}\
table.cc-pattern th{font-weight:normal;font-family:ui-monospace,Menlo,Consolas,monospace;padding:0 4px;white-space:nowrap}";

const PAGE_CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;max-width:1200px;color:#222}";

fn ci(m: &MeanCi) -> String {
    format!("{:.3} ± {:.3}", m.mean, m.half_width)
}

/// The page.
pub fn circuit_page(report: &CircuitReport, figures: &[Vec<u8>]) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Circuit of latent #{}</title>\
         <style>{PAGE_CSS}{CIRCUIT_CSS}</style></head><body><h1>Circuit of latent #{}</h1>{}</body></html>\n",
        report.latent,
        report.latent,
        circuit_sections(report, figures)
    )
}

/// The content: writers then readers, with the figures given (writers first).
pub fn circuit_sections(report: &CircuitReport, figures: &[Vec<u8>]) -> String {
    let w = &report.writers;
    let mut out = format!(
        "<p class=\"cc-note\">{} (base) vs {} (chat), crosscoder {}, latent #{} at blocks.{}.hook_resid_post; \
         prompts: {} ({}). Mean pre-activation {} (constant {:.3}).</p>",
        escape(&report.models[0]),
        escape(&report.models[1]),
        escape(&report.crosscoder),
        report.latent,
        report.layer,
        escape(&report.prompts),
        w.prompts,
        ci(&w.pre_activation),
        w.constant
    );
    let _ = write!(
        out,
        "<h2>Writers</h2><p class=\"cc-note\">The latent's pre-activation is affine in both models' residuals, and \
         each residual is the embedding plus every head's and MLP's write, so it splits exactly over them. Per \
         component: its contribution in each model, and what chat training changed, W_chat . (c_chat - c_base); \
         means over prompts (tokens after &lt;bos&gt;) with 95% intervals. Standing out (marked): the interval \
         excludes 0 and the component holds at least {:.0}% of the total absolute change.</p>",
        100.0 * crate::writers::STANDOUT_SHARE
    );
    if let Some(png) = figures.first() {
        let _ = write!(
            out,
            "<img alt=\"writers\" src=\"data:image/png;base64,{}\">",
            base64(png)
        );
    }
    out.push_str("<table class=\"cc\"><tr><th class=\"l\">component</th><th>base</th><th>chat</th><th>chat minus base</th></tr>");
    for c in w.components.iter().take(12) {
        let marked = w.stands_out.contains(&c.component);
        let _ = write!(
            out,
            "<tr{}><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if marked { " class=\"cc-out\"" } else { "" },
            escape(&c.label),
            ci(&c.base),
            ci(&c.chat),
            ci(&c.difference)
        );
    }
    out.push_str("</table>");
    if w.stands_out.is_empty() {
        out.push_str("<p><b>No component stands out</b>: nothing chat training changed writes this latent.</p>");
    }
    if !w.patterns.is_empty() {
        out.push_str("<h3>Attention patterns of the top heads</h3><p class=\"cc-note\">Rows: queries, columns: keys; darker is more attention. Chat model, then base.</p>");
        for view in &w.patterns {
            pattern_table(view, &mut out);
        }
    }
    if let Some(r) = &report.readers {
        let _ = write!(
            out,
            "<h2>Readers</h2><p class=\"cc-note\">Every head and MLP of the chat model after layer {}: the relative change of \
             its output when the latent is ablated (error kept), and composition scores with the latent's chat decoder \
             direction through the norm before it (a random direction scores about {:.3}).</p>",
            report.layer, r.baseline
        );
        if let Some(png) = figures.get(1) {
            let _ = write!(
                out,
                "<img alt=\"readers\" src=\"data:image/png;base64,{}\">",
                base64(png)
            );
        }
        out.push_str("<table class=\"cc\"><tr><th class=\"l\">component</th><th>ablation effect</th><th class=\"l\">composition</th><th class=\"l\">most aligned neurons (gate, up cosine)</th></tr>");
        for c in r.components.iter().take(12) {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                escape(&c.label),
                ci(&c.ablation),
                c.composition
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                c.neurons
                    .iter()
                    .take(3)
                    .map(|n| format!("#{} ({:.2}, {:.2})", n.neuron, n.gate_cosine, n.up_cosine))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out.push_str("</table>");
    }
    out
}

fn pattern_table(view: &PatternView, out: &mut String) {
    for (m, name) in [(1, "chat"), (0, "base")] {
        let _ = write!(
            out,
            "<p class=\"cc-note\">{} on prompt {}, {name} model</p><table class=\"cc-pattern\"><tr><th></th>",
            view.component.label(),
            view.prompt
        );
        for t in &view.tokens {
            let _ = write!(out, "<th>{}</th>", escape(&display_token(t)));
        }
        out.push_str("</tr>");
        for (q, row) in view.patterns[m].iter().enumerate() {
            let _ = write!(
                out,
                "<tr><th>{}</th>",
                escape(&display_token(&view.tokens[q]))
            );
            for p in row {
                let shade = (255.0 * (1.0 - p.clamp(0.0, 1.0))).round() as u8;
                let _ = write!(
                    out,
                    "<td title=\"{p:.3}\" style=\"background:rgb({shade},{shade},255)\"></td>"
                );
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    }
}
