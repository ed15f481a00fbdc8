//! The KL evaluation (science-of-finetuning's half-step patch, `evaluate_interventions_effects.py`):
//! does a set of latents carry what chat training changed?
//!
//! Both models read the same chat-formatted conversations. At the crosscoder's hook the chat model's
//! later layers are fed a patched residual ([`Patch`]): the base residual `h^b` (the base->chat gap), `h^b`
//! plus the chat-minus-base contribution of every latent, of a chosen set `S`, or of random sets of the
//! same size (one per seed), or the chat residual minus every latent's contribution. At each position
//! that predicts an assistant token ([`PredictionMasks`]), `KL(p_chat || p_patched)` is measured, also
//! on the first `k` predictions of each turn and on the rest, with 95% intervals ([`MeanCi`]); the
//! fraction of the base->chat gap a set closes is `1 - KL_S / KL_base`.
//!
//! The chat model's later layers run from the patched residual only (a resumed pass,
//! [`gemma_model::ResumeFrom`]), so a set-up costs the layers after the hook, not a whole forward pass.

mod masks;
mod output;
mod patch;

use std::collections::BTreeSet;

use gemma_model::{ChatMessage, HookPoint, PaddingSide, RunRequest, TokenBatch};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::TokenizedPrompt;
use ndarray::{s, Array2, Array3, Axis};
use serde::{Deserialize, Serialize};
use stereo_core::rng::SplitMix64;

pub use masks::{PositionSubset, PredictionMasks};
pub use output::{draw_kl_evaluation, kl_table, write_kl_evaluation, JSON_FILE, PLOT_FILE};
pub use patch::{Patch, PatchSetup};

use crate::error::{Result, SteeringError};
use crate::measures::{kl_divergence, negative_log_likelihood, MeanCi};
use crate::spec::SteeringModels;

/// What to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlEvaluationSpec {
    /// The chosen latent set `S` (for example the top robust chat-only latents); empty evaluates the
    /// reference set-ups only.
    pub latents: Vec<usize>,
    /// One random set of `|S|` latents per seed, the baseline `S` must beat (none when `S` is empty).
    pub random_seeds: Vec<u64>,
    /// The latents random sets are drawn from; `None` draws from every latent not in `S`.
    pub random_pool: Option<Vec<usize>>,
    /// The first `k` predictions of each assistant turn form the `k_first` subset.
    pub k_first: usize,
    /// Conversations per forward batch (the chat logits of a batch are `batch x tokens x vocab`
    /// floats: keep it small for a 256k vocabulary).
    pub batch_size: usize,
    /// Conversations are cut to this many tokens (the reference's `max_seq_len`).
    pub max_tokens: usize,
    /// Leading positions left unpatched (the reference's `ignore_first_n_tokens`; 0, its default,
    /// patches `<bos>` too).
    pub unpatched_prefix: usize,
}

impl KlEvaluationSpec {
    /// `S = latents` with the reference's defaults: 5 random seeds, `k = 10`, batches of 2, 1024
    /// tokens, every position patched.
    pub fn new(latents: Vec<usize>) -> Self {
        KlEvaluationSpec {
            latents,
            random_seeds: (0..5).collect(),
            random_pool: None,
            k_first: 10,
            batch_size: 2,
            max_tokens: 1024,
            unpatched_prefix: 0,
        }
    }

