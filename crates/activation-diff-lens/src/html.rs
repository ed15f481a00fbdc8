//! `adl.html`: one self-contained page (inline CSS, no script, nothing fetched) with what the activation
//! difference says: per layer and position its norm, both models' lens tokens and the latents it aligns
//! with; the Patchscope per scale; the steered and unsteered answers side by side.

use std::fmt::Write;

use crate::analysis::DifferenceReading;
use crate::output::{AdlSummary, SteeringSummary};
use crate::read::LensEntry;

/// The page file.
pub const HTML_FILE: &str = "adl.html";

/// The page's CSS; every class is prefixed `adl-`, so that another report can embed
/// [`adl_sections`] with this CSS beside its own.
pub const ADL_CSS: &str = "table.adl{border-collapse:collapse;font-size:12px;margin:8px 0}table.adl td,table.adl th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
table.adl th{background:#f6f6f6}.adl-tok{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f3f3f3;padding:0 3px;margin:1px;display:inline-block}\
.adl-note{color:#888}.adl-best{background:#fff4e0}";

const PAGE_CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;max-width:1200px;color:#222}";

use figures::html::escape;

fn tokens(entries: &[LensEntry], n: usize) -> String {
    entries
        .iter()
        .take(n)
        .map(|e| {
            format!(
                "<span class=\"adl-tok\" title=\"logit {:.3}, p {:.4}\">{}</span>",
                e.logit,
                e.probability,
                escape(&e.token.replace('▁', " ").replace('\n', "↵"))
            )
        })
        .collect()
}

/// Renders `summary` as a page, with the PNGs given (`(caption, bytes)`) embedded as `data:` URIs.
pub fn adl_page(summary: &AdlSummary, figures: &[(String, Vec<u8>)]) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Activation Difference Lens</title>\
         <style>{PAGE_CSS}{ADL_CSS}</style></head><body><h1>Activation Difference Lens</h1>{}</body></html>\n",
        adl_sections(summary, figures)
    )
}

/// The page's content without the page around it (for another report; style it with [`ADL_CSS`]):
/// the models, whether anything was found, the figures, one section per flavour, the steering.
pub fn adl_sections(summary: &AdlSummary, figures: &[(String, Vec<u8>)]) -> String {
    let mut out = format!(
        "<p class=\"adl-note\">{} (base) vs {} (chat), layers {:?}, k = {}. Hover a token for its logit and \
         probability.</p>",
        escape(&summary.models[0]),
        escape(&summary.models[1]),
        summary.layers,
        summary.k
    );
    if !summary.found {
        let _ = write!(
            out,
            "<p class=\"adl-best\"><b>No difference found</b>: every difference is below {} of the chat model's \
             activation norm (float noise); nothing is read from it.</p>",
            crate::NEGLIGIBLE_RELATIVE_NORM
        );
    }
    for (caption, png) in figures {
        let _ = write!(
            out,
            "<figure><img alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption class=\"adl-note\">{0}</figcaption></figure>",
            escape(caption),
            figures::html::base64(png)
        );
    }
    if let Some(corpus) = &summary.corpus {
        let _ = write!(
            out,
            "<h2>Over the corpus</h2><p class=\"adl-note\">{} texts of {} ({} too short); the mean chat-minus-base \
             residual at the first {} positions after &lt;bos&gt;.</p>",
            corpus.texts,
            escape(&corpus.source),
            corpus.skipped,
            summary.k
        );
        reading_section(&mut out, &corpus.reading, "position");
    }
    for c in &summary.contrasts {
        let _ = write!(
            out,
            "<h2>Contrast {}: {} minus {}</h2><p class=\"adl-note\">{} pairs ({} without a cue to align on); per position \
             from the first token where the two sides differ, the chat-minus-base difference on the {} side minus \
             the same on the {} side (pairs per position: {:?}). First pairs, aligned: {}</p>",
            escape(&c.category),
            escape(&c.sides[0]),
            escape(&c.sides[1]),
            c.pairs,
            c.skipped,
            escape(&c.sides[0]),
            escape(&c.sides[1]),
            c.counts,
            c.examples
                .iter()
                .map(|[p, n]| format!("{} / {}", words(p), words(n)))
                .collect::<Vec<_>>()
                .join("; ")
        );
        reading_section(&mut out, &c.reading, "from the cue");
    }
    if let Some(s) = &summary.steering {
        steering_section(&mut out, s);
    }
    out
}

