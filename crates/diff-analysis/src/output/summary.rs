//! `day1_summary.json` (schema: `crates/diff-analysis/SCHEMA.md`), `latent_stats.csv`,
//! `token_activations.json`, and the terminal summary.
//!
//! The summary is a superset of the seed notebook's (`base_model`, `chat_model`, `target_layer`,
//! `n_pairs_analyzed`, `cross_coder_available`, `top_candidates[] {feature_idx, mean_score,
//! std_score, n_pairs}`), so scripts written for the notebook's file keep working. Non-finite numbers
//! (an effect size with `sd = 0`, an undefined AUROC) are written as `null`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crosscoder::LatentClass;
use model_pair::TokenizationMode;
use serde::Serialize;

use crate::error::{AnalysisError, Result};
use crate::hunt::{ContrastHunt, FeatureKind, LatentStats, NotebookEntry, ScalingInfo};
use crate::results::{CrosscoderInfo, Day1Results, Timings};
use crate::stats::PermutationOptions;
use crate::verify::{CandidateVerification, Conclusion, VerificationCriteria};

/// Name of the summary file.
pub const SUMMARY_FILE: &str = "day1_summary.json";
/// Name of the per-feature statistics table.
pub const STATS_FILE: &str = "latent_stats.csv";
/// Name of the token-level activations file.
pub const TOKENS_FILE: &str = "token_activations.json";
/// Name of the report.
pub const REPORT_FILE: &str = "report.html";
/// The candidates' latent dashboards (`latent_dashboard::LatentDashboard`, one per candidate).
pub const DASHBOARDS_FILE: &str = "dashboards.json";
/// `schema` value of the summary.
pub const SCHEMA_NAME: &str = "stereo.day1_summary";
/// `schema_version` of the summary.
pub const SCHEMA_VERSION: u32 = 1;
/// Significant features listed per contrast in the summary (all are in `latent_stats.csv`).
pub const MAX_LISTED_SIGNIFICANT: usize = 100;
/// Entries of the notebook's ranking kept per contrast.
pub const MAX_NOTEBOOK_ENTRIES: usize = 20;
/// Entries of the top-level `top_candidates` (the notebook saved 20).
pub const MAX_TOP_CANDIDATES: usize = 20;

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn finite32(x: f32) -> Option<f32> {
    x.is_finite().then_some(x)
}

/// A candidate's held-out replication.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOutSummary {
    /// Held-out items.
    pub n_items: usize,
    /// Mean difference.
    pub mean: Option<f64>,
    /// Sample sd.
    pub sd: Option<f64>,
    /// `d_z`.
    pub effect_size: Option<f64>,
    /// Fraction of items with a positive difference.
    pub sign_fraction: Option<f64>,
    /// Two-sided sign-flip p-value (uncorrected).
    pub p_value: f64,
}

/// A candidate's verification, in brief (details in `verification[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationBrief {
    /// The probe.
    pub probe: String,
    /// Discovery threshold.
    pub threshold: f64,
    /// AUROC of ACTIVATE vs SILENT.
    pub auroc: Option<f64>,
    /// Mean of the ACTIVATE and SILENT pass rates.
    pub balanced_accuracy: Option<f64>,
    /// Whether it passed.
    pub passed: bool,
}