    /// The set-ups, in report order: `base`, `all_latents`, `chat_error`, then `chosen` and one
    /// `random_seed_{s}` per seed when `S` is not empty.
    pub fn setups(&self, dict_size: usize) -> Result<Vec<PatchSetup>> {
        let mut setups = vec![
            PatchSetup::new("base", Patch::Base),
            PatchSetup::new("all_latents", Patch::AllLatents),
            PatchSetup::new("chat_error", Patch::ChatError),
        ];
        if self.latents.is_empty() {
            return Ok(setups);
        }
        let chosen: BTreeSet<usize> = self.latents.iter().copied().collect();
        setups.push(PatchSetup::new(
            "chosen",
            Patch::Latents {
                latents: chosen.iter().copied().collect(),
            },
        ));
        let pool: Vec<usize> = match &self.random_pool {
            Some(pool) => pool
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => (0..dict_size).filter(|j| !chosen.contains(j)).collect(),
        };
        if !self.random_seeds.is_empty() && pool.len() < chosen.len() {
            return Err(SteeringError::InvalidInput {
                reason: format!(
                    "random sets of {} latents cannot be drawn from a pool of {}",
                    chosen.len(),
                    pool.len()
                ),
            });
        }
        for &seed in &self.random_seeds {
            setups.push(PatchSetup::new(
                format!("random_seed_{seed}"),
                Patch::Latents {
                    latents: random_subset(&pool, chosen.len(), seed),
                },
            ));
        }
        for setup in &setups {
            patch::check_patch(setup, dict_size)?;
        }
        Ok(setups)
    }

    fn check(&self) -> Result<()> {
        for (name, value) in [
            ("k_first", self.k_first),
            ("batch_size", self.batch_size),
            ("max_tokens", self.max_tokens),
        ] {
            if value == 0 {
                return Err(SteeringError::InvalidInput {
                    reason: format!("{name} must be at least 1"),
                });
            }
        }
        Ok(())
    }
}

/// `size` distinct latents of `pool`, ascending (a seeded partial Fisher-Yates shuffle).
fn random_subset(pool: &[usize], size: usize, seed: u64) -> Vec<usize> {
    let mut pool = pool.to_vec();
    let mut rng = SplitMix64::new(seed);
    for i in 0..size {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    let mut chosen = pool[..size].to_vec();
    chosen.sort_unstable();
    chosen
}

/// The smallest base->chat KL (nats per token) whose fractions are reported; below it `gap_closed` is
/// NaN (`null` in JSON).
pub const MIN_GAP: f64 = 1e-6;

/// The scores of one set-up on one conversation, per position (NaN where nothing is scored).
#[derive(Debug, Clone, PartialEq)]
pub struct PositionScores {
    /// `KL(p_chat || p_patched)`.
    pub kl: Vec<f64>,
    /// `-log p_patched(next token)`.
    pub nll: Vec<f64>,
}

/// The scores of a batch of conversations.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchScores {
    /// The unpatched chat model's NLL of the next token, per conversation and position.
    pub chat_nll: Vec<Vec<f64>>,
    /// Per set-up (in the order given), per conversation.
    pub setups: Vec<Vec<PositionScores>>,
}

