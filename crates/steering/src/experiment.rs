//! Running a causal test: baseline answers from the chat model, then, for each strength, the answers
//! with the edit in lockstep, and the measures on the same tokens (REFERENCE.md section 5):
//!
//! - KL: per generated position, `KL(p_chat || p_intervened)` on the intervened answer's tokens, `p_chat`
//!   from the unedited chat model fed the same tokens (teacher forcing);
//! - coherence: the intervened answer's mean per-token NLL under the unedited chat model, and its
//!   distinct-2 ratio (the repetition guard);
//! - targets: the change in `log p(target | prompt)` from the unedited to the intervened model.
//!
//! Across prompts each measure is a mean with a 95% interval ([`MeanCi`]).

use gemma_model::generation::{
    generate, score_continuations, Generation, GenerationConfig, ModelStepper,
};
use gemma_model::{ChatMessage, PaddingSide, RunRequest, TokenBatch};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::{EditPlan, LockstepStepper, BASE, CHAT};
use ndarray::{s, Array2, Array3};
use serde::Serialize;

use crate::error::{Result, SteeringError};
use crate::measures::{distinct_n, kl_divergence, negative_log_likelihood, MeanCi};
use crate::spec::{SteeringModels, SteeringSpec};

/// An answer and how natural it is to the unedited chat model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The generated ids (the stop token included when one was hit).
    pub token_ids: Vec<u32>,
    /// The text, special tokens left out.
    pub text: String,
    /// Each token as text (for the report).
    pub tokens: Vec<String>,
    /// Mean per-token NLL under the unedited chat model (nats).
    pub nll: f64,
    /// Distinct bigrams over bigrams.
    pub distinct_2: f64,
}

/// One prompt's answer with the edit at one strength.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervenedAnswer {
    /// The strength (in the spec's unit).
    pub strength: f32,
    /// The answer.
    pub answer: Answer,
    /// `KL(p_chat || p_intervened)` at each answer position.
    pub kl_per_token: Vec<f64>,
    /// Their mean.
    pub mean_kl: f64,
    /// `log p(target | prompt)` intervened minus unedited, one per target string.
    pub target_logprob_change: Vec<f64>,
}

/// Everything measured for one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptOutcome {
    /// The prompt as given.
    pub prompt: String,
    /// Its ids (chat template included).
    pub prompt_ids: Vec<u32>,
    /// The unedited chat model's answer.
    pub baseline: Answer,
    /// `log p(target | prompt)` under the unedited chat model, one per target.
    pub baseline_target_logprob: Vec<f64>,
    /// One answer per strength, in the spec's order.
    pub intervened: Vec<IntervenedAnswer>,
}

/// The dose-response at one strength, across prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrengthOutcome {
    /// The strength (in the spec's unit).
    pub strength: f32,
    /// The value set or added for each latent (`None` for ablation and patching).
    pub values: Option<Vec<f32>>,
    /// Mean KL per answer.
    pub kl: MeanCi,
    /// Mean NLL per answer.
    pub nll: MeanCi,
    /// Distinct-2 per answer.
    pub distinct_2: MeanCi,
    /// Change of each target's log-probability.
    pub target_logprob_change: Vec<MeanCi>,
    /// Whether the answers stay within the coherence criteria of the baseline.
    pub coherent: bool,
    /// How many answers differ from the baseline at all.
    pub changed_answers: usize,
}

/// The outcome of a causal test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SteeringResults {
    /// What was asked.
    pub spec: SteeringSpec,
    /// The crosscoder's hook.
    pub hook: String,
    /// The base and chat models.
    pub models: [String; 2],
    /// Each edited latent's largest activation over the prompts (the unit of relative strengths).
    pub max_activation: Vec<f32>,
    /// The baseline answers' NLL under the chat model.
    pub baseline_nll: MeanCi,
    /// The baseline answers' distinct-2.
    pub baseline_distinct_2: MeanCi,
    /// The dose-response, one entry per strength.
    pub strengths: Vec<StrengthOutcome>,
    /// The largest positive strength up to which every strength is coherent (`--auto-strength`).
    pub auto_strength: Option<f32>,
    /// Per prompt.
    pub prompts: Vec<PromptOutcome>,
}