/// One feature's statistics, with the notebook's field names first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureSummary {
    /// Feature index (the notebook's `feature_idx`).
    pub feature_idx: usize,
    /// Mean difference positive - negative over the discovery items (the notebook's `mean_score`).
    pub mean_score: f64,
    /// Sample sd of the differences, `ddof = 1` (the notebook's `std_score` used `ddof = 0` over
    /// the pairs where the feature was in its top 10; see `notebook_ranking`).
    pub std_score: Option<f64>,
    /// Discovery items (the notebook's `n_pairs`).
    pub n_pairs: usize,
    /// The contrast.
    pub contrast: String,
    /// Rank among the contrast's significant features (1 = largest effect).
    pub rank: usize,
    /// Paired effect size `d_z = mean / sd`.
    pub effect_size: Option<f64>,
    /// Fraction of items with a positive difference.
    pub sign_fraction: f64,
    /// Mean pooled activation on the positive variants.
    pub mean_positive: f64,
    /// Mean pooled activation on the negative variants.
    pub mean_negative: f64,
    /// Two-sided sign-flip p-value.
    pub p_value: f64,
    /// Benjamini-Hochberg q-value.
    pub q_value: f64,
    /// Whether the p-value is exact (all sign patterns).
    pub exact_p: bool,
    /// Decoder class (crosscoder only).
    pub decoder_class: Option<LatentClass>,
    /// `n_chat / (n_base + n_chat)` (crosscoder only).
    pub relative_norm: Option<f32>,
    /// Cosine of the base and chat decoder vectors (crosscoder only).
    pub cosine_similarity: Option<f32>,
    /// Latent Scaling's `nu_error` (null where it did not run or the latent never fired).
    pub nu_error: Option<f32>,
    /// Latent Scaling's `nu_reconstruction`.
    pub nu_reconstruction: Option<f32>,
    /// Robust chat-only by Latent Scaling (null where it did not run).
    pub robust_chat_only: Option<bool>,
    /// Held-out replication (candidates only).
    pub held_out: Option<HeldOutSummary>,
    /// Verification (candidates only).
    pub verification: Option<VerificationBrief>,
}

impl FeatureSummary {
    fn of(contrast: &str, rank: usize, s: &LatentStats) -> Self {
        FeatureSummary {
            feature_idx: s.feature,
            mean_score: s.summary.mean,
            std_score: finite(s.summary.sd),
            n_pairs: s.summary.n,
            contrast: contrast.to_string(),
            rank,
            effect_size: finite(s.summary.effect_size),
            sign_fraction: s.summary.sign_fraction,
            mean_positive: s.mean_positive,
            mean_negative: s.mean_negative,
            p_value: s.p_value,
            q_value: s.q_value,
            exact_p: s.permutation.exact,
            decoder_class: s.decoder.map(|d| d.class),
            relative_norm: s.decoder.and_then(|d| finite32(d.relative_norm)),
            cosine_similarity: s.decoder.and_then(|d| finite32(d.cosine_similarity)),
            nu_error: scaling(s).and_then(|l| finite32(l.nu_error)),
            nu_reconstruction: scaling(s).and_then(|l| finite32(l.nu_reconstruction)),
            robust_chat_only: scaling(s).map(|l| l.robust_chat_only),
            held_out: None,
            verification: None,
        }
    }
}

/// The permutation test as run for one contrast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PermutationSummary {
    /// The options (with `max_resamples` as used).
    #[serde(flatten)]
    pub options: PermutationOptions,
    /// Whether the p-values are exact (few enough items).
    pub exact: bool,
    /// The smallest attainable p-value.
    pub p_floor: f64,
    /// The first Benjamini-Hochberg cut, `fdr / n_tested`.
    pub first_bh_cut: f64,
    /// `p_floor <= first_bh_cut`: whether any feature could be significant at all.
    pub resolvable: bool,
}

/// One contrast's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContrastSummary {
    /// The category.
    pub category: String,
    /// Positive variant.
    pub positive: String,
    /// Negative variant.
    pub negative: String,
    /// Verification probe, if any.
    pub probe: Option<String>,
    /// Discovery item ids.
    pub discovery_items: Vec<String>,
    /// Held-out item ids.
    pub held_out_items: Vec<String>,
    /// Features in total.
    pub n_features: usize,
    /// Features tested (active anywhere).
    pub n_tested: usize,
    /// Features with `q <= fdr`.
    pub n_significant: usize,
    /// ... of which more active on the positive variant.
    pub n_significant_positive: usize,
    /// ... of which more active on the negative variant.
    pub n_significant_negative: usize,
    /// The permutation test.
    pub permutation: PermutationSummary,
    /// The candidates (top-k significant with a positive effect), best first.
    pub candidates: Vec<FeatureSummary>,
    /// Significant features by effect size (at most 100; all are in `latent_stats.csv`).
    pub significant: Vec<FeatureSummary>,
    /// Whether `significant` was cut.
    pub significant_truncated: bool,
    /// The notebook's ranking on the same differences (first 20).
    pub notebook_ranking: Vec<NotebookEntry>,
}

