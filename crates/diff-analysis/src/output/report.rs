//! `report.html`: one self-contained file (inline CSS, figures as base64 `data:` URIs, no script, no
//! network) with the run's facts, the conclusion, per-contrast tables, the figures, the verification
//! table and, for every candidate, every verification prompt with its tokens shaded by the
//! candidate's activation (hover a token for its value). All text from the data is HTML-escaped.

use std::fmt::Write as _;
use std::path::PathBuf;

use persona_dataset::Expectation;

use crate::error::{AnalysisError, Result};
use crate::hunt::ContrastHunt;
use crate::output::plots::expectation_color;
use crate::output::summary::Day1Summary;
use crate::results::{Day1Results, ProbeTokens, TokenRole};

pub use figures::html::{base64, display_token, escape};

const CSS: &str = r#"
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:24px auto;max-width:1240px;color:#1d1d1f;line-height:1.45;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:21px;border-bottom:2px solid #e3e3e3;padding-bottom:4px;margin-top:36px}h3{font-size:17px;margin:22px 0 6px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}th,td{border:1px solid #d8d8d8;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f4f6;text-align:center}td{white-space:nowrap}td.l,table.meta td{white-space:normal}td.l,th.l{text-align:left}table.meta td{text-align:left}
.conclusion{background:#f0f7ff;border-left:5px solid #2f6fde;padding:12px 16px;margin:14px 0;font-size:17px}
.conclusion.none{background:#fff6e8;border-left-color:#d98a00}.detail{font-size:13px;color:#555;margin-top:4px}
.pass{color:#1a7f37;font-weight:600}.fail{color:#b42318;font-weight:600}.muted{color:#777}
.badge{display:inline-block;min-width:66px;text-align:center;border-radius:3px;color:#fff;font-size:11px;padding:1px 4px;margin-right:6px}
img{max-width:100%;border:1px solid #e3e3e3;margin:6px 0}
details{border:1px solid #e3e3e3;border-radius:4px;margin:8px 0;padding:4px 10px}summary{cursor:pointer;font-weight:600;padding:4px 0}
.prompt{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px;margin:3px 0;padding:2px 0;border-bottom:1px dotted #eee;display:flex;align-items:baseline}
.prompt .meta{flex:0 0 215px;font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;font-size:12px}
.prompt .toks{flex:1}.t{white-space:pre-wrap;border-radius:2px;padding:1px 0}
.t.tp{outline:1px dotted #8a8a8a}.t.bos{color:#999}.t.np{opacity:.55}
.scale{display:inline-block;width:180px;height:12px;vertical-align:middle;border:1px solid #ccc}
.note{font-size:13px;color:#555}
"#;

fn fmt(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        }
    } else {
        format!("{x:.digits$}")
    }
}

fn fmt_p(p: f64) -> String {
    if p.is_nan() {
        "–".into()
    } else if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| fmt(v, digits))
}

fn class_name(c: crosscoder::LatentClass) -> &'static str {
    match c {
        crosscoder::LatentClass::Shared => "shared",
        crosscoder::LatentClass::BaseOnly => "base-only",
        crosscoder::LatentClass::ChatOnly => "chat-only",
        crosscoder::LatentClass::Other => "other",
    }
}

fn badge(e: Expectation) -> String {
    let (r, g, b) = expectation_color(e);
    format!(
        "<span class=\"badge\" style=\"background:rgb({r},{g},{b})\">{}</span>",
        e.label()
    )
}

fn meta_table(r: &Day1Results, s: &Day1Summary, out: &mut String) {
    let cc = r.info.crosscoder.as_ref().map_or_else(
        || "none: residual dimensions (the notebook's fallback)".to_string(),
        |c| {
            format!(
                "{} — F = {}, d = {}, {}, code norm {}, input {}",
                c.source,
                c.dict_size,
                c.d_model,
                c.activation,
                c.code_normalization,
                c.input_normalization
            )
        },
    );
    let o = &r.options;
    let rows: Vec<(&str, String)> = vec![
        ("base model (index 0)", r.info.base_model.clone()),
        ("chat model (index 1)", r.info.chat_model.clone()),
        (
            "hook",
            format!(
                "{} (layer {}), d_model {}",
                r.info.hook,
                r.info.layer.map_or("–".into(), |l| l.to_string()),
                r.info.d_model
            ),
        ),
        ("features", r.kind.label()),
        ("crosscoder", cc),
        ("backend", r.info.backend.clone()),
        (
            "dataset",
            format!("{} ({} items)", r.info.dataset, r.plan.dataset_items),
        ),
        (
            "split",
            format!(
                "discovery ratio {}, seed {} ({} discovery items in all)",
                o.discovery_ratio, o.seed, s.n_pairs_analyzed
            ),
        ),
        (
            "tokenization",
            match o.tokenization {
                model_pair::TokenizationMode::Raw => {
                    "raw: <bos> + text, same ids for both models".into()
                }
                model_pair::TokenizationMode::ChatTemplate => {
                    "Gemma chat template for both models".into()
                }
            },
        ),
        (
            "pooling",
            format!("{}: {}", o.pooling.name(), o.pooling.description()),
        ),
        ("statistics", s.statistics.test.clone()),
        (
            "multiple testing",
            format!(
                "{} at FDR {}; {}",
                s.statistics.multiple_testing, o.hunt.fdr, s.statistics.tested
            ),
        ),
        (
            "ranking",
            format!("{} (top_k = {})", s.statistics.ranking, o.hunt.top_k),
        ),
        (
            "verification",
            format!(
                "threshold: {}; passes when AUROC ≥ {} and balanced accuracy ≥ {}",
                s.statistics.threshold_rule, o.criteria.min_auroc, o.criteria.min_balanced_accuracy
            ),
        ),
        (
            "time",
            format!(
                "{:.1} s (runs {:.1} s, statistics {:.1} s, verification {:.1} s)",
                r.timings.total_s,
                r.timings.discovery_runs_s,
                r.timings.statistics_s,
                r.timings.verification_s
            ),
        ),
    ];
    out.push_str("<table class=\"meta\">");
    for (k, v) in rows {
        let _ = write!(
            out,
            "<tr><th class=\"l\">{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    }
    out.push_str("</table>");
}

fn conclusion(r: &Day1Results, out: &mut String) {
    use crate::verify::ConclusionStatus;
    for p in &r.conclusion.per_probe {
        let class = if p.status == ConclusionStatus::Found {
            "conclusion"
        } else {
            "conclusion none"
        };
        let _ = write!(
            out,
            "<div class=\"{class}\"><div><b>Probe <code>{}</code>:</b> {}</div><div class=\"detail\">{}</div></div>",
            escape(&p.probe),
            escape(&p.sentence),
            escape(&p.details)
        );
    }
    if r.conclusion.per_probe.is_empty() {
        let _ = write!(
            out,
            "<div class=\"conclusion none\">{}</div>",
            escape(&r.conclusion.sentence)
        );
    }
}

fn contrast_section(
    r: &Day1Results,
    c: usize,
    h: &ContrastHunt,
    s: &Day1Summary,
    out: &mut String,
) {
    let cs = &s.contrasts[c];
    let noun = r.kind.noun();
    let _ = write!(
        out,
        "<h3>{} — {} vs {}</h3><p class=\"note\">{} discovery items, {} held-out items; {} of {} features tested (active anywhere); \
         <b>{} significant</b> at FDR {} ({} more active on <i>{}</i>, {} on <i>{}</i>). Permutation test: {}; smallest attainable p {}, \
         first BH cut {}.</p>",
        escape(&h.contrast.category),
        escape(&h.contrast.positive),
        escape(&h.contrast.negative),
        cs.discovery_items.len(),
        cs.held_out_items.len(),
        cs.n_tested,
        cs.n_features,
        cs.n_significant,
        h.options.fdr,
        cs.n_significant_positive,
        escape(&h.contrast.positive),
        cs.n_significant_negative,
        escape(&h.contrast.negative),
        if cs.permutation.exact {
            "exact (all sign patterns)".to_string()
        } else {
            format!("Monte Carlo, up to {} patterns", cs.permutation.options.max_resamples)
        },
        fmt_p(cs.permutation.p_floor),
        fmt_p(cs.permutation.first_bh_cut),
    );
    if !cs.permutation.resolvable {
        let _ = write!(
            out,
            "<p class=\"fail\">Underpowered: with {} discovery items the smallest attainable p-value ({}) is above the first \
             Benjamini-Hochberg cut ({}), so no feature of this contrast can be significant. Use more items (raise the discovery \
             ratio or add items).</p>",
            cs.discovery_items.len(),
            fmt_p(cs.permutation.p_floor),
            fmt_p(cs.permutation.first_bh_cut)
        );
    }
    if h.candidates.is_empty() {
        let _ = write!(
            out,
            "<p class=\"muted\">No significant {} with a positive effect: no candidate from this contrast.</p>",
            noun.to_lowercase()
        );
    } else {
        out.push_str(
            "<table><tr><th>rank</th><th>feature</th><th>decoder</th><th>rel. norm</th><th>cos</th><th>ν_ε</th><th>ν_r</th><th>robust</th><th>mean diff</th><th>sd</th>\
             <th>d_z</th><th>sign frac.</th><th>mean pos.</th><th>mean neg.</th><th>p</th><th>q</th><th>held-out d_z</th>\
             <th>held-out p</th><th>AUROC</th><th>bal. acc.</th><th>verified</th></tr>",
        );
        for f in &cs.candidates {
            let v = f.verification.as_ref();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>#{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.rank,
                f.feature_idx,
                f.decoder_class.map_or("–", class_name),
                opt(f.relative_norm.map(f64::from), 2),
                opt(f.cosine_similarity.map(f64::from), 2),
                opt(f.nu_error.map(f64::from), 2),
                opt(f.nu_reconstruction.map(f64::from), 2),
                f.robust_chat_only.map_or("–", |r| if r { "yes" } else { "no" }),
                fmt(f.mean_score, 3),
                opt(f.std_score, 3),
                opt(f.effect_size, 2),
                fmt(f.sign_fraction, 2),
                fmt(f.mean_positive, 3),
                fmt(f.mean_negative, 3),
                fmt_p(f.p_value),
                fmt_p(f.q_value),
                opt(f.held_out.as_ref().and_then(|x| x.effect_size), 2),
                f.held_out.as_ref().map_or("–".into(), |x| fmt_p(x.p_value)),
                opt(v.and_then(|v| v.auroc), 2),
                opt(v.and_then(|v| v.balanced_accuracy), 2),
                match v {
                    Some(v) if v.passed => "<span class=\"pass\">passed</span>",
                    Some(_) => "<span class=\"fail\">failed</span>",
                    None => "–",
                }
            );
        }
        out.push_str("</table>");
    }
    // The notebook's ranking for comparison.
    let _ = write!(
        out,
        "<details><summary>The notebook's ranking on the same differences (top-{} per item, seen in ≥ 2 items, by mean score)</summary>\
         <p class=\"note\">The notebook keeps a feature when it is among the {} largest differences of at least two items and sorts by \
         the mean of those differences only; its std is the population sd of those values. The last columns show what the \
         paired test over all items says about the same feature.</p><table><tr><th>#</th><th>feature</th><th>mean_score</th><th>std_score</th>\
         <th>n_pairs</th><th>d_z (all items)</th><th>q</th><th>significant</th></tr>",
        h.options.notebook_top_n, h.options.notebook_top_n
    );
    for (i, e) in h.notebook.iter().take(10).enumerate() {
        let st = h.stats_of(e.feature_idx);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            e.feature_idx,
            fmt(e.mean_score, 3),
            fmt(e.std_score, 3),
            e.n_pairs,
            st.map_or("–".into(), |s| fmt(s.summary.effect_size, 2)),
            st.map_or("–".into(), |s| fmt_p(s.q_value)),
            st.map_or("–", |s| if s.significant { "yes" } else { "no" }),
        );
    }
    if h.notebook.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted l\">no feature appeared in the top list of two items</td></tr>");
    }
    out.push_str("</table></details>");
}

/// The causal tests (`day1 --causal`): per probe, the ablation and the activation of its latent.
fn causal_section(r: &Day1Results, out: &mut String) {
    if r.causal.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Causal tests</h2><p class=\"note\">The latent edited in the chat stream at the hook, in lockstep \
         with the base model (error term kept): clamped to 0 on the prompts where it fires, and to twice its largest \
         activation there on the prompts where it is silent. KL(p<sub>chat</sub> || p<sub>edited</sub>) per \
         answer token (mean ± 95% interval), answers changed, and each target's probability before -> after. \
         Full results: <code>causal/</code>.</p><table><tr><th class=\"l\">probe</th><th>latent</th>\
         <th class=\"l\">edit</th><th>on</th><th>KL per token</th><th>answers changed</th>\
         <th class=\"l\">targets</th><th>coherent</th></tr>",
    );
    for e in &r.causal {
        for effect in [&e.ablation, &e.activation] {
            let targets: Vec<String> = effect
                .targets
                .iter()
                .map(|t| {
                    format!(
                        "{}: {:.3} -> {:.3}",
                        escape(t.target.trim()),
                        t.before,
                        t.after
                    )
                })
                .collect();
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td>#{}</td><td class=\"l\">{}</td><td>{}</td><td>{} ± {}</td>\
                 <td>{}/{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
                escape(&e.probe),
                e.latent,
                escape(&effect.edit),
                badge(effect.on),
                fmt(effect.kl.mean, 4),
                fmt(effect.kl.half_width, 4),
                effect.changed_answers,
                effect.prompts,
                targets.join("<br>"),
                if effect.coherent { "yes" } else { "no" }
            );
        }
    }
    out.push_str("</table>");
    kl_evaluation_table(r, out);
    behaviour_table(r, out);
}

/// Sycophancy as behaviour: the forced choice with the sycophancy latent ablated, and its control.
fn behaviour_table(r: &Day1Results, out: &mut String) {
    let Some(b) = &r.behaviour else {
        return;
    };
    let _ = write!(
        out,
        "<h3>Sycophancy as behaviour</h3><p>{}.</p><p class=\"note\">Forced choice over {} false-belief items \
         after the chat template: log p(agree) - log p(correct), each summed over its answer's tokens (unedited: \
         {} ± {} nats). Paired change per item: mean, 95% t interval, two-sided sign-flip p. Full results, free \
         answers and the judge's words in <code>causal/sycophancy_preference/preference.html</code>.</p>\
         <table><tr><th class=\"l\">edit</th><th>mean change</th><th>95% CI</th><th>p</th><th>n</th></tr>",
        escape(&b.sentence()),
        b.items.len(),
        fmt(b.baseline_preference.mean, 3),
        fmt(b.baseline_preference.half_width, 3),
    );
    let row = |name: &str, s: &steering::PairedStats| {
        format!(
            "<tr><td class=\"l\">{}</td><td>{:+.3}</td><td>[{:.3}, {:.3}]</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            s.mean,
            s.ci_low,
            s.ci_high,
            steering::format_p(s.p_value),
            s.n
        )
    };
    out.push_str(&row(&b.edit, &b.change));
    for draw in &b.controls {
        let names: Vec<String> = draw
            .latents
            .iter()
            .map(|c| format!("#{}", c.latent))
            .collect();
        out.push_str(&row(
            &format!("matched random latent {}", names.join(", ")),
            &draw.change,
        ));
    }
    out.push_str("</table>");
    if let Some([Some(base), Some(edited), _]) = &b.free_verdicts {
        let _ = write!(
            out,
            "<p class=\"note\">Free answers judged agreeing / correcting / unclear: unedited {}/{}/{}, edited {}/{}/{}.</p>",
            base.agree, base.correct, base.unclear, edited.agree, edited.correct, edited.unclear
        );
    }
}

/// The KL evaluation of the concluded latents (science-of-finetuning's half-step patch).
fn kl_evaluation_table(r: &Day1Results, out: &mut String) {
    let Some(kl) = &r.kl_evaluation else {
        return;
    };
    let _ = write!(
        out,
        "<h3>KL evaluation</h3><p class=\"note\">The chat model's layers after {} fed a patched residual, on {} \
         conversations (each activating prompt with the chat model's own answer), {} assistant predictions. \
         KL(p<sub>chat</sub> || p<sub>patched</sub>) per token (mean ± 95% interval) over all of them, over \
         the first {} of each answer and over the rest; <i>gap</i> is the fraction of the base->chat gap \
         (the <code>base</code> row) closed. <code>chosen</code> adds the concluded latents' chat-minus-base \
         contribution (#{}) to the base residual, <code>random_seed_*</code> as many random latents, \
         <code>all_latents</code> every latent; <code>chat_error</code> takes every latent's contribution \
         out of the chat residual.</p><table><tr><th class=\"l\">set-up</th><th>KL</th><th>KL first {}</th>\
         <th>KL later</th><th>NLL</th><th>gap</th></tr>",
        escape(&kl.hook),
        kl.conversations,
        kl.predictions[0],
        kl.spec.k_first,
        kl.spec
            .latents
            .iter()
            .map(|j| j.to_string())
            .collect::<Vec<_>>()
            .join(", #"),
        kl.spec.k_first
    );
    let ci = |m: &steering::MeanCi| format!("{} ± {}", fmt(m.mean, 4), fmt(m.half_width, 4));
    for s in &kl.setups {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.setup.name),
            ci(&s.kl),
            ci(&s.kl_k_first),
            ci(&s.kl_post_k_first),
            fmt(s.nll.mean, 3),
            if s.gap_closed.is_finite() {
                format!("{:.1}%", 100.0 * s.gap_closed + 0.0)
            } else {
                "n/a".into()
            }
        );
    }
    out.push_str("</table>");
}

fn figures(paths: &[PathBuf], out: &mut String) -> Result<()> {
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| AnalysisError::io(p, e))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption class=\"note\">{}</figcaption></figure>",
            escape(&name),
            base64(&bytes),
            escape(&name)
        );
    }
    Ok(())
}