/// Runs `spec` on `prompts`; `progress` shows a bar over the strengths.
pub fn run_steering(
    models: &SteeringModels<'_>,
    spec: &SteeringSpec,
    prompts: &[String],
    progress: bool,
) -> Result<SteeringResults> {
    spec.validate(models.crosscoder.dict_size())?;
    if prompts.is_empty() {
        return Err(SteeringError::InvalidInput {
            reason: "no prompt to test on".into(),
        });
    }
    let ids = encode_prompts(models, prompts, spec.chat_template)?;
    let max_activation = max_activations(models, &spec.latents, &ids)?;
    let strengths = spec.strengths_run();
    let bar = progress_bar(progress, strengths.len() + 1);

    let mut outcomes = Vec::with_capacity(prompts.len());
    for (chunk, chunk_prompts) in ids
        .chunks(spec.batch_size)
        .zip(prompts.chunks(spec.batch_size))
    {
        let baseline = baseline_answers(models, spec, chunk)?;
        for (i, (answer, target_logprob)) in baseline.into_iter().enumerate() {
            outcomes.push(PromptOutcome {
                prompt: chunk_prompts[i].clone(),
                prompt_ids: chunk[i].clone(),
                baseline: answer,
                baseline_target_logprob: target_logprob,
                intervened: Vec::new(),
            });
        }
    }
    bar.inc(1);
    for strength in &strengths {
        let plan = EditPlan {
            edit: spec.edit_at(*strength, &max_activation),
            scope: spec.scope,
            edit_bos: spec.edit_bos,
        };
        for (chunk_index, chunk) in ids.chunks(spec.batch_size).enumerate() {
            let first = chunk_index * spec.batch_size;
            let baseline_logprob: Vec<Vec<f64>> = outcomes[first..first + chunk.len()]
                .iter()
                .map(|o| o.baseline_target_logprob.clone())
                .collect();
            let answers = intervened_answers(models, spec, &plan, chunk, &baseline_logprob)?;
            for (outcome, mut answer) in outcomes[first..].iter_mut().zip(answers) {
                answer.strength = *strength;
                outcome.intervened.push(answer);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summarize(models, spec, max_activation, outcomes))
}

pub(crate) fn progress_bar(show: bool, steps: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs ({elapsed})")
    {
        bar.set_style(style);
    }
    bar.set_message("steering: baseline, then one run per strength");
    bar
}

fn encode_prompts(
    models: &SteeringModels<'_>,
    prompts: &[String],
    chat_template: bool,
) -> Result<Vec<Vec<u32>>> {
    Ok(prompts
        .iter()
        .map(|p| {
            if chat_template {
                models
                    .tokenizer
                    .encode_chat(&[ChatMessage::user(p.clone())], true)
            } else {
                models.tokenizer.encode(p)
            }
        })
        .collect::<gemma_model::Result<_>>()?)
}

/// Each latent's largest activation over every non-`<bos>` token of the prompts.
pub fn max_activations(
    models: &SteeringModels<'_>,
    latents: &[usize],
    prompts: &[Vec<u32>],
) -> Result<Vec<f32>> {
    let pad = models.chat.config().pad_token_id;
    let bos = models.chat.config().bos_token_id;
    let batch = TokenBatch::new(prompts, pad, PaddingSide::Right)?;
    let request = RunRequest::capture([models.hook]);
    let base = models.base.run(&batch, &request)?.activations;
    let chat = models.chat.run(&batch, &request)?.activations;
    let (base, chat) = (&base[&models.hook], &chat[&models.hook]);
    let (b, t, d) = base.dim();
    let rows: Vec<usize> = (0..b * t)
        .filter(|i| batch.mask()[*i] && batch.ids()[*i] != bos)
        .collect();
    let mut x = Array3::zeros((rows.len(), 2, d));
    for (k, i) in rows.iter().enumerate() {
        x.slice_mut(s![k, BASE, ..])
            .assign(&base.slice(s![i / t, i % t, ..]));
        x.slice_mut(s![k, CHAT, ..])
            .assign(&chat.slice(s![i / t, i % t, ..]));
    }
    let f = models.crosscoder.encode(x.view())?;
    Ok(latents
        .iter()
        .map(|j| f.column(*j).iter().fold(0.0f32, |m, v| m.max(*v)))
        .collect())
}

fn greedy(spec: &SteeringSpec, models: &SteeringModels<'_>) -> GenerationConfig {
    GenerationConfig {
        keep_logits: true,
        ..GenerationConfig::greedy(spec.max_new_tokens, models.chat.config())
    }
}

fn capacity(prompts: &[Vec<u32>], extra: usize) -> usize {
    prompts.iter().map(Vec::len).max().unwrap_or(0) + extra
}

/// The chat model's answers and each target's log-probability, per prompt.
fn baseline_answers(
    models: &SteeringModels<'_>,
    spec: &SteeringSpec,
    prompts: &[Vec<u32>],
) -> Result<Vec<(Answer, Vec<f64>)>> {
    let cap = capacity(prompts, spec.max_new_tokens);
    let mut stepper = ModelStepper::new(models.chat, prompts.len(), cap)?;
    let generations = generate(
        &mut stepper,
        prompts,
        &greedy(spec, models),
        None,
        &mut |_, _| {},
    )?;
    let logprobs = target_logprobs(models, spec, prompts, None)?;
    generations
        .iter()
        .zip(logprobs)
        .map(|(g, lp)| {
            let logits = g.logits.as_ref().ok_or_else(no_logits)?;
            Ok((answer(models, &g.token_ids, logits)?, lp))
        })
        .collect()
}

/// The answers with `plan` in lockstep, measured against the unedited chat model.
fn intervened_answers(
    models: &SteeringModels<'_>,
    spec: &SteeringSpec,
    plan: &EditPlan,
    prompts: &[Vec<u32>],
    baseline_logprob: &[Vec<f64>],
) -> Result<Vec<IntervenedAnswer>> {
    let cap = capacity(prompts, spec.max_new_tokens);
    let mut lockstep = lockstep(models, prompts.len(), cap)?.with_plan(plan.clone())?;
    let generations: Vec<Generation> = generate(
        &mut lockstep,
        prompts,
        &greedy(spec, models),
        None,
        &mut |_, _| {},
    )?;
    let answers: Vec<Vec<u32>> = generations.iter().map(|g| g.token_ids.clone()).collect();
    // The unedited chat model on the same tokens (teacher forcing).
    let mut chat = ModelStepper::new(models.chat, prompts.len(), cap)?;
    let unedited = score_continuations(
        &mut chat,
        prompts,
        &answers,
        models.chat.config().pad_token_id,
    )?;
    let logprobs = target_logprobs(models, spec, prompts, Some(plan))?;
    generations
        .iter()
        .zip(unedited)
        .zip(logprobs.into_iter().zip(baseline_logprob))
        .map(|((g, p_chat), (lp, base_lp))| {
            let q = g.logits.as_ref().ok_or_else(no_logits)?;
            let kl_per_token: Vec<f64> = (0..g.token_ids.len())
                .map(|k| kl_divergence(p_chat.row(k), q.row(k)))
                .collect();
            Ok(IntervenedAnswer {
                strength: 0.0,
                answer: answer(models, &g.token_ids, &p_chat)?,
                mean_kl: MeanCi::of(&kl_per_token).mean,
                kl_per_token,
                target_logprob_change: lp.iter().zip(base_lp).map(|(a, b)| a - b).collect(),
            })
        })
        .collect()
}

pub(crate) fn lockstep<'m>(
    models: &SteeringModels<'m>,
    batch: usize,
    capacity: usize,
) -> Result<LockstepStepper<'m>> {
    Ok(LockstepStepper::new(
        models.base,
        models.chat,
        models.crosscoder.clone(),
        models.hook,
        batch,
        capacity,
    )?)
}