/// Pooling, named and described.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolingSummary {
    /// `mean`, `max`, `last`, `template` or `mean-all`.
    pub name: String,
    /// What it pools.
    pub description: String,
}

/// The dataset and split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSummary {
    /// Path or `shipped`.
    pub source: String,
    /// Items in the dataset.
    pub n_items: usize,
    /// Discovery ratio.
    pub discovery_ratio: f64,
    /// Split and permutation seed.
    pub seed: u64,
}

/// The statistical methods, in words and numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatisticsSummary {
    /// The per-item quantity.
    pub difference: String,
    /// The test.
    pub test: String,
    /// Standard deviation convention.
    pub sd: String,
    /// Effect size.
    pub effect_size: String,
    /// Multiple-testing correction.
    pub multiple_testing: String,
    /// FDR level.
    pub fdr: f64,
    /// Which features are tested.
    pub tested: String,
    /// Ranking and candidates.
    pub ranking: String,
    /// Candidates per contrast.
    pub top_k: usize,
    /// Verification threshold rule.
    pub threshold_rule: String,
}

/// The whole `day1_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day1Summary {
    /// `stereo.day1_summary`.
    pub schema: String,
    /// 1.
    pub schema_version: u32,
    /// Base model (index 0).
    pub base_model: String,
    /// Chat model (index 1).
    pub chat_model: String,
    /// Layer of the hook.
    pub target_layer: Option<usize>,
    /// Discovery items over all contrasts.
    pub n_pairs_analyzed: usize,
    /// Whether a crosscoder was used (else residual dimensions).
    pub cross_coder_available: bool,
    /// Candidates of every contrast, by effect size (at most 20).
    pub top_candidates: Vec<FeatureSummary>,
    /// The hook.
    pub hook: String,
    /// Residual width.
    pub d_model: usize,
    /// Backend of the models.
    pub backend: String,
    /// What the features are.
    pub feature_kind: FeatureKind,
    /// The same, in words.
    pub feature_label: String,
    /// The crosscoder.
    pub crosscoder: Option<CrosscoderInfo>,
    /// Dataset and split.
    pub dataset: DatasetSummary,
    /// Raw or chat-templated prompts.
    pub tokenization: TokenizationMode,
    /// The pooling.
    pub pooling: PoolingSummary,
    /// The statistical methods.
    pub statistics: StatisticsSummary,
    /// When a candidate passes.
    pub verification_criteria: VerificationCriteria,
    /// One entry per contrast.
    pub contrasts: Vec<ContrastSummary>,
    /// Every candidate's verification, prompt by prompt.
    pub verification: Vec<CandidateVerification>,
    /// The conclusion, per probe.
    pub conclusion: Conclusion,
    /// The headline sentence (same as `conclusion.sentence`).
    pub sentence: String,
    /// The causal tests of the concluded latents (`day1 --causal`), one per probe; absent without.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causal: Vec<crate::causal::CausalEvidence>,
    /// The KL evaluation of the concluded latents (`day1 --causal`; the layout of `kl_evaluation.json`,
    /// crates/steering/SCHEMA.md); absent without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_evaluation: Option<steering::KlEvaluation>,
    /// Sycophancy as behaviour (`day1 --causal`; the layout of `preference.json`,
    /// crates/steering/SCHEMA.md); absent without, or without a concluded sycophancy latent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<steering::PreferenceResults>,
    /// The Activation Difference Lens (`day1 --no-crosscoder`; the layout of `adl/adl.json`,
    /// crates/activation-diff-lens/SCHEMA.md); absent without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adl: Option<activation_diff_lens::output::AdlSummary>,
    /// The circuits of the verified candidates (`day1 --circuits`; each the layout of
    /// `circuits/latent_{j}/circuit.json`, crates/circuits/SCHEMA.md); absent without.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub circuits: Vec<circuits::output::CircuitReport>,
    /// Files written beside the summary.
    pub files: Vec<String>,
    /// Phase timings.
    pub timings: Timings,
}