/// Scores `setups` on a batch of tokenized conversations, at the positions each `masks` entry marks
/// as predicting an assistant token.
pub fn score_batch(
    models: &SteeringModels<'_>,
    conversations: &[TokenizedPrompt],
    masks: &[PredictionMasks],
    setups: &[PatchSetup],
    unpatched_prefix: usize,
) -> Result<BatchScores> {
    if conversations.is_empty() || conversations.len() != masks.len() {
        return Err(SteeringError::InvalidInput {
            reason: format!(
                "{} conversations and {} masks",
                conversations.len(),
                masks.len()
            ),
        });
    }
    let resume_layer = resume_layer(models.hook)?;
    let crosscoder = models.crosscoder.as_ref();
    for setup in setups {
        patch::check_patch(setup, crosscoder.dict_size())?;
    }
    let ids: Vec<Vec<u32>> = conversations.iter().map(|c| c.ids.clone()).collect();
    let batch = TokenBatch::new(&ids, models.chat.config().pad_token_id, PaddingSide::Right)?;
    let base_out = models
        .base
        .run(&batch, &RunRequest::capture([models.hook]))?;
    let chat_out = models
        .chat
        .run(&batch, &RunRequest::capture([models.hook]).with_logits())?;
    let h_base = hook_value(&base_out.activations, models.hook)?;
    let h_chat = hook_value(&chat_out.activations, models.hook)?;
    let chat_logits = chat_out.logits.ok_or_else(|| SteeringError::InvalidInput {
        reason: "the chat model returned no logits".into(),
    })?;

    // The real positions, flattened: (conversation, position) per row.
    let rows: Vec<(usize, usize)> = ids
        .iter()
        .enumerate()
        .flat_map(|(c, seq)| (0..seq.len()).map(move |p| (c, p)))
        .collect();
    let d = h_chat.dim().2;
    let gather = |h: &Array3<f32>| {
        Array2::from_shape_fn((rows.len(), d), |(r, k)| {
            let (c, p) = rows[r];
            h[[c, p, k]]
        })
    };
    let (base_rows, chat_rows) = (gather(h_base), gather(h_chat));
    let needs_code = setups.iter().any(|s| s.patch != Patch::Base);
    let f = if needs_code {
        let mut x = Array3::zeros((rows.len(), 2, d));
        x.index_axis_mut(Axis(1), stereo_core::BASE)
            .assign(&base_rows);
        x.index_axis_mut(Axis(1), stereo_core::CHAT)
            .assign(&chat_rows);
        crosscoder.encode(x.view())?
    } else {
        Array2::zeros((rows.len(), 0))
    };

    let score = |logits: &Array3<f32>, with_kl: bool| -> Vec<PositionScores> {
        ids.iter()
            .enumerate()
            .map(|(c, seq)| {
                let mut kl = vec![f64::NAN; seq.len()];
                let mut nll = vec![f64::NAN; seq.len()];
                for p in (0..seq.len()).filter(|p| masks[c].assistant[*p]) {
                    let q = logits.slice(s![c, p, ..]);
                    if with_kl {
                        kl[p] = kl_divergence(chat_logits.slice(s![c, p, ..]), q);
                    }
                    nll[p] = negative_log_likelihood(q, seq[p + 1]);
                }
                PositionScores { kl, nll }
            })
            .collect()
    };
    let chat_nll = score(&chat_logits, false)
        .into_iter()
        .map(|s| s.nll)
        .collect();
    let mut scores = Vec::with_capacity(setups.len());
    for setup in setups {
        let patched = patch::patched_rows(
            crosscoder,
            &setup.patch,
            base_rows.view(),
            chat_rows.view(),
            &f,
        )?;
        let mut residual = h_chat.clone();
        for (r, &(c, p)) in rows.iter().enumerate() {
            if p >= unpatched_prefix {
                residual.slice_mut(s![c, p, ..]).assign(&patched.row(r));
            }
        }
        let out = models.chat.run(
            &batch,
            &RunRequest::default()
                .with_logits()
                .resumed_from(resume_layer, residual),
        )?;
        let logits = out.logits.ok_or_else(|| SteeringError::InvalidInput {
            reason: "the chat model returned no logits".into(),
        })?;
        scores.push(score(&logits, true));
    }
    Ok(BatchScores {
        chat_nll,
        setups: scores,
    })
}

/// The layer whose output the hook is: the later layers resume from it.
fn resume_layer(hook: HookPoint) -> Result<usize> {
    match hook {
        HookPoint::ResidPost(l) => Ok(l),
        HookPoint::ResidPre(l) if l > 0 => Ok(l - 1),
        other => Err(SteeringError::InvalidInput {
            reason: format!(
                "the KL evaluation patches the residual stream between layers, but the crosscoder \
                 reads {other}"
            ),
        }),
    }
}

fn hook_value(
    activations: &std::collections::BTreeMap<HookPoint, Array3<f32>>,
    hook: HookPoint,
) -> Result<&Array3<f32>> {
    activations
        .get(&hook)
        .ok_or_else(|| SteeringError::InvalidInput {
            reason: format!("the model returned no activation at {hook}"),
        })
}