fn words(tokens: &[String]) -> String {
    format!(
        "<span class=\"adl-tok\">{}</span>",
        escape(&tokens.concat().replace('▁', " ").replace('\n', "↵"))
    )
}

fn reading_section(out: &mut String, reading: &DifferenceReading, position: &str) {
    let _ = write!(
        out,
        "<table class=\"adl\"><tr><th>layer</th><th>{position}</th><th>|delta|</th><th>|delta| / |h|</th>\
         <th>|h| base / chat</th><th>base head promotes</th><th>chat head promotes</th><th>chat head suppresses</th>\
         <th>aligned latents</th></tr>"
    );
    for r in &reading.readings {
        let lens = |i: usize, promoted: bool| {
            r.lens
                .get(i)
                .map(|l| tokens(if promoted { &l.promoted } else { &l.suppressed }, 8))
                .unwrap_or_else(|| {
                    if r.negligible {
                        "<span class=\"adl-note\">negligible</span>".into()
                    } else {
                        String::new()
                    }
                })
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.layer,
            r.position.map_or("mean".to_string(), |j| j.to_string()),
            r.norm,
            r.relative_norm,
            r.model_norms
                .map(|[b, c]| format!("{b:.1} / {c:.1}"))
                .unwrap_or_default(),
            lens(0, true),
            lens(1, true),
            lens(1, false),
            r.aligned_latents
                .iter()
                .take(3)
                .map(|a| format!(
                    "<span title=\"|d_chat - d_base| {:.3}, relative decoder norm {:.2}\">#{} ({:.2}{})</span>",
                    a.difference_norm,
                    a.relative_norm,
                    a.latent,
                    a.cosine,
                    if a.relative_norm >= 0.9 { ", chat-only" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out.push_str("</table>");
    for p in &reading.patchscope {
        let _ = write!(
            out,
            "<h3>Patchscope, layer {}</h3><p class=\"adl-note\">The layer's mean difference written, scaled, into the \
             last position of {} identity prompts (times the chat model's mean activation norm, {:.2}); the next \
             token averaged over the prompts. Consistency: mean pairwise overlap of the prompts' top sets.</p>\
             <table class=\"adl\"><tr><th>scale</th><th>consistency</th><th>tokens</th></tr>",
            p.layer,
            p.readout.spec.prompts.len(),
            p.readout.spec.target_norm
        );
        for (i, s) in p.readout.scales.iter().enumerate() {
            let _ = write!(
                out,
                "<tr{}><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
                if i == p.readout.best {
                    " class=\"adl-best\""
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
}

fn steering_section(out: &mut String, s: &SteeringSummary) {
    let search = &s.search;
    let _ = write!(
        out,
        "<h2>Steering with the {} mean, layer {}</h2><p class=\"adl-note\">The mean difference added at every position \
         while the chat model answers (greedy). Strengths tried: {}. {}</p><table class=\"adl\"><tr><th>prompt</th><th>unsteered</th>\
         <th>steered</th></tr>",
        escape(&s.vector),
        search.spec.layer,
        search
            .tried
            .iter()
            .map(|t| format!("{} ({})", t.strength, if t.coherent { "coherent" } else { "not coherent" }))
            .collect::<Vec<_>>()
            .join(", "),
        match &search.chosen {
            Some(c) => format!("Largest coherent strength: {} x norm.", c.strength),
            None => "No strength above 0 stayed coherent.".into(),
        }
    );
    for (i, prompt) in search.prompts.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(prompt),
            escape(&search.unsteered.answers[i]),
            search
                .chosen
                .as_ref()
                .map(|c| escape(&c.answers[i]))
                .unwrap_or_default()
        );
    }
    out.push_str("</table>");
}
