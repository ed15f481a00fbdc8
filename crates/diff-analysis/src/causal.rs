//! `day1 --causal`: the causal test of each verified latent, on its own verification prompts.
//!
//! For the latent the conclusion names for a probe, two edits run in lockstep (the `steering` crate):
//! - **ablation**: clamp it to 0 on the prompts where it should fire (ACTIVATE), and see the answers move;
//! - **activation**: clamp it to twice its largest activation on those prompts
//!   ([`CausalOptions::activation_multiple`]), on the prompts where it should be silent (SILENT), and see
//!   them move the other way.
//!
//! Each gives the mean `KL(p_chat || p_edited)` per answer token with its 95% interval, the answers that
//! changed, and for each target string the mean `p(target | prompt)` before and after. The evidence is added
//! to the results ([`Day1Results::causal`]), the summary, the report and the sentence.

use gemma_model::ChatMessage;
use persona_dataset::Expectation;
use serde::Serialize;
use steering::{
    max_activations, run_kl_evaluation, run_steering, EditKind, KlEvaluation, KlEvaluationSpec,
    MeanCi, SteeringModels, SteeringResults, SteeringSpec, StrengthUnit,
};

use crate::error::{AnalysisError, Result};
use crate::results::Day1Results;
use crate::verify::{CandidateVerification, ConclusionStatus};

/// How the causal tests run.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalOptions {
    /// Strings whose probability as the answer is compared (e.g. `" simple"`, `" rigorous"`).
    pub targets: Vec<String>,
    /// New tokens per answer (greedy).
    pub max_new_tokens: usize,
    /// At most this many prompts per side.
    pub max_prompts: usize,
    /// Wrap prompts in the chat template (as the hunt did when it used it).
    pub chat_template: bool,
    /// Prompts per generation batch.
    pub batch_size: usize,
    /// The activation edit clamps the latent to this multiple of its largest activation on the
    /// ACTIVATE prompts. Above 1 by default: an L1 crosscoder's latents shrink (the reconstruction
    /// keeps about half of a feature, the rest stays in the error), so the largest latent value
    /// writes less than the model itself does on those prompts.
    pub activation_multiple: f32,
}

impl Default for CausalOptions {
    fn default() -> Self {
        CausalOptions {
            targets: Vec::new(),
            max_new_tokens: 16,
            max_prompts: 16,
            chat_template: false,
            batch_size: 8,
            activation_multiple: 2.0,
        }
    }
}

/// How one target string's probability moved, averaged over prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetShift {
    /// The string.
    pub target: String,
    /// Mean `p(target | prompt)` under the unedited chat model.
    pub before: f64,
    /// The same with the edit.
    pub after: f64,
}

/// One edit's effect on a set of prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalEffect {
    /// What was done (`clamp to 0`, `clamp to 1.364`).
    pub edit: String,
    /// The prompts' expectation (`ACTIVATE` or `SILENT`).
    #[serde(serialize_with = "crate::verify::label")]
    pub on: Expectation,
    /// How many prompts.
    pub prompts: usize,
    /// Mean KL per answer token, across prompts.
    pub kl: MeanCi,
    /// Answers that differ from the unedited ones.
    pub changed_answers: usize,
    /// Per target.
    pub targets: Vec<TargetShift>,
    /// Whether the edited answers stay coherent (NLL and distinct-2 within the default criteria).
    pub coherent: bool,
}

/// The causal evidence for one probe's latent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalEvidence {
    /// The probe.
    pub probe: String,
    /// The contrast the latent came from.
    pub contrast: String,
    /// The latent.
    pub latent: usize,
    /// Its largest activation on the ACTIVATE prompts.
    pub max_activation: f32,
    /// The value `activation` clamps it to (`activation_multiple` times `max_activation`).
    pub clamp_value: f32,
    /// Clamped to 0 where it should fire.
    pub ablation: CausalEffect,
    /// Clamped to `max_activation` where it should be silent.
    pub activation: CausalEffect,
}

