//! The hunt: which features tell the two variants of a contrast apart, consistently over items.
//!
//! Input: for each discovery item of a contrast, the pooled feature vector of its positive variant
//! (novice, biased, child) and of its negative variant (expert, neutral, adult), as
//! [`PairedFeatures`]. Features are crosscoder latents or, without a crosscoder, residual dimensions
//! ([`FeatureKind`]).
//!
//! 1. Features **tested**: those whose pooled value is non-zero for at least one prompt of the
//!    contrast ("active anywhere"; every residual dimension is).
//! 2. Per tested feature: the paired [`stats`](crate::stats) of `d_i = positive_i - negative_i`
//!    (mean, sd, `d_z`, sign fraction, two-sided sign-flip p-value), then Benjamini-Hochberg over the
//!    tested features.
//! 3. **Ranking**: significant features (`q <= fdr`) by effect size `d_z`, largest first.
//!    **Candidates** are the first `top_k` of them that are *more* active on the positive variant
//!    (`mean > 0`): features that fire on the cue.
//! 4. Each feature carries its decoder class when a crosscoder is used ([`DecoderInfo`]).
//!
//! [`notebook_ranking`] reproduces the seed notebook's own rule on the same differences (top-10 per
//! pair, kept when seen in at least two pairs, sorted by the mean of the scores it was seen with),
//! for comparison: it has no notion of noise, and ranks features that appear in few pairs.

use crosscoder::{DecoderAnalysis, LatentClass};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use stereo_core::rng::SplitMix64;

use crate::error::{AnalysisError, Result};
use crate::stats::{
    benjamini_hochberg, mean, paired_summary, sign_flip_test, PairedSummary, PermutationOptions,
    PermutationResult,
};

/// What a feature index refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// Crosscoder latents: the raw latents `f` of [`Crosscoder::encode`](crosscoder::Crosscoder::encode)
    /// (not multiplied by the code normalisation).
    CrosscoderLatent,
    /// Dimensions of one model's residual stream at the hook (the notebook's fallback without a
    /// crosscoder; `model` 1 = chat, as in the notebook).
    ResidualDimension {
        /// Model index (0 = base, 1 = chat).
        model: usize,
    },
}

impl FeatureKind {
    /// `Latent` or `Dimension`, for sentences.
    pub fn noun(&self) -> &'static str {
        match self {
            FeatureKind::CrosscoderLatent => "Latent",
            FeatureKind::ResidualDimension { .. } => "Dimension",
        }
    }

    /// A label for reports, e.g. `residual dimension of the chat model (no crosscoder)`.
    pub fn label(&self) -> String {
        match self {
            FeatureKind::CrosscoderLatent => "crosscoder latent".into(),
            FeatureKind::ResidualDimension { model } => format!(
                "residual dimension of the {} model (no crosscoder: the notebook's fallback)",
                if *model == 0 { "base" } else { "chat" }
            ),
        }
    }
}

/// The two sides of a contrast, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContrastName {
    /// The dataset category (`expertise_level`, ...).
    pub category: String,
    /// The variant expected to carry the cue (`novice`, `biased`, `child`).
    pub positive: String,
    /// The variant compared against (`expert`, `neutral`, `adult`).
    pub negative: String,
}

impl From<&persona_dataset::Contrast> for ContrastName {
    fn from(c: &persona_dataset::Contrast) -> Self {
        ContrastName {
            category: c.category.clone(),
            positive: c.positive.clone(),
            negative: c.negative.clone(),
        }
    }
}

impl std::fmt::Display for ContrastName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} vs {})",
            self.category, self.positive, self.negative
        )
    }
}

/// Pooled features of a contrast's items: `positive [n_items, F]` and `negative [n_items, F]`,
/// row `i` being item `item_ids[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedFeatures {
    /// Item ids, one per row.
    pub item_ids: Vec<String>,
    /// Pooled features of the positive variants, `[n_items, F]`.
    pub positive: Array2<f32>,
    /// Pooled features of the negative variants, `[n_items, F]`.
    pub negative: Array2<f32>,
}