fn contrast_summary(r: &Day1Results, c: usize, h: &ContrastHunt) -> ContrastSummary {
    let cp = &r.plan.contrasts[c];
    let cat = &h.contrast.category;
    let candidates: Vec<FeatureSummary> = h
        .candidate_stats()
        .enumerate()
        .map(|(i, s)| {
            let rank = h
                .ranked
                .iter()
                .position(|k| h.stats[*k].feature == s.feature)
                .map_or(i + 1, |p| p + 1);
            let mut f = FeatureSummary::of(cat, rank, s);
            f.held_out = r.replication(c, s.feature).map(|rep| HeldOutSummary {
                n_items: rep.summary.n,
                mean: finite(rep.summary.mean),
                sd: finite(rep.summary.sd),
                effect_size: finite(rep.summary.effect_size),
                sign_fraction: finite(rep.summary.sign_fraction),
                p_value: rep.p_value,
            });
            f.verification = r.verification(cat, s.feature).map(|v| VerificationBrief {
                probe: v.probe.clone(),
                threshold: v.threshold,
                auroc: v.auroc,
                balanced_accuracy: v.balanced_accuracy,
                passed: v.passed,
            });
            f
        })
        .collect();
    let significant: Vec<FeatureSummary> = h
        .ranked_stats()
        .enumerate()
        .take(MAX_LISTED_SIGNIFICANT)
        .map(|(i, s)| FeatureSummary::of(cat, i + 1, s))
        .collect();
    let n = h.item_ids.len();
    let p = h.options.permutation;
    debug_assert_eq!(p.p_floor(n), h.p_floor());
    ContrastSummary {
        category: cat.clone(),
        positive: h.contrast.positive.clone(),
        negative: h.contrast.negative.clone(),
        probe: cp.probe.clone(),
        discovery_items: cp.discovery.clone(),
        held_out_items: cp.held_out.clone(),
        n_features: h.n_features,
        n_tested: h.n_tested(),
        n_significant: h.ranked.len(),
        n_significant_positive: h.n_significant_positive(),
        n_significant_negative: h.n_significant_negative(),
        permutation: PermutationSummary {
            options: p,
            exact: n <= p.exact_max_items.min(PermutationOptions::EXACT_LIMIT),
            p_floor: h.p_floor(),
            first_bh_cut: h.first_bh_cut(),
            resolvable: h.is_resolvable(),
        },
        candidates,
        significant_truncated: h.ranked.len() > MAX_LISTED_SIGNIFICANT,
        significant,
        notebook_ranking: h
            .notebook
            .iter()
            .take(MAX_NOTEBOOK_ENTRIES)
            .cloned()
            .collect(),
    }
}