fn verification_table(r: &Day1Results, out: &mut String) {
    if r.verifications.is_empty() {
        out.push_str("<p class=\"muted\">No candidate to verify.</p>");
        return;
    }
    out.push_str(
        "<table><tr><th class=\"l\">contrast</th><th class=\"l\">probe</th><th>feature</th><th>threshold</th><th>AUROC</th>\
         <th>ACTIVATE above</th><th>SILENT at/below</th><th>mean ACTIVATE</th><th>mean SILENT</th><th>mean NEUTRAL</th><th>verdict</th></tr>",
    );
    for v in &r.verifications {
        let count = |e: Expectation| {
            let all = v.prompts.iter().filter(|p| p.expected == e).count();
            let ok = v
                .prompts
                .iter()
                .filter(|p| p.expected == e && p.passed == Some(true))
                .count();
            format!("{ok}/{all}")
        };
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&v.contrast),
            escape(&v.probe),
            v.feature,
            fmt(v.threshold, 3),
            opt(v.auroc, 2),
            count(Expectation::Activate),
            count(Expectation::Silent),
            opt(v.mean_activate, 3),
            opt(v.mean_silent, 3),
            opt(v.mean_neutral, 3),
            if v.passed { "<span class=\"pass\">passed</span>" } else { "<span class=\"fail\">failed</span>" }
        );
    }
    out.push_str("</table>");
    confound_table(r, out);
}