/// `log p(target | prompt)` of every target for every prompt, under the chat model alone or with `plan`.
fn target_logprobs(
    models: &SteeringModels<'_>,
    spec: &SteeringSpec,
    prompts: &[Vec<u32>],
    plan: Option<&EditPlan>,
) -> Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::with_capacity(spec.targets.len()); prompts.len()];
    let pad = models.chat.config().pad_token_id;
    for target in &spec.targets {
        let ids = models.tokenizer.encode_raw(target)?;
        let continuations = vec![ids.clone(); prompts.len()];
        let cap = capacity(prompts, ids.len());
        let scores = match plan {
            None => {
                let mut chat = ModelStepper::new(models.chat, prompts.len(), cap)?;
                score_continuations(&mut chat, prompts, &continuations, pad)?
            }
            Some(plan) => {
                let mut lockstep = lockstep(models, prompts.len(), cap)?.with_plan(plan.clone())?;
                score_continuations(&mut lockstep, prompts, &continuations, pad)?
            }
        };
        for (row, logits) in scores.iter().enumerate() {
            let logprob: f64 = ids
                .iter()
                .enumerate()
                .map(|(k, t)| -negative_log_likelihood(logits.row(k), *t))
                .sum();
            out[row].push(logprob);
        }
    }
    Ok(out)
}