/// Builds the summary of `r` (`files` lists what was written beside it).
pub fn summarize(r: &Day1Results, files: Vec<String>) -> Day1Summary {
    let contrasts: Vec<ContrastSummary> = r
        .hunts
        .iter()
        .enumerate()
        .map(|(c, h)| contrast_summary(r, c, h))
        .collect();
    let mut top: Vec<FeatureSummary> = contrasts
        .iter()
        .flat_map(|c| c.candidates.iter().cloned())
        .collect();
    top.sort_by(|a, b| {
        let key = |f: &FeatureSummary| f.effect_size.unwrap_or(f64::INFINITY);
        key(b).total_cmp(&key(a))
    });
    top.truncate(MAX_TOP_CANDIDATES);
    let o = &r.options;
    Day1Summary {
        schema: SCHEMA_NAME.into(),
        schema_version: SCHEMA_VERSION,
        base_model: r.info.base_model.clone(),
        chat_model: r.info.chat_model.clone(),
        target_layer: r.info.layer,
        n_pairs_analyzed: r.plan.contrasts.iter().map(|c| c.discovery.len()).sum(),
        cross_coder_available: r.info.crosscoder.is_some(),
        top_candidates: top,
        hook: r.info.hook.clone(),
        d_model: r.info.d_model,
        backend: r.info.backend.clone(),
        feature_kind: r.kind,
        feature_label: r.kind.label(),
        crosscoder: r.info.crosscoder.clone(),
        dataset: DatasetSummary {
            source: r.info.dataset.clone(),
            n_items: r.plan.dataset_items,
            discovery_ratio: o.discovery_ratio,
            seed: o.seed,
        },
        tokenization: o.tokenization,
        pooling: PoolingSummary {
            name: o.pooling.name().into(),
            description: o.pooling.description().into(),
        },
        statistics: StatisticsSummary {
            difference: "per item: pooled(positive variant) - pooled(negative variant), same item".into(),
            test: "two-sided paired sign-flip permutation test of the mean difference: exact enumeration \
                   for n <= exact_max_items, else Monte Carlo with Besag-Clifford sequential stopping \
                   (p = h/l at the h-th exceedance, else (b+1)/(m+1))"
                .into(),
            sd: "sample standard deviation, ddof = 1".into(),
            effect_size: "paired Cohen's d_z = mean / sd".into(),
            multiple_testing: "Benjamini-Hochberg over the tested features of each contrast".into(),
            fdr: o.hunt.fdr,
            tested: "features whose pooled value is non-zero for at least one discovery prompt of the contrast"
                .into(),
            ranking: format!(
                "significant features by d_z, largest first; candidates = the first top_k with a positive \
                 mean difference{}",
                if o.hunt.chat_only_candidates {
                    " and, for crosscoder latents, the chat-only decoder class"
                } else {
                    " (every decoder class)"
                }
            ),
            top_k: o.hunt.top_k,
            threshold_rule: "midpoint of the candidate's mean pooled activation on the positive and on the \
                             negative discovery prompts"
                .into(),
        },
        verification_criteria: o.criteria,
        contrasts,
        verification: r.verifications.clone(),
        conclusion: r.conclusion.clone(),
        sentence: r.conclusion.sentence.clone(),
        causal: r.causal.clone(),
        kl_evaluation: r.kl_evaluation.clone(),
        behaviour: r.behaviour.clone(),
        adl: r.adl.clone(),
        circuits: r.circuits.clone(),
        files,
        timings: r.timings,
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else if x.is_nan() {
        String::new()
    } else if x > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

/// Latent Scaling's verdict on a tested feature, when it ran.
fn scaling(s: &LatentStats) -> Option<ScalingInfo> {
    s.decoder.and_then(|d| d.latent_scaling)
}

/// `latent_stats.csv`: one row per tested feature per contrast.
pub fn stats_csv(r: &Day1Results) -> String {
    let mut out = String::from(
        "contrast,feature,n_items,mean,sd,effect_size,sign_fraction,mean_positive,mean_negative,p_value,q_value,\
         significant,exact_p,resamples,decoder_class,relative_norm,cosine_similarity,nu_error,nu_reconstruction,\
         robust_chat_only\n",
    );
    for h in &r.hunts {
        for s in &h.stats {
            let class = s
                .decoder
                .map(|d| {
                    serde_json::to_value(d.class)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&h.contrast.category),
                s.feature,
                s.summary.n,
                num(s.summary.mean),
                num(s.summary.sd),
                num(s.summary.effect_size),
                num(s.summary.sign_fraction),
                num(s.mean_positive),
                num(s.mean_negative),
                num(s.p_value),
                num(s.q_value),
                s.significant,
                s.permutation.exact,
                s.permutation.resamples,
                class,
                s.decoder
                    .map_or(String::new(), |d| num(f64::from(d.relative_norm))),
                s.decoder
                    .map_or(String::new(), |d| num(f64::from(d.cosine_similarity))),
                scaling(s).map_or(String::new(), |l| num(f64::from(l.nu_error))),
                scaling(s).map_or(String::new(), |l| num(f64::from(l.nu_reconstruction))),
                scaling(s).map_or(String::new(), |l| l.robust_chat_only.to_string()),
            );
        }
    }
    out
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| AnalysisError::io(path, e))
}

fn json_string<T: Serialize>(value: &T, path: &Path) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| AnalysisError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes every output of `r` to `dir` (see [`Day1Results::write`]).
pub(crate) fn write_all(r: &Day1Results, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| AnalysisError::io(dir, e))?;
    let figures = crate::output::plots::draw_all(r, dir)?;
    let mut names: Vec<String> = figures
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.extend([STATS_FILE, TOKENS_FILE, REPORT_FILE].map(String::from));
    if !r.dashboards.is_empty() {
        names.push(DASHBOARDS_FILE.into());
    }
    // The ADL's and the circuits' own files go to subdirectories first: the report embeds their figures.
    let companions = crate::output::companions::write_companions(r, dir)?;
    names.extend(companions.names.iter().cloned());
    let summary = summarize(r, names);

    let summary_path = dir.join(SUMMARY_FILE);
    write_file(
        &summary_path,
        json_string(&summary, &summary_path)?.as_bytes(),
    )?;
    let stats_path = dir.join(STATS_FILE);
    write_file(&stats_path, stats_csv(r).as_bytes())?;
    let tokens_path = dir.join(TOKENS_FILE);
    write_file(
        &tokens_path,
        json_string(&r.tokens, &tokens_path)?.as_bytes(),
    )?;
    let report_path = dir.join(REPORT_FILE);
    let html = crate::output::report::render(r, &summary, &figures, &companions)?;
    write_file(&report_path, html.as_bytes())?;

    let mut written = vec![summary_path, stats_path, tokens_path, report_path];
    if !r.dashboards.is_empty() {
        let path = dir.join(DASHBOARDS_FILE);
        write_file(&path, json_string(&r.dashboards, &path)?.as_bytes())?;
        written.push(path);
    }
    written.extend(figures);
    written.extend(companions.files);
    tracing::info!(dir = %dir.display(), files = written.len(), "results written");
    Ok(written)
}

