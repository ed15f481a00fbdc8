//! `adl.html`: one self-contained page (inline CSS, no script, nothing fetched) with what the activation
//! difference says: per layer and position its norm, both models' lens tokens and the latents it aligns
//! with; the Patchscope per scale; the steered and unsteered answers side by side.

use std::fmt::Write;

use crate::output::AdlSummary;
use crate::read::LensEntry;

/// The page file.
pub const HTML_FILE: &str = "adl.html";

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;max-width:1200px;color:#222}\
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f6f6f6}.tok{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f3f3f3;padding:0 3px;margin:1px;display:inline-block}\
.muted{color:#888}.best{background:#fff4e0}";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn tokens(entries: &[LensEntry], n: usize) -> String {
    entries
        .iter()
        .take(n)
        .map(|e| {
            format!(
                "<span class=\"tok\" title=\"logit {:.3}, p {:.4}\">{}</span>",
                e.logit,
                e.probability,
                escape(&e.token.replace('▁', " ").replace('\n', "↵"))
            )
        })
        .collect()
}

/// Renders `summary` as a page.
pub fn adl_page(summary: &AdlSummary) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Activation Difference Lens</title>\
         <style>{CSS}</style></head><body><h1>Activation Difference Lens</h1><p class=\"muted\">{} (base) vs {} \
         (chat); {} texts of {} ({} too short); the mean chat-minus-base residual at the first {} positions after \
         &lt;bos&gt;. Hover a token for its logit and probability.</p>",
        escape(&summary.models[0]),
        escape(&summary.models[1]),
        summary.texts,
        escape(&summary.corpus),
        summary.skipped,
        summary.k
    );
    out.push_str(
        "<h2>The difference, read</h2><table><tr><th>layer</th><th>position</th><th>|delta|</th>\
         <th>|h| base / chat</th><th>base head promotes</th><th>chat head promotes</th><th>chat head suppresses</th>\
         <th>aligned latents</th></tr>",
    );
    for r in &summary.readings {
        let lens = |i: usize, promoted: bool| {
            r.lens
                .get(i)
                .map(|l| tokens(if promoted { &l.promoted } else { &l.suppressed }, 8))
                .unwrap_or_default()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.layer,
            r.position.map_or("mean".to_string(), |j| j.to_string()),
            r.norm,
            r.model_norms
                .map(|[b, c]| format!("{b:.1} / {c:.1}"))
                .unwrap_or_default(),
            lens(0, true),
            lens(1, true),
            lens(1, false),
            r.aligned_latents
                .iter()
                .take(3)
                .map(|a| format!("#{} ({:.2})", a.latent, a.cosine))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out.push_str("</table>");
    for p in &summary.patchscope {
        let _ = write!(
            out,
            "<h2>Patchscope, layer {}</h2><p class=\"muted\">The layer's mean difference written, scaled, into the \
             last position of {} identity prompts (times the chat model's mean activation norm, {:.2}); the next \
             token averaged over the prompts. Consistency: mean pairwise overlap of the prompts' top sets.</p>\
             <table><tr><th>scale</th><th>consistency</th><th>tokens</th></tr>",
            p.layer,
            p.readout.spec.prompts.len(),
            p.readout.spec.target_norm
        );
        for (i, s) in p.readout.scales.iter().enumerate() {
            let _ = write!(
                out,
                "<tr{}><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
                if i == p.readout.best {
                    " class=\"best\""
                } else {
                    ""
                },
                s.scale,
                s.consistency,
                tokens(&s.tokens, 10)
            );
        }
        out.push_str("</table>");
    }
    if let Some(s) = &summary.steering {
        let _ = write!(
            out,
            "<h2>Steering, layer {}</h2><p class=\"muted\">The mean difference added at every position while the \
             chat model answers (greedy). Strengths tried: {}. {}</p><table><tr><th>prompt</th><th>unsteered</th>\
             <th>steered</th></tr>",
            s.spec.layer,
            s.tried
                .iter()
                .map(|t| format!("{} ({})", t.strength, if t.coherent { "coherent" } else { "not coherent" }))
                .collect::<Vec<_>>()
                .join(", "),
            match &s.chosen {
                Some(c) => format!("Largest coherent strength: {} x norm.", c.strength),
                None => "No strength above 0 stayed coherent.".into(),
            }
        );
        for (i, prompt) in s.prompts.iter().enumerate() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(prompt),
                escape(&s.unsteered.answers[i]),
                s.chosen
                    .as_ref()
                    .map(|c| escape(&c.answers[i]))
                    .unwrap_or_default()
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</body></html>\n");
    out
}