impl PairedFeatures {
    /// Checks that both arrays are `[item_ids.len(), F]`.
    ///
    /// # Errors
    /// [`AnalysisError::Shape`].
    pub fn new(
        item_ids: Vec<String>,
        positive: Array2<f32>,
        negative: Array2<f32>,
    ) -> Result<Self> {
        if positive.dim() != negative.dim() || positive.nrows() != item_ids.len() {
            return Err(AnalysisError::Shape {
                what: "paired features".into(),
                expected: format!("positive and negative both [{}, F]", item_ids.len()),
                actual: format!("{:?} and {:?}", positive.dim(), negative.dim()),
            });
        }
        Ok(PairedFeatures {
            item_ids,
            positive,
            negative,
        })
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    /// Number of features `F`.
    pub fn n_features(&self) -> usize {
        self.positive.ncols()
    }

    /// Differences `positive - negative` of feature `j`, one per item.
    pub fn differences(&self, j: usize) -> Vec<f64> {
        self.positive
            .column(j)
            .iter()
            .zip(self.negative.column(j))
            .map(|(p, n)| f64::from(*p) - f64::from(*n))
            .collect()
    }

    /// Whether feature `j` is non-zero for at least one prompt.
    pub fn is_active(&self, j: usize) -> bool {
        self.positive.column(j).iter().any(|v| *v != 0.0)
            || self.negative.column(j).iter().any(|v| *v != 0.0)
    }

    /// The same items with the labels shuffled: each item's two variants are swapped with
    /// probability one half (the null hypothesis of the sign-flip test, for null checks).
    pub fn with_shuffled_labels(&self, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut out = self.clone();
        for i in 0..self.n_items() {
            if rng.next_u64() >> 63 == 1 {
                out.positive.row_mut(i).assign(&self.negative.row(i));
                out.negative.row_mut(i).assign(&self.positive.row(i));
            }
        }
        out
    }
}

/// Options of the hunt. Defaults: FDR 5%, 10 candidates (chat-only latents only, when a crosscoder
/// classifies them), the notebook's top-10, permutation options raised to resolve the FDR cut over the
/// tested features.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HuntOptions {
    /// Benjamini-Hochberg level `q`.
    pub fdr: f64,
    /// Candidates kept per contrast.
    pub top_k: usize,
    /// The permutation test.
    pub permutation: PermutationOptions,
    /// Raise `permutation.max_resamples` so the FDR cut is reachable
    /// ([`PermutationOptions::resolving`]).
    pub auto_resamples: bool,
    /// Features per pair in the notebook's ranking (its `top_k = 10`).
    pub notebook_top_n: usize,
    /// Keep only chat-only latents as candidates (the question is what chat training added); shared and
    /// base-only latents are still tested, ranked and reported with their class. Ignored for residual
    /// dimensions, which have no decoder class.
    #[serde(default = "default_chat_only_candidates")]
    pub chat_only_candidates: bool,
}

fn default_chat_only_candidates() -> bool {
    true
}

impl Default for HuntOptions {
    fn default() -> Self {
        HuntOptions {
            fdr: 0.05,
            top_k: 10,
            permutation: PermutationOptions::default(),
            auto_resamples: true,
            notebook_top_n: 10,
            chat_only_candidates: true,
        }
    }
}

/// Where a latent decodes to: its class, relative norm and decoder cosine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecoderInfo {
    /// Chat-only, shared, base-only or other (crosscoder crate thresholds).
    pub class: LatentClass,
    /// `n_chat / (n_base + n_chat)`: 1 = decodes only into the chat model, 0 = only into the base.
    pub relative_norm: f32,
    /// Cosine of the base and chat decoder vectors (NaN when one is zero).
    pub cosine_similarity: f32,
    /// `||W_dec[base, j]||`.
    pub norm_base: f32,
    /// `||W_dec[chat, j]||`.
    pub norm_chat: f32,
    /// Latent Scaling's verdict, when it ran (day1 runs it over the tokens of its discovery prompts).
    #[serde(default)]
    pub latent_scaling: Option<ScalingInfo>,
}