/// One set-up's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetupOutcome {
    /// The set-up.
    #[serde(flatten)]
    pub setup: PatchSetup,
    /// Mean `KL(p_chat || p_patched)` over every assistant prediction.
    pub kl: MeanCi,
    /// The same over the first `k` predictions of each turn.
    pub kl_k_first: MeanCi,
    /// The same over the rest.
    pub kl_post_k_first: MeanCi,
    /// Mean NLL of the true next token under the patch, over every assistant prediction.
    pub nll: MeanCi,
    /// `1 - KL / KL_base`: the fraction of the base->chat gap the set-up closes (1 for the chat
    /// model itself, 0 for the base residual; NaN when `KL_base` is below [`MIN_GAP`]).
    pub gap_closed: f64,
    /// `(KL_base - KL) / (KL_base - KL_all_latents)`: the fraction of what every latent together
    /// closes.
    pub gap_closed_of_all_latents: f64,
}

/// The random baseline: the random sets' gap fractions across seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RandomBaseline {
    /// Mean and 95% interval of `gap_closed` across seeds.
    pub gap_closed: MeanCi,
    /// The largest `gap_closed` of any seed.
    pub max_gap_closed: f64,
}

/// The KL evaluation's results (`kl_evaluation.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KlEvaluation {
    /// The spec.
    pub spec: KlEvaluationSpec,
    /// The crosscoder's hook.
    pub hook: String,
    /// Conversations scored.
    pub conversations: usize,
    /// Conversations left out: no assistant token within `max_tokens`.
    pub skipped_conversations: usize,
    /// Assistant predictions scored, all / first `k` / the rest.
    pub predictions: [usize; 3],
    /// The unpatched chat model's mean NLL over the same predictions.
    pub chat_nll: MeanCi,
    /// Every set-up, in [`KlEvaluationSpec::setups`] order.
    pub setups: Vec<SetupOutcome>,
    /// The random sets' baseline (when `S` and seeds are given).
    pub random: Option<RandomBaseline>,
}

impl KlEvaluation {
    /// The outcome of the set-up named `name`.
    pub fn setup(&self, name: &str) -> Option<&SetupOutcome> {
        self.setups.iter().find(|s| s.setup.name == name)
    }
}