/// The confound probe sets of every verified candidate that has them.
fn confound_table(r: &Day1Results, out: &mut String) {
    let with: Vec<_> = r
        .verifications
        .iter()
        .filter(|v| !v.confounds.is_empty())
        .collect();
    if with.is_empty() {
        return;
    }
    out.push_str(
        "<h3>Confound probes</h3><p class=\"note\">A user model or a word detector? Each set at the candidate's \
         discovery threshold, kept out of the verdict above: prompts on the expected side, mean activation, and the \
         AUROC of the set against the direct prompts of the opposite expectation (0.5: the latent cannot tell them \
         apart).</p><table><tr><th class=\"l\">candidate</th><th class=\"l\">set</th><th>expected</th><th>on the expected side</th>\
         <th>mean a</th><th>AUROC vs direct</th><th class=\"l\">verdict</th></tr>",
    );
    for v in with {
        let verdict = v
            .confound_verdict
            .and_then(|d| serde_json::to_value(d).ok())
            .and_then(|d| d.as_str().map(str::to_string))
            .unwrap_or_default()
            .replace('_', " ");
        for (i, c) in v.confounds.iter().enumerate() {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}/{}</td><td>{:.3}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                if i == 0 { format!("#{} ({})", v.feature, escape(&v.contrast)) } else { String::new() },
                escape(&c.set),
                c.expected.label(),
                if c.ok { format!("<span class=\"pass\">{}</span>", c.passed) } else { format!("<span class=\"fail\">{}</span>", c.passed) },
                c.n,
                c.mean_activation,
                c.auroc_vs_direct.map_or("n/a".into(), |a| format!("{a:.2}")),
                if i == 0 { escape(&verdict) } else { String::new() }
            );
        }
    }
    out.push_str("</table>");
}