impl CausalEvidence {
    /// The clause the sentence gains: "... and clamping it to 0 on its ACTIVATE prompts changes the
    /// answers (KL ...; p(...) a -> b), while clamping it to ... on SILENT prompts ...".
    pub fn clause(&self) -> String {
        let effect = |e: &CausalEffect| {
            let mut s = format!(
                "KL {:.3} ± {:.3} per token, {}/{} answers changed",
                e.kl.mean, e.kl.half_width, e.changed_answers, e.prompts
            );
            if !e.targets.is_empty() {
                let names: Vec<&str> = e.targets.iter().map(|t| t.target.trim()).collect();
                let before: f64 = e.targets.iter().map(|t| t.before).sum();
                let after: f64 = e.targets.iter().map(|t| t.after).sum();
                s.push_str(&format!(
                    "; p({}) {before:.3} -> {after:.3}",
                    names.join(", ")
                ));
            }
            s
        };
        format!(
            "; causally, clamping latent #{} to 0 on its activating prompts changes the answers ({}), and \
             clamping it to {:.3} on silent prompts does ({})",
            self.latent,
            effect(&self.ablation),
            self.clamp_value,
            effect(&self.activation)
        )
    }
}

/// Runs the causal tests of every probe whose conclusion names a crosscoder latent, adds them to
/// `results` (evidence, sentences), and returns the full steering results (for `steering.json` files),
/// two per probe: ablation then activation.
pub fn run_causal_tests(
    results: &mut Day1Results,
    models: &SteeringModels<'_>,
    options: &CausalOptions,
    progress: bool,
) -> Result<Vec<(String, SteeringResults)>> {
    if results.info.crosscoder.is_none() {
        return Err(AnalysisError::option(
            "--causal",
            "needs a crosscoder: the causal test edits a crosscoder latent".to_string(),
        ));
    }
    let mut written = Vec::new();
    let mut evidence = Vec::new();
    for pc in &results.conclusion.per_probe {
        let (Some(latent), Some(contrast)) = (pc.feature, pc.contrast.as_deref()) else {
            continue;
        };
        if pc.status != ConclusionStatus::Found {
            continue;
        }
        let Some(v) = results.verification(contrast, latent) else {
            continue;
        };
        let (found, runs) = causal_test(v, latent, models, options, progress)?;
        written.push((format!("{}_ablate", v.probe), runs[0].clone()));
        written.push((format!("{}_activate", v.probe), runs[1].clone()));
        evidence.push(found);
    }
    for e in &evidence {
        if let Some(pc) = results
            .conclusion
            .per_probe
            .iter_mut()
            .find(|pc| pc.probe == e.probe)
        {
            let had_headline = results.conclusion.sentence.starts_with(&pc.sentence);
            pc.sentence = format!("{}{}", pc.sentence.trim_end_matches('.'), e.clause()) + ".";
            if had_headline {
                results.conclusion.sentence = pc.sentence.clone();
            }
        }
    }
    if !evidence.is_empty() {
        let kl = kl_evaluation(&evidence, &written, models, options, progress)?;
        let clause = kl_clause(&kl);
        if !clause.is_empty() {
            results.conclusion.sentence = format!(
                "{}{clause}.",
                results.conclusion.sentence.trim_end_matches('.')
            );
        }
        results.kl_evaluation = Some(kl);
    }
    results.causal = evidence;
    Ok(written)
}

/// The KL evaluation of the concluded latents together: on each probe's activating prompts, the chat
/// model's unedited answer as the assistant turn; the base residual patched with the latents'
/// chat-minus-base contribution, against 5 random sets of as many latents.
fn kl_evaluation(
    evidence: &[CausalEvidence],
    runs: &[(String, SteeringResults)],
    models: &SteeringModels<'_>,
    options: &CausalOptions,
    progress: bool,
) -> Result<KlEvaluation> {
    let mut latents: Vec<usize> = evidence.iter().map(|e| e.latent).collect();
    latents.sort_unstable();
    latents.dedup();
    // The ablation runs (on ACTIVATE prompts) hold the unedited answers.
    let conversations: Vec<Vec<ChatMessage>> = runs
        .iter()
        .filter(|(name, _)| name.ends_with("_ablate"))
        .flat_map(|(_, run)| &run.prompts)
        .filter(|p| !p.baseline.text.trim().is_empty())
        .map(|p| {
            vec![
                ChatMessage::user(p.prompt.clone()),
                ChatMessage::model(p.baseline.text.clone()),
            ]
        })
        .collect();
    let mut spec = KlEvaluationSpec::new(latents);
    spec.batch_size = options.batch_size;
    Ok(run_kl_evaluation(models, &conversations, &spec, progress)?)
}