fn class_name(c: Option<LatentClass>) -> String {
    c.and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The concise terminal summary of a run.
pub fn terminal_summary(r: &Day1Results) -> String {
    let mut s = String::new();
    let feats = match (&r.info.crosscoder, r.kind) {
        (Some(cc), _) => format!("crosscoder latents (F = {}, {})", cc.dict_size, cc.source),
        (None, kind) => kind.label(),
    };
    let _ = writeln!(
        s,
        "day1: {} (base) vs {} (chat) at {}: {feats}",
        r.info.base_model, r.info.chat_model, r.info.hook
    );
    let _ = writeln!(
        s,
        "  pooling {}, {} prompts, FDR {:.0}% (Benjamini-Hochberg), discovery ratio {}, seed {}",
        r.options.pooling,
        match r.options.tokenization {
            TokenizationMode::Raw => "raw",
            TokenizationMode::ChatTemplate => "chat-templated",
        },
        r.options.hunt.fdr * 100.0,
        r.options.discovery_ratio,
        r.options.seed
    );
    for (c, h) in r.hunts.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {}: {} items, {} tested, {} significant ({} up, {} down){}",
            h.contrast,
            h.item_ids.len(),
            h.n_tested(),
            h.ranked.len(),
            h.n_significant_positive(),
            h.n_significant_negative(),
            if h.is_resolvable() {
                String::new()
            } else {
                format!(
                    "  [underpowered: smallest p {:.1e} > first BH cut {:.1e}]",
                    h.p_floor(),
                    h.first_bh_cut()
                )
            }
        );
        for st in h.candidate_stats().take(3) {
            let v = r.verification(&h.contrast.category, st.feature);
            let _ = writeln!(
                s,
                "    {} #{:<6} d_z {:>6.2}  mean {:>8.3}  q {:.1e}  {}{}{}",
                r.kind.noun(),
                st.feature,
                st.summary.effect_size,
                st.summary.mean,
                st.q_value,
                class_name(st.decoder.map(|d| d.class)),
                r.replication(c, st.feature)
                    .map_or(String::new(), |rep| format!(
                        "  held-out d_z {:.2}",
                        rep.summary.effect_size
                    )),
                v.map_or(String::new(), |v| format!(
                    "  AUROC {}{}",
                    v.auroc.map_or("n/a".into(), |a| format!("{a:.2}")),
                    if v.passed { " (passed)" } else { "" }
                )),
            );
        }
    }
    crate::output::companions::terminal_lines(r, &mut s);
    let _ = writeln!(s, "=> {}", r.conclusion.sentence);
    let _ = writeln!(
        s,
        "  {:.1} s (runs {:.1} s, statistics {:.1} s, verification {:.1} s)",
        r.timings.total_s,
        r.timings.discovery_runs_s,
        r.timings.statistics_s,
        r.timings.verification_s
    );
    s
}