/// Latent Scaling's verdict on a latent (Minder et al. 2025; `crosscoder::latent_scaling`): the ratios
/// `nu = beta_base / beta_chat` of the error and reconstruction targets, and whether the latent is
/// robustly chat-only (relative norm, `nu_error` and `nu_reconstruction` within
/// [`RobustThresholds`](crosscoder::RobustThresholds)). NaN where the latent never fired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalingInfo {
    /// `beta_error[base] / beta_error[chat]`: high means the base model carries the direction too
    /// (complete shrinkage).
    pub nu_error: f32,
    /// `beta_reconstruction[base] / beta_reconstruction[chat]`: high means another latent
    /// reconstructs it in the base model (latent decoupling).
    pub nu_reconstruction: f32,
    /// Relative norm, `nu_error` and `nu_reconstruction` all within the thresholds.
    pub robust_chat_only: bool,
}

impl DecoderInfo {
    /// The decoder facts of latent `j`.
    pub fn of(analysis: &DecoderAnalysis, j: usize) -> Self {
        DecoderInfo {
            class: analysis.classes[j],
            relative_norm: analysis.relative_norms[j],
            cosine_similarity: analysis.cosine_similarity[j],
            norm_base: analysis.norms[[analysis.base, j]],
            norm_chat: analysis.norms[[analysis.chat, j]],
            latent_scaling: None,
        }
    }
}

/// The statistics of one tested feature in one contrast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// Feature index (latent or residual dimension).
    pub feature: usize,
    /// Mean, sd, effect size `d_z` and sign fraction of the per-item differences.
    pub summary: PairedSummary,
    /// Mean pooled value on the positive variants.
    pub mean_positive: f64,
    /// Mean pooled value on the negative variants.
    pub mean_negative: f64,
    /// Two-sided sign-flip permutation p-value.
    pub p_value: f64,
    /// Benjamini-Hochberg q-value over the contrast's tested features.
    pub q_value: f64,
    /// `q_value <= fdr`.
    pub significant: bool,
    /// The permutation test's details.
    pub permutation: PermutationResult,
    /// Decoder class and norms (crosscoder latents only).
    pub decoder: Option<DecoderInfo>,
}

/// One entry of the notebook's ranking (its `consistent_features`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotebookEntry {
    /// Feature index.
    pub feature_idx: usize,
    /// Mean of the scores the feature was seen with (only pairs where it was in the top-n).
    pub mean_score: f64,
    /// `np.std` of those scores (population sd, `ddof = 0`, as the notebook).
    pub std_score: f64,
    /// In how many pairs it was in the top-n.
    pub n_pairs: usize,
    /// The scores themselves.
    pub scores: Vec<f64>,
}

/// The result of the hunt on one contrast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContrastHunt {
    /// The contrast.
    pub contrast: ContrastName,
    /// What the features are.
    pub kind: FeatureKind,
    /// The discovery items, in row order.
    pub item_ids: Vec<String>,
    /// Number of features `F`.
    pub n_features: usize,
    /// Statistics of every tested feature, in feature order.
    pub stats: Vec<LatentStats>,
    /// Indices into `stats` of the significant features, by effect size (largest first).
    pub ranked: Vec<usize>,
    /// Indices into `stats` of the candidates: the first `top_k` ranked features with `mean > 0` (and,
    /// with [`HuntOptions::chat_only_candidates`], a chat-only decoder class).
    pub candidates: Vec<usize>,
    /// The notebook's ranking on the same differences.
    pub notebook: Vec<NotebookEntry>,
    /// The options used (with `max_resamples` as actually used).
    pub options: HuntOptions,
}

impl ContrastHunt {
    /// Number of tested features.
    pub fn n_tested(&self) -> usize {
        self.stats.len()
    }