/// "; patching them into the base model closes 12% of the base->chat KL gap on their answers (random
/// latents: 0%)", or nothing when there is no gap to speak of.
fn kl_clause(kl: &KlEvaluation) -> String {
    let (Some(chosen), Some(random)) = (kl.setup("chosen"), &kl.random) else {
        return String::new();
    };
    if !chosen.gap_closed.is_finite() {
        return String::new();
    }
    // Whole percents, without a "-0".
    let percent = |fraction: f64| (100.0 * fraction).round() + 0.0;
    format!(
        "; patched into the base model's residual, the concluded latents close {}% of the base->chat \
         KL gap on the assistant's answers (random latents: {}%)",
        percent(chosen.gap_closed),
        percent(random.gap_closed.mean)
    )
}

fn prompts_of(v: &CandidateVerification, expected: Expectation, max: usize) -> Vec<String> {
    v.prompts
        .iter()
        .filter(|p| p.expected == expected)
        .take(max)
        .map(|p| p.prompt.clone())
        .collect()
}

fn causal_test(
    v: &CandidateVerification,
    latent: usize,
    models: &SteeringModels<'_>,
    options: &CausalOptions,
    progress: bool,
) -> Result<(CausalEvidence, [SteeringResults; 2])> {
    let activate = prompts_of(v, Expectation::Activate, options.max_prompts);
    let silent = prompts_of(v, Expectation::Silent, options.max_prompts);
    if activate.is_empty() || silent.is_empty() {
        return Err(AnalysisError::option(
            "--causal",
            format!(
                "probe {} needs ACTIVATE and SILENT verification prompts",
                v.probe
            ),
        ));
    }
    let mut spec = SteeringSpec::clamp(latent);
    spec.max_new_tokens = options.max_new_tokens;
    spec.chat_template = options.chat_template;
    spec.targets = options.targets.clone();
    spec.batch_size = options.batch_size;
    spec.unit = StrengthUnit::Absolute;
    let encode = |prompts: &[String]| -> Result<Vec<Vec<u32>>> {
        prompts
            .iter()
            .map(|p| {
                if options.chat_template {
                    models
                        .tokenizer
                        .encode_chat(&[gemma_model::ChatMessage::user(p.clone())], true)
                } else {
                    models.tokenizer.encode(p)
                }
                .map_err(AnalysisError::from)
            })
            .collect()
    };
    let max = max_activations(models, &[latent], &encode(&activate)?)?[0];
    let value = options.activation_multiple * max;

    spec.kind = EditKind::Ablate;
    let ablation = run_steering(models, &spec, &activate, progress)?;
    spec.kind = EditKind::Clamp;
    spec.strengths = vec![value];
    let activation = run_steering(models, &spec, &silent, progress)?;
    let evidence = CausalEvidence {
        probe: v.probe.clone(),
        contrast: v.contrast.clone(),
        latent,
        max_activation: max,
        clamp_value: value,
        ablation: effect(&ablation, "clamp to 0".into(), Expectation::Activate),
        activation: effect(
            &activation,
            format!("clamp to {value:.3}"),
            Expectation::Silent,
        ),
    };
    Ok((evidence, [ablation, activation]))
}

/// The one strength of `r` as a [`CausalEffect`].
fn effect(r: &SteeringResults, edit: String, on: Expectation) -> CausalEffect {
    let s = &r.strengths[0];
    let targets = r
        .spec
        .targets
        .iter()
        .enumerate()
        .map(|(t, target)| {
            let mean = |f: &dyn Fn(&steering::PromptOutcome) -> f64| {
                r.prompts.iter().map(f).sum::<f64>() / r.prompts.len() as f64
            };
            TargetShift {
                target: target.clone(),
                before: mean(&|p| p.baseline_target_logprob[t].exp()),
                after: mean(&|p| {
                    (p.baseline_target_logprob[t] + p.intervened[0].target_logprob_change[t]).exp()
                }),
            }
        })
        .collect();
    CausalEffect {
        edit,
        on,
        prompts: r.prompts.len(),
        kl: s.kl,
        changed_answers: s.changed_answers,
        targets,
        coherent: s.coherent,
    }
}