fn token_views(r: &Day1Results, pt: &ProbeTokens, out: &mut String) {
    let mut first = true;
    for v in r.verifications.iter().filter(|v| v.probe == pt.probe) {
        let Some(col) = pt.column(v.feature) else {
            continue;
        };
        // The colour scale ignores BOS (an attention sink whose values dwarf the rest); it saturates.
        let scale = pt
            .prompts
            .iter()
            .flat_map(|p| {
                p.values[col]
                    .iter()
                    .zip(&p.roles)
                    .filter(|(_, r)| **r != TokenRole::Bos)
                    .map(|(v, _)| v.abs())
            })
            .fold(0f32, f32::max)
            .max(1e-12);
        let verdict = if v.passed {
            "<span class=\"pass\">passed</span>"
        } else {
            "<span class=\"fail\">failed</span>"
        };
        let _ = write!(
            out,
            "<details{}><summary>{} #{} ({}) on probe <code>{}</code> — AUROC {}, {verdict}</summary>\
             <p class=\"note\">Token shading: activation of {} #{} on each token, from 0 (white) to {} (full colour{}); \
             hover a token for its value (BOS is left out of the scale and saturates). <span class=\"t tp\">dotted</span> = chat-template token, <span class=\"t bos\">grey</span> = BOS, \
             faded = not pooled. Left: expectation, pooled activation a (threshold {}), pass/fail.</p>\
             <p><span class=\"scale\" style=\"background:linear-gradient(90deg,#fff,rgb(230,97,0))\"></span> 0 … {}</p>",
            if first { " open" } else { "" },
            r.kind.noun(),
            v.feature,
            escape(&v.contrast),
            escape(&v.probe),
            opt(v.auroc, 2),
            r.kind.noun(),
            v.feature,
            fmt(f64::from(scale), 3),
            if r.info.crosscoder.is_some() { "" } else { "; negative values in blue" },
            fmt(v.threshold, 3),
            fmt(f64::from(scale), 3),
        );
        first = false;
        for (p, res) in pt.prompts.iter().zip(&v.prompts) {
            let mark = match res.passed {
                Some(true) => "<span class=\"pass\">✓</span>",
                Some(false) => "<span class=\"fail\">✗</span>",
                None => "<span class=\"muted\">·</span>",
            };
            let _ = write!(
                out,
                "<div class=\"prompt\"><div class=\"meta\">{}a = {} {mark}</div><div class=\"toks\">",
                badge(p.expected),
                fmt(res.activation, 3)
            );
            for (k, tok) in p.tokens.iter().enumerate() {
                let a = p.values[col][k];
                let alpha = (a.abs() / scale).clamp(0.0, 1.0);
                let rgb = if a >= 0.0 { "230,97,0" } else { "49,99,206" };
                let mut classes = String::from("t");
                match p.roles[k] {
                    TokenRole::Bos => classes.push_str(" bos"),
                    TokenRole::Template => classes.push_str(" tp"),
                    TokenRole::Content | TokenRole::Assistant => {}
                }
                if !p.pooled[k] {
                    classes.push_str(" np");
                }
                let shade = if alpha >= 0.005 {
                    format!(" style=\"background:rgba({rgb},{alpha:.2})\"")
                } else {
                    String::new()
                };
                let _ = write!(
                    out,
                    "<span class=\"{classes}\"{shade} title=\"a = {a:.3}\">{}</span>",
                    escape(&display_token(tok))
                );
            }
            out.push_str("</div></div>");
        }
        out.push_str("</details>");
    }
}