    /// The candidates' statistics, best first.
    pub fn candidate_stats(&self) -> impl Iterator<Item = &LatentStats> + '_ {
        self.candidates.iter().map(|i| &self.stats[*i])
    }

    /// The significant features' statistics, best first.
    pub fn ranked_stats(&self) -> impl Iterator<Item = &LatentStats> + '_ {
        self.ranked.iter().map(|i| &self.stats[*i])
    }

    /// The statistics of feature `j`, if it was tested.
    pub fn stats_of(&self, j: usize) -> Option<&LatentStats> {
        self.stats
            .binary_search_by_key(&j, |s| s.feature)
            .ok()
            .map(|i| &self.stats[i])
    }

    /// The smallest p-value the permutation test can return with this contrast's items.
    pub fn p_floor(&self) -> f64 {
        self.options.permutation.p_floor(self.item_ids.len())
    }

    /// The first Benjamini-Hochberg cut, `fdr / n_tested`: the smallest p-value must be at most this
    /// for anything to be significant.
    pub fn first_bh_cut(&self) -> f64 {
        self.options.fdr / self.n_tested().max(1) as f64
    }

    /// Whether significance is attainable at all: [`p_floor`](Self::p_floor) `<=`
    /// [`first_bh_cut`](Self::first_bh_cut). An exact test of few items over many latents cannot reach
    /// it (e.g. 12 items give `p >= 2 / 4096`, above `0.05 / 1000`).
    pub fn is_resolvable(&self) -> bool {
        self.p_floor() <= self.first_bh_cut()
    }

    /// Significant features more active on the positive variant.
    pub fn n_significant_positive(&self) -> usize {
        self.ranked_stats().filter(|s| s.summary.mean > 0.0).count()
    }

    /// Significant features more active on the negative variant.
    pub fn n_significant_negative(&self) -> usize {
        self.ranked_stats().filter(|s| s.summary.mean < 0.0).count()
    }
}

/// Order of effect sizes, largest first, NaN last.
fn by_effect_desc(a: &LatentStats, b: &LatentStats) -> std::cmp::Ordering {
    let key = |s: &LatentStats| {
        if s.summary.effect_size.is_nan() {
            f64::NEG_INFINITY
        } else {
            s.summary.effect_size
        }
    };
    key(b)
        .total_cmp(&key(a))
        .then(b.summary.mean.total_cmp(&a.summary.mean))
        .then(a.feature.cmp(&b.feature))
}

/// Runs `f` over `items` on all cores, keeping the order.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a statistics worker panicked"))
            .collect()
    })
}