/// Runs the KL evaluation of `spec` on `conversations` (each rendered with the chat template, no
/// generation prompt, cut to `max_tokens`); `progress` shows a bar over the batches.
pub fn run_kl_evaluation(
    models: &SteeringModels<'_>,
    conversations: &[Vec<ChatMessage>],
    spec: &KlEvaluationSpec,
    progress: bool,
) -> Result<KlEvaluation> {
    spec.check()?;
    let setups = spec.setups(models.crosscoder.dict_size())?;
    let mut tokenized = Vec::new();
    let mut skipped = 0;
    for (i, conversation) in conversations.iter().enumerate() {
        let ids = models
            .tokenizer
            .encode_chat(conversation, false)
            .map_err(|e| SteeringError::InvalidInput {
                reason: format!("conversation {i}: {e}"),
            })?;
        let mut prompt = TokenizedPrompt::new(models.tokenizer, ids);
        prompt.truncate(spec.max_tokens);
        let masks = PredictionMasks::new(&prompt, spec.k_first);
        if masks.any() {
            tokenized.push((prompt, masks));
        } else {
            skipped += 1;
        }
    }
    if tokenized.is_empty() {
        return Err(SteeringError::InvalidInput {
            reason: format!(
                "none of the {} conversations has an assistant token within {} tokens",
                conversations.len(),
                spec.max_tokens
            ),
        });
    }
    let bar = progress_bar(progress, tokenized.len());
    let mut collected = Collected::new(setups.len(), skipped);
    for chunk in tokenized.chunks(spec.batch_size) {
        let (prompts, masks): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
        let scores = score_batch(models, &prompts, &masks, &setups, spec.unpatched_prefix)?;
        collected.add(&masks, &scores);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(collected.summarize(models, spec, setups))
}

/// The scored values of every batch so far.
struct Collected {
    /// Per set-up, per [`PositionSubset`], the KL values.
    kl: Vec<[Vec<f64>; 3]>,
    /// Per set-up, the NLL values over every assistant prediction.
    nll: Vec<Vec<f64>>,
    /// The unpatched chat model's NLL values.
    chat_nll: Vec<f64>,
    predictions: [usize; 3],
    conversations: usize,
    skipped: usize,
}

impl Collected {
    fn new(n_setups: usize, skipped: usize) -> Self {
        Collected {
            kl: vec![Default::default(); n_setups],
            nll: vec![Vec::new(); n_setups],
            chat_nll: Vec::new(),
            predictions: [0; 3],
            conversations: 0,
            skipped,
        }
    }

    fn add(&mut self, masks: &[PredictionMasks], scores: &BatchScores) {
        for (c, m) in masks.iter().enumerate() {
            let on = |subset| {
                m.of(subset)
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b)
                    .map(|(p, _)| p)
            };
            self.conversations += 1;
            for (slot, subset) in PositionSubset::ALL.into_iter().enumerate() {
                self.predictions[slot] += on(subset).count();
            }
            self.chat_nll
                .extend(on(PositionSubset::All).map(|p| scores.chat_nll[c][p]));
            for (s, per_conversation) in scores.setups.iter().enumerate() {
                let values = &per_conversation[c];
                for (slot, subset) in PositionSubset::ALL.into_iter().enumerate() {
                    self.kl[s][slot].extend(on(subset).map(|p| values.kl[p]));
                }
                self.nll[s].extend(on(PositionSubset::All).map(|p| values.nll[p]));
            }
        }
    }

    fn summarize(
        self,
        models: &SteeringModels<'_>,
        spec: &KlEvaluationSpec,
        setups: Vec<PatchSetup>,
    ) -> KlEvaluation {
        let means: Vec<f64> = self.kl.iter().map(|k| MeanCi::of(&k[0]).mean).collect();
        let mean_of = |name: &str| {
            setups
                .iter()
                .position(|s| s.name == name)
                .map_or(f64::NAN, |i| means[i])
        };
        let (kl_base, kl_all) = (mean_of("base"), mean_of("all_latents"));
        // Below this there is no base->chat gap to speak of, and fractions of it are noise.
        let kl_base = if kl_base > MIN_GAP { kl_base } else { f64::NAN };
        let outcomes: Vec<SetupOutcome> = setups
            .into_iter()
            .enumerate()
            .map(|(i, setup)| SetupOutcome {
                setup,
                kl: MeanCi::of(&self.kl[i][0]),
                kl_k_first: MeanCi::of(&self.kl[i][1]),
                kl_post_k_first: MeanCi::of(&self.kl[i][2]),
                nll: MeanCi::of(&self.nll[i]),
                gap_closed: 1.0 - means[i] / kl_base,
                gap_closed_of_all_latents: (kl_base - means[i]) / (kl_base - kl_all),
            })
            .collect();
        let random: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.setup.name.starts_with("random_seed_"))
            .map(|o| o.gap_closed)
            .collect();
        let random =
            (!random.is_empty() && random.iter().all(|g| g.is_finite())).then(|| RandomBaseline {
                gap_closed: MeanCi::of(&random),
                max_gap_closed: random.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            });
        KlEvaluation {
            spec: spec.clone(),
            hook: models.hook.to_string(),
            conversations: self.conversations,
            skipped_conversations: self.skipped,
            predictions: self.predictions,
            chat_nll: MeanCi::of(&self.chat_nll),
            setups: outcomes,
            random,
        }
    }
}

fn progress_bar(show: bool, conversations: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(conversations as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} conversations ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message("KL evaluation");
    bar
}