/// Renders the report of `r` (`summary` as written, `figures` as drawn).
///
/// # Errors
/// [`AnalysisError::Io`] when a figure cannot be read back.
pub(crate) fn render(
    r: &Day1Results,
    summary: &Day1Summary,
    figure_paths: &[PathBuf],
    companions: &crate::output::companions::Companions,
) -> Result<String> {
    let mut out = String::with_capacity(1 << 20);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Day 1 model diffing: {} vs {}</title><style>{CSS}{}{}</style></head><body>\
         <h1>Day 1: what chat training added</h1><p class=\"note\">{} (base) vs {} (chat), {} — {}</p>",
        escape(&r.info.base_model),
        escape(&r.info.chat_model),
        latent_dashboard::DASHBOARD_CSS,
        crate::output::companions::css(),
        escape(&r.info.base_model),
        escape(&r.info.chat_model),
        escape(&r.info.hook),
        escape(&r.kind.label()),
    );
    out.push_str("<h2>Conclusion</h2>");
    conclusion(r, &mut out);
    causal_section(r, &mut out);
    out.push_str("<h2>Run</h2>");
    meta_table(r, summary, &mut out);
    out.push_str(&format!(
        "<h2>The hunt</h2><p class=\"note\">Per item, the pooled activation on the positive variant minus that on the negative variant; \
         per feature, the paired statistics over items; Benjamini-Hochberg over the tested features. Candidates: significant features \
         more active on the positive variant{}, by effect size d_z. Held-out columns replicate the candidates on the items kept out of \
         discovery (uncorrected).</p>",
        if r.options.hunt.chat_only_candidates && r.decoder.is_some() {
            " whose crosscoder decoder class is chat-only (what chat training added; every class is tested and counted)"
        } else {
            ""
        }
    ));
    for (c, h) in r.hunts.iter().enumerate() {
        contrast_section(r, c, h, summary, &mut out);
    }
    out.push_str("<h2>Figures</h2>");
    figures(figure_paths, &mut out)?;
    out.push_str("<h2>Verification</h2><p class=\"note\">Held-out verification prompts through BOTH models and the crosscoder (the notebook fed \
                  zeros as the base half). Threshold fitted on the discovery set; AUROC of ACTIVATE vs SILENT.</p>");
    verification_table(r, &mut out);
    out.push_str("<h2>Tokens</h2>");
    if r.tokens.is_empty() {
        out.push_str(
            "<p class=\"muted\">No candidate was verified, so there are no token views.</p>",
        );
    }
    for pt in &r.tokens {
        let _ = write!(out, "<h3>Probe <code>{}</code></h3>", escape(&pt.probe));
        token_views(r, pt, &mut out);
    }
    crate::output::companions::report_sections(r, companions, &mut out)?;
    if !r.dashboards.is_empty() {
        out.push_str(
            "<h2>Latent dashboards</h2><p class=\"note\">Every candidate latent over its probe's verification prompts \
             (both models, the crosscoder): the contexts where it fires most (one per prompt) and samples from each \
             activation interval, shaded by activation (hover for the value, the peak outlined); its histogram and \
             density; the share of its activation on user, assistant, chat-template and &lt;bos&gt; tokens; and, \
             when the models kept their unembedding, the tokens each model's decoder vector promotes and suppresses \
             through that model's final norm and unembedding. Data in dashboards.json; over a whole corpus or store \
             use the <code>inspect</code> example.</p>",
        );
        for d in &r.dashboards {
            out.push_str(&latent_dashboard::dashboard_section(d));
        }
    }
    let _ = write!(
        out,
        "<p class=\"note\">Generated by diff-analysis {}; data in day1_summary.json (schema {} v{}).</p></body></html>",
        env!("CARGO_PKG_VERSION"),
        crate::output::summary::SCHEMA_NAME,
        crate::output::summary::SCHEMA_VERSION
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
