//! `steering.html`: one self-contained page (inline CSS, the figure as a base64 `data:` URI, no script):
//! what was edited, the dose-response table and figure, and per prompt the baseline answer beside the
//! intervened answer at each strength, the intervened tokens shaded by their KL (hover for the value).
//! All text from the data is HTML-escaped.

use std::fmt::Write as _;
use std::path::Path;

use figures::html::{base64, display_token, escape};

use crate::error::{Result, SteeringError};
use crate::experiment::{Answer, IntervenedAnswer, SteeringResults};
use crate::measures::MeanCi;
use crate::spec::EditKind;

pub(crate) const CSS: &str = r#"
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:24px auto;max-width:1240px;color:#1d1d1f;line-height:1.45;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:21px;border-bottom:2px solid #e3e3e3;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}th,td{border:1px solid #d8d8d8;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f4f6;text-align:center}td.l{text-align:left}.bad{color:#b42318;font-weight:600}.good{color:#1a7f37}
img{max-width:100%;border:1px solid #e3e3e3;margin:6px 0}.note{font-size:13px;color:#555}
.pair{display:flex;gap:14px;margin:6px 0 14px}.pair>div{flex:1;border:1px solid #e3e3e3;border-radius:4px;padding:6px 10px}
.answer{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px;white-space:pre-wrap}
.t{border-radius:2px}.label{font-size:12px;color:#555;margin-bottom:4px}
details{border:1px solid #e3e3e3;border-radius:4px;margin:8px 0;padding:4px 10px}summary{cursor:pointer;font-weight:600;padding:4px 0}
"#;

fn ci(x: &MeanCi) -> String {
    if x.mean.is_nan() {
        return "n/a".into();
    }
    format!("{:.3} ± {:.3}", x.mean, x.half_width)
}

/// The report of `results`, embedding the figure at `plot`.
pub fn report_html(results: &SteeringResults, plot: &Path) -> Result<String> {
    let png = std::fs::read(plot).map_err(|source| SteeringError::Io {
        path: plot.to_path_buf(),
        source,
    })?;
    let r = results;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>steering: latents {latents:?}</title>\
         <style>{CSS}</style></head><body><h1>Causal test: {kind} latent(s) {latents:?}</h1>\
         <p class=\"note\">base {base}, chat {chat}, edited at {hook} in lockstep (error term kept, raw units; \
         &lt;bos&gt; {bos}); scope {scope:?}; {n} prompt(s), {new} new tokens, greedy.</p>",
        kind = escape(&format!("{:?}", r.spec.kind)),
        latents = r.spec.latents,
        base = escape(&r.models[0]),
        chat = escape(&r.models[1]),
        hook = escape(&r.hook),
        bos = if r.spec.edit_bos { "edited" } else { "not edited" },
        scope = r.spec.scope,
        n = r.prompts.len(),
        new = r.spec.max_new_tokens,
    );
    dose_response(r, &png, &mut h);
    let _ = write!(h, "<h2>Answers</h2>");
    for p in &r.prompts {
        let _ = write!(h, "<details open><summary>{}</summary>", escape(&p.prompt));
        for a in &p.intervened {
            answer_pair(r, &p.baseline, a, &mut h);
        }
        let _ = write!(h, "</details>");
    }
    let _ = write!(h, "</body></html>");
    Ok(h)
}

fn dose_response(r: &SteeringResults, png: &[u8], h: &mut String) {
    let _ = write!(
        h,
        "<h2>Dose-response</h2><p class=\"note\">max activation of each latent on the prompts: {:?}. \
         Baseline NLL {}, distinct-2 {}. Coherent: NLL at most {:.2} nats above the baseline and \
         distinct-2 at most {:.2} below it. Automatic strength: <b>{}</b>.</p>",
        r.max_activation,
        ci(&r.baseline_nll),
        ci(&r.baseline_distinct_2),
        r.spec.coherence.max_nll_increase,
        r.spec.coherence.max_distinct_2_drop,
        r.auto_strength
            .map_or("none (no positive strength is coherent)".into(), |s| s.to_string()),
    );
    let _ = write!(
        h,
        "<table><tr><th>strength</th><th>values</th><th>KL per token</th><th>NLL</th><th>distinct-2</th>"
    );
    for t in &r.spec.targets {
        let _ = write!(h, "<th>Δ log p({})</th>", escape(t));
    }
    let _ = write!(h, "<th>answers changed</th><th>coherent</th></tr>");
    for s in &r.strengths {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            s.strength,
            s.values.as_ref().map_or("-".into(), |v| format!("{v:.3?}")),
            ci(&s.kl),
            ci(&s.nll),
            ci(&s.distinct_2)
        );
        for t in &s.target_logprob_change {
            let _ = write!(h, "<td>{}</td>", ci(t));
        }
        let _ = write!(
            h,
            "<td>{}/{}</td><td class=\"{}\">{}</td></tr>",
            s.changed_answers,
            r.prompts.len(),
            if s.coherent { "good" } else { "bad" },
            if s.coherent { "yes" } else { "no" }
        );
    }
    let _ = write!(
        h,
        "</table><img alt=\"dose-response\" src=\"data:image/png;base64,{}\">",
        base64(png)
    );
}

fn answer_pair(r: &SteeringResults, baseline: &Answer, a: &IntervenedAnswer, h: &mut String) {
    let title = if r.spec.kind.has_strength() {
        format!("strength {}", a.strength)
    } else {
        match r.spec.kind {
            EditKind::Ablate => "ablated".into(),
            _ => "patched into base".into(),
        }
    };
    let max_kl = a.kl_per_token.iter().copied().fold(1e-9f64, f64::max);
    let _ = write!(
        h,
        "<div class=\"pair\"><div><div class=\"label\">chat model (NLL {:.2}, distinct-2 {:.2})</div>\
         <div class=\"answer\">{}</div></div><div><div class=\"label\">{} (mean KL {:.3}, NLL {:.2}, \
         distinct-2 {:.2})</div><div class=\"answer\">",
        baseline.nll,
        baseline.distinct_2,
        tokens_plain(baseline),
        escape(&title),
        a.mean_kl,
        a.answer.nll,
        a.answer.distinct_2,
    );
    for (token, kl) in a.answer.tokens.iter().zip(&a.kl_per_token) {
        let alpha = (kl / max_kl).clamp(0.0, 1.0) * 0.8;
        let _ = write!(
            h,
            "<span class=\"t\" title=\"KL {kl:.4}\" style=\"background:rgba(214,39,40,{alpha:.3})\">{}</span>",
            escape(&display_token(token))
        );
    }
    let _ = write!(h, "</div></div></div>");
}

fn tokens_plain(a: &Answer) -> String {
    a.tokens.iter().map(|t| escape(&display_token(t))).collect()
}
