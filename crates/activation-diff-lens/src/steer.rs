//! Steering with an activation difference: add `strength x target_norm x unit(delta)` to the chat
//! model's residual at a layer, at every position, while it answers (greedy); a binary search finds the
//! largest strength whose answers stay coherent (the causal tests' measure: the answers' NLL under the
//! unedited chat model within a margin of the unsteered answers', and no collapse of their distinct-2
//! ratio). The diffing toolkit's `steering.py` does the same with an LLM grader; this measure needs none.

use std::sync::Arc;

use gemma_model::generation::{
    generate, score_continuations, GenerationConfig, InterventionScope, ModelStepper,
};
use gemma_model::{ChatMessage, GemmaTokenizer, HookPoint, Intervention, LanguageModel};
use ndarray::{Array1, ArrayView1};
use serde::{Deserialize, Serialize};
use steering::{distinct_n, negative_log_likelihood, CoherenceCriteria};

use crate::error::{AdlError, Result};

/// How to steer and search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdlSteeringSpec {
    /// The layer whose output (`blocks.{layer}.hook_resid_post`) gets the vector.
    pub layer: usize,
    /// Strengths are multiples of this norm (the chat model's mean activation norm there, say).
    pub target_norm: f32,
    /// The largest strength tried.
    pub max_strength: f32,
    /// Halvings of the search interval after the first probe of `max_strength`.
    pub search_steps: usize,
    /// New tokens per answer (greedy).
    pub max_new_tokens: usize,
    /// Wrap prompts in the chat template as one user turn.
    pub chat_template: bool,
    /// When answers count as coherent.
    pub coherence: CoherenceCriteria,
}

impl AdlSteeringSpec {
    /// Steering at `layer` in units of `target_norm`: strengths up to 2, 6 halvings, 24 new tokens,
    /// chat template, the default coherence criteria.
    pub fn new(layer: usize, target_norm: f32) -> Self {
        AdlSteeringSpec {
            layer,
            target_norm,
            max_strength: 2.0,
            search_steps: 6,
            max_new_tokens: 24,
            chat_template: true,
            coherence: CoherenceCriteria::default(),
        }
    }
}

/// The answers at one strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeredAnswers {
    /// The strength (0: unsteered).
    pub strength: f32,
    /// One answer per prompt.
    pub answers: Vec<String>,
    /// Mean per-token NLL of the answers under the unedited chat model.
    pub nll: f64,
    /// Mean distinct-2 ratio of the answers.
    pub distinct_2: f64,
    /// Within the coherence criteria of the unsteered answers (true for them).
    pub coherent: bool,
}

/// A steering search's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdlSteering {
    /// The spec.
    pub spec: AdlSteeringSpec,
    /// The prompts.
    pub prompts: Vec<String>,
    /// The unsteered answers.
    pub unsteered: SteeredAnswers,
    /// Every strength tried, in the order tried.
    pub tried: Vec<SteeredAnswers>,
    /// The largest coherent strength tried, if any is above 0.
    pub chosen: Option<SteeredAnswers>,
}