/// Runs the hunt on one contrast (see the module docs).
///
/// # Errors
/// [`AnalysisError::InvalidOption`] for an FDR level outside `(0, 1)` or `top_k = 0`;
/// [`AnalysisError::Shape`] when `decoder` does not cover the features.
pub fn hunt(
    contrast: &ContrastName,
    features: &PairedFeatures,
    kind: FeatureKind,
    decoder: Option<&DecoderAnalysis>,
    options: &HuntOptions,
) -> Result<ContrastHunt> {
    validate_hunt_options(options)?;
    if let Some(d) = decoder {
        if d.classes.len() != features.n_features() {
            return Err(AnalysisError::Shape {
                what: "decoder analysis".into(),
                expected: format!("{} latents", features.n_features()),
                actual: format!("{} latents", d.classes.len()),
            });
        }
    }
    let tested: Vec<usize> = (0..features.n_features())
        .filter(|j| features.is_active(*j))
        .collect();
    let mut used = *options;
    if options.auto_resamples {
        used.permutation = options.permutation.resolving(tested.len(), options.fdr);
    }
    let permutation = used.permutation;
    let rows = parallel_map(&tested, |&j| {
        let d = features.differences(j);
        let summary = paired_summary(&d);
        let test = sign_flip_test(&d, &permutation, j as u64);
        let mean_positive = mean(
            &features
                .positive
                .column(j)
                .iter()
                .map(|v| f64::from(*v))
                .collect::<Vec<_>>(),
        );
        let mean_negative = mean(
            &features
                .negative
                .column(j)
                .iter()
                .map(|v| f64::from(*v))
                .collect::<Vec<_>>(),
        );
        (summary, test, mean_positive, mean_negative)
    });
    let p: Vec<f64> = rows.iter().map(|r| r.1.p_value).collect();
    let q = benjamini_hochberg(&p);
    let stats: Vec<LatentStats> = tested
        .iter()
        .zip(rows)
        .zip(q)
        .map(
            |((&feature, (summary, test, mean_positive, mean_negative)), q_value)| LatentStats {
                feature,
                summary,
                mean_positive,
                mean_negative,
                p_value: test.p_value,
                q_value,
                significant: q_value <= options.fdr,
                permutation: test,
                decoder: decoder.map(|d| DecoderInfo::of(d, feature)),
            },
        )
        .collect();
    let mut ranked: Vec<usize> = (0..stats.len()).filter(|i| stats[*i].significant).collect();
    ranked.sort_by(|a, b| by_effect_desc(&stats[*a], &stats[*b]));
    let candidates: Vec<usize> = ranked
        .iter()
        .copied()
        .filter(|i| stats[*i].summary.mean > 0.0)
        .filter(|i| {
            !options.chat_only_candidates
                || stats[*i]
                    .decoder
                    .is_none_or(|d| d.class == LatentClass::ChatOnly)
        })
        .take(options.top_k)
        .collect();
    let by_magnitude = matches!(kind, FeatureKind::ResidualDimension { .. });
    let notebook = notebook_ranking(features, options.notebook_top_n, by_magnitude);
    let floor = permutation.p_floor(features.n_items());
    let first_cut = options.fdr / tested.len().max(1) as f64;
    if !tested.is_empty() && floor > first_cut {
        tracing::warn!(
            contrast = %contrast,
            items = features.n_items(),
            tested = tested.len(),
            "with {} items the smallest attainable p-value is {floor:.2e}, above the first Benjamini-Hochberg \
             cut {first_cut:.2e}: no feature can be significant; use more discovery items",
            features.n_items()
        );
    }
    tracing::info!(
        contrast = %contrast,
        items = features.n_items(),
        tested = stats.len(),
        significant = ranked.len(),
        candidates = candidates.len(),
        "hunt done"
    );
    Ok(ContrastHunt {
        contrast: contrast.clone(),
        kind,
        item_ids: features.item_ids.clone(),
        n_features: features.n_features(),
        stats,
        ranked,
        candidates,
        notebook,
        options: used,
    })
}

pub(crate) fn validate_hunt_options(options: &HuntOptions) -> Result<()> {
    if !(options.fdr > 0.0 && options.fdr < 1.0) {
        return Err(AnalysisError::option(
            "--fdr",
            format!("the FDR level must be in (0, 1), got {}", options.fdr),
        ));
    }
    if options.top_k == 0 {
        return Err(AnalysisError::option("--top-k", "must be at least 1"));
    }
    if options.permutation.exact_max_items > PermutationOptions::EXACT_LIMIT {
        return Err(AnalysisError::option(
            "exact_max_items",
            format!(
                "at most {} (2^{} sign patterns per latent)",
                PermutationOptions::EXACT_LIMIT,
                PermutationOptions::EXACT_LIMIT
            ),
        ));
    }
    Ok(())
}

/// The seed notebook's ranking (section 7) on the same differences: for every item, the `top_n`
/// features with the largest difference (largest `|difference|` with `by_magnitude`, as its
/// residual fallback does); a feature seen in at least two items is kept with the mean and
/// population sd of the scores it was seen with; sorted by that mean, largest first (ties keep the
/// order of first appearance, as Python's stable sort over a dict does).
pub fn notebook_ranking(
    features: &PairedFeatures,
    top_n: usize,
    by_magnitude: bool,
) -> Vec<NotebookEntry> {
    let mut order: Vec<usize> = Vec::new();
    let mut scores: std::collections::HashMap<usize, Vec<f64>> = std::collections::HashMap::new();
    for i in 0..features.n_items() {
        let diff: Vec<f64> = features
            .positive
            .row(i)
            .iter()
            .zip(features.negative.row(i))
            .map(|(p, n)| f64::from(*p) - f64::from(*n))
            .collect();
        let mut idx: Vec<usize> = (0..diff.len()).collect();
        let key = |j: usize| if by_magnitude { diff[j].abs() } else { diff[j] };
        idx.sort_by(|a, b| key(*b).total_cmp(&key(*a)).then(a.cmp(b)));
        for &j in idx.iter().take(top_n) {
            let entry = scores.entry(j).or_default();
            if entry.is_empty() {
                order.push(j);
            }
            entry.push(diff[j]);
        }
    }
    let mut out: Vec<NotebookEntry> = order
        .into_iter()
        .filter_map(|j| {
            let s = scores.remove(&j)?;
            if s.len() < 2 {
                return None;
            }
            let m = mean(&s);
            let var = s.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / s.len() as f64;
            Some(NotebookEntry {
                feature_idx: j,
                mean_score: m,
                std_score: var.sqrt(),
                n_pairs: s.len(),
                scores: s,
            })
        })
        .collect();
    out.sort_by(|a, b| b.mean_score.total_cmp(&a.mean_score));
    out
}