/// An answer with its NLL under `logits_chat` (the unedited chat model's logits at its positions).
fn answer(models: &SteeringModels<'_>, ids: &[u32], logits_chat: &Array2<f32>) -> Result<Answer> {
    let nll: Vec<f64> = ids
        .iter()
        .enumerate()
        .map(|(k, t)| negative_log_likelihood(logits_chat.row(k), *t))
        .collect();
    Ok(Answer {
        token_ids: ids.to_vec(),
        text: models.tokenizer.decode_text(ids)?,
        tokens: models.tokenizer.tokens(ids),
        nll: MeanCi::of(&nll).mean,
        distinct_2: distinct_n(ids, 2),
    })
}

fn no_logits() -> SteeringError {
    SteeringError::InvalidInput {
        reason: "a generation kept no logits".into(),
    }
}

/// The dose-response table and the automatic strength.
fn summarize(
    models: &SteeringModels<'_>,
    spec: &SteeringSpec,
    max_activation: Vec<f32>,
    prompts: Vec<PromptOutcome>,
) -> SteeringResults {
    let baseline_nll = MeanCi::of(&prompts.iter().map(|p| p.baseline.nll).collect::<Vec<_>>());
    let baseline_distinct_2 = MeanCi::of(
        &prompts
            .iter()
            .map(|p| p.baseline.distinct_2)
            .collect::<Vec<_>>(),
    );
    let strengths: Vec<StrengthOutcome> = spec
        .strengths_run()
        .iter()
        .enumerate()
        .map(|(k, strength)| {
            let at = |f: &dyn Fn(&IntervenedAnswer) -> f64| {
                MeanCi::of(
                    &prompts
                        .iter()
                        .map(|p| f(&p.intervened[k]))
                        .collect::<Vec<_>>(),
                )
            };
            let nll = at(&|a| a.answer.nll);
            let distinct_2 = at(&|a| a.answer.distinct_2);
            let coherent = nll.mean <= baseline_nll.mean + spec.coherence.max_nll_increase
                && distinct_2.mean >= baseline_distinct_2.mean - spec.coherence.max_distinct_2_drop;
            let values =
                spec.kind
                    .has_strength()
                    .then(|| match spec.edit_at(*strength, &max_activation) {
                        model_pair::LatentEdit::Clamp(v) | model_pair::LatentEdit::Steer(v) => {
                            v.iter().map(|(_, x)| *x).collect()
                        }
                        _ => Vec::new(),
                    });
            StrengthOutcome {
                strength: *strength,
                values,
                kl: at(&|a| a.mean_kl),
                nll,
                distinct_2,
                target_logprob_change: (0..spec.targets.len())
                    .map(|t| at(&|a| a.target_logprob_change[t]))
                    .collect(),
                coherent,
                changed_answers: prompts
                    .iter()
                    .filter(|p| p.intervened[k].answer.token_ids != p.baseline.token_ids)
                    .count(),
            }
        })
        .collect();
    let auto_strength = auto_strength(&strengths);
    SteeringResults {
        spec: spec.clone(),
        hook: models.hook.to_string(),
        models: [
            models.base.name().to_string(),
            models.chat.name().to_string(),
        ],
        max_activation,
        baseline_nll,
        baseline_distinct_2,
        strengths,
        auto_strength,
        prompts,
    }
}

/// Walking the positive strengths upwards, the last one before the first incoherent one.
pub fn auto_strength(strengths: &[StrengthOutcome]) -> Option<f32> {
    let mut positive: Vec<&StrengthOutcome> =
        strengths.iter().filter(|s| s.strength > 0.0).collect();
    positive.sort_by(|a, b| a.strength.total_cmp(&b.strength));
    positive
        .iter()
        .take_while(|s| s.coherent)
        .last()
        .map(|s| s.strength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(strength: f32, coherent: bool) -> StrengthOutcome {
        let zero = MeanCi::of(&[0.0]);
        StrengthOutcome {
            strength,
            values: None,
            kl: zero,
            nll: zero,
            distinct_2: zero,
            target_logprob_change: Vec::new(),
            coherent,
            changed_answers: 0,
        }
    }

    #[test]
    fn auto_strength_stops_before_the_first_incoherent_positive_strength() {
        let dose = [
            at(-2.0, false),
            at(0.0, true),
            at(4.0, true),
            at(1.0, true),
            at(2.0, false),
        ];
        assert_eq!(auto_strength(&dose), Some(1.0));
        assert_eq!(auto_strength(&[at(1.0, false), at(2.0, true)]), None);
        assert_eq!(auto_strength(&[at(0.5, true), at(3.0, true)]), Some(3.0));
    }
}