/// Searches the largest coherent strength of `vector` on `prompts` with `chat` (loaded whole).
pub fn steering_search(
    chat: &dyn LanguageModel,
    tokenizer: &GemmaTokenizer,
    vector: ArrayView1<'_, f32>,
    prompts: &[String],
    spec: &AdlSteeringSpec,
) -> Result<AdlSteering> {
    let norm = vector.dot(&vector).sqrt();
    if !norm.is_finite()
        || norm == 0.0
        || prompts.is_empty()
        || !spec.max_strength.is_finite()
        || spec.max_strength <= 0.0
    {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "steering needs a non-zero vector (norm {norm}), prompts and a positive max_strength ({})",
                spec.max_strength
            ),
        });
    }
    let unit: Array1<f32> = vector.mapv(|v| v / norm);
    let ids = prompts
        .iter()
        .map(|p| {
            if spec.chat_template {
                tokenizer.encode_chat(&[ChatMessage::user(p.clone())], true)
            } else {
                tokenizer.encode(p)
            }
            .map_err(AdlError::from)
        })
        .collect::<Result<Vec<_>>>()?;
    let run = |strength: f32| answers(chat, tokenizer, &ids, &unit, strength, spec);
    let mut unsteered = run(0.0)?;
    unsteered.coherent = true;
    let coherent = |a: &SteeredAnswers| {
        a.nll <= unsteered.nll + spec.coherence.max_nll_increase
            && a.distinct_2 >= unsteered.distinct_2 - spec.coherence.max_distinct_2_drop
    };
    let mut tried = Vec::new();
    let (mut lo, mut hi) = (0.0f32, spec.max_strength);
    let mut chosen: Option<SteeredAnswers> = None;
    let mut top = run(hi)?;
    top.coherent = coherent(&top);
    let top_coherent = top.coherent;
    tried.push(top.clone());
    if top_coherent {
        chosen = Some(top);
    } else {
        for _ in 0..spec.search_steps {
            let mid = 0.5 * (lo + hi);
            let mut a = run(mid)?;
            a.coherent = coherent(&a);
            if a.coherent {
                lo = mid;
                chosen = Some(a.clone());
            } else {
                hi = mid;
            }
            tried.push(a);
        }
    }
    Ok(AdlSteering {
        spec: spec.clone(),
        prompts: prompts.to_vec(),
        unsteered,
        tried,
        chosen,
    })
}

/// Greedy answers with the vector added at `strength`, scored by the unedited model.
fn answers(
    chat: &dyn LanguageModel,
    tokenizer: &GemmaTokenizer,
    prompts: &[Vec<u32>],
    unit: &Array1<f32>,
    strength: f32,
    spec: &AdlSteeringSpec,
) -> Result<SteeredAnswers> {
    let capacity = prompts.iter().map(Vec::len).max().unwrap_or(0) + spec.max_new_tokens + 1;
    let mut stepper = ModelStepper::new(chat, prompts.len(), capacity)?;
    if strength != 0.0 {
        let added = unit.mapv(|v| v * strength * spec.target_norm);
        let edit = move |x: &mut ndarray::Array3<f32>| {
            for mut row in x.rows_mut() {
                row += &added;
            }
        };
        stepper = stepper.intervene(
            Intervention {
                hook: HookPoint::ResidPost(spec.layer),
                edit: Arc::new(edit),
            },
            InterventionScope::All,
        );
    }
    let config = GenerationConfig::greedy(spec.max_new_tokens, chat.config());
    let generations = generate(
        &mut stepper,
        prompts,
        &config,
        Some(tokenizer),
        &mut |_, _| {},
    )?;
    let continuations: Vec<Vec<u32>> = generations
        .iter()
        .map(|g| {
            if g.token_ids.is_empty() {
                vec![chat.config().pad_token_id]
            } else {
                g.token_ids.clone()
            }
        })
        .collect();
    let mut unedited = ModelStepper::new(chat, prompts.len(), capacity)?;
    let scores = score_continuations(
        &mut unedited,
        prompts,
        &continuations,
        chat.config().pad_token_id,
    )?;
    let mut nll = Vec::new();
    for (ids, logits) in continuations.iter().zip(&scores) {
        let per_token: f64 = ids
            .iter()
            .enumerate()
            .map(|(k, t)| negative_log_likelihood(logits.row(k), *t))
            .sum::<f64>()
            / ids.len() as f64;
        nll.push(per_token);
    }
    let n = prompts.len() as f64;
    Ok(SteeredAnswers {
        strength,
        answers: generations
            .iter()
            .map(|g| tokenizer.decode_text(&g.token_ids))
            .collect::<std::result::Result<_, _>>()?,
        nll: nll.iter().sum::<f64>() / n,
        distinct_2: continuations.iter().map(|c| distinct_n(c, 2)).sum::<f64>() / n,
        coherent: false,
    })
}