/// A candidate's statistics on the held-out items of its contrast (an out-of-sample replication;
/// one test per candidate, no FDR correction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replication {
    /// Feature index.
    pub feature: usize,
    /// Mean, sd, effect size and sign fraction on the held-out items.
    pub summary: PairedSummary,
    /// Two-sided sign-flip p-value on the held-out items.
    pub p_value: f64,
}

/// [`Replication`] of each of `features_to_check` on `held_out` (empty when there are no held-out items).
pub fn replicate(
    held_out: &PairedFeatures,
    features_to_check: &[usize],
    permutation: &PermutationOptions,
) -> Vec<Replication> {
    if held_out.n_items() == 0 {
        return Vec::new();
    }
    features_to_check
        .iter()
        .map(|&j| {
            let d = held_out.differences(j);
            Replication {
                feature: j,
                summary: paired_summary(&d),
                p_value: sign_flip_test(&d, permutation, j as u64 ^ 0x5eed).p_value,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn name() -> ContrastName {
        ContrastName {
            category: "c".into(),
            positive: "p".into(),
            negative: "n".into(),
        }
    }

    #[test]
    fn notebook_ranking_follows_the_notebook() {
        // 3 items, 4 features; top-2 per item.
        let pos = array![
            [5.0f32, 1.0, 3.0, 0.0],
            [4.0, 0.0, 0.0, 3.5],
            [1.0, 2.0, 0.0, 3.0]
        ];
        let neg = Array2::zeros((3, 4));
        let f = PairedFeatures::new(vec!["a".into(), "b".into(), "c".into()], pos, neg).unwrap();
        let r = notebook_ranking(&f, 2, false);
        // feature 0 seen in items a, b (5, 4); feature 3 in b, c (3.5, 3); 2 and 1 only once.
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].feature_idx, r[0].n_pairs), (0, 2));
        assert_eq!(r[0].mean_score, 4.5);
        assert_eq!(r[0].std_score, 0.5);
        assert_eq!((r[1].feature_idx, r[1].mean_score), (3, 3.25));
    }

    #[test]
    fn inactive_features_are_not_tested_and_shapes_are_checked() {
        let pos = array![[1.0f32, 0.0], [2.0, 0.0], [3.0, 0.0]];
        let neg = array![[0.0f32, 0.0], [0.0, 0.0], [0.5, 0.0]];
        let f = PairedFeatures::new(vec!["a".into(), "b".into(), "c".into()], pos, neg).unwrap();
        let h = hunt(
            &name(),
            &f,
            FeatureKind::CrosscoderLatent,
            None,
            &HuntOptions::default(),
        )
        .unwrap();
        assert_eq!(h.n_tested(), 1);
        assert_eq!(h.stats[0].feature, 0);
        assert!(h.stats_of(1).is_none());
        assert!(PairedFeatures::new(
            vec!["a".into()],
            Array2::zeros((2, 2)),
            Array2::zeros((2, 2))
        )
        .is_err());
        let bad = HuntOptions {
            fdr: 1.5,
            ..HuntOptions::default()
        };
        assert!(hunt(&name(), &f, FeatureKind::CrosscoderLatent, None, &bad).is_err());
    }
}
