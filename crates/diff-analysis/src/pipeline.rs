//! [`Day1`]: the whole analysis of the seed notebook's sections 6-9, done right, on trait objects
//! only (a [`PairedSource`] holding the two models, an optional [`Crosscoder`]), so the same code runs on
//! every backend and in either memory mode.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crosscoder::{Crosscoder, DecoderAnalysis, RelativeNormThresholds, BASE, CHAT};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::{PairedSource, TokenizationMode};
use ndarray::{s, Axis};
use persona_dataset::{Expectation, PersonaDataset};
use serde::{Serialize, Serializer};

use crate::error::Result;
use crate::extract::{extract, prompt_input, ExtractSpec, FeatureSpace};
use crate::hunt::{hunt, ContrastHunt, FeatureKind, HuntOptions, PairedFeatures, Replication};
use crate::plan::{check_crosscoder, plan, Plan};
use crate::pooling::Pooling;
use crate::verify::{
    conclude, fit_threshold, verify_candidate, CandidateVerification, Conclusion,
    VerificationCriteria,
};

/// Options of a [`Day1`] run.
///
/// | option | default |
/// |---|---|
/// | `pooling` | [`Pooling::MeanContent`] |
/// | `tokenization` | [`TokenizationMode::Raw`] (the notebook's) |
/// | `discovery_ratio` | 0.75 (the rest of each contrast's items replicate the candidates; fewer discovery items cannot reach FDR significance over thousands of latents: 12 items give p >= 2^-11) |
/// | `seed` | 0 (split and permutation test) |
/// | `hunt` | [`HuntOptions::default`]: FDR 5%, top 10 |
/// | `criteria` | [`VerificationCriteria::default`]: AUROC >= 0.8, balanced accuracy >= 0.75 |
/// | `thresholds` | [`RelativeNormThresholds::default`] |
/// | `contrasts` | empty = every category with a contrast |
/// | `probes` | empty = [`default_probe`](crate::default_probe) per category |
/// | `residual_model` | 1 (chat), used without a crosscoder |
/// | `encode_rows` | 256 rows per crosscoder call |
/// | `progress` | true (a progress bar on stderr) |
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day1Options {
    /// How a prompt's tokens are pooled.
    pub pooling: Pooling,
    /// Raw prompts or the chat template, for both models.
    pub tokenization: TokenizationMode,
    /// Share of each contrast's items used for discovery (by a stable hash of the item id).
    pub discovery_ratio: f64,
    /// Seed of the split and of the permutation tests.
    pub seed: u64,
    /// Statistics and ranking.
    pub hunt: HuntOptions,
    /// When a candidate passes verification.
    pub criteria: VerificationCriteria,
    /// Decoder classes.
    pub thresholds: RelativeNormThresholds,
    /// Categories to analyse (empty = all with a contrast).
    pub contrasts: Vec<String>,
    /// `(category, probe)` overrides of the verification probe.
    pub probes: Vec<(String, String)>,
    /// Residual stream used without a crosscoder (0 = base, 1 = chat).
    pub residual_model: usize,
    /// Rows per crosscoder call.
    pub encode_rows: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for Day1Options {
    fn default() -> Self {
        Day1Options {
            pooling: Pooling::MeanContent,
            tokenization: TokenizationMode::Raw,
            discovery_ratio: 0.75,
            seed: 0,
            hunt: HuntOptions::default(),
            criteria: VerificationCriteria::default(),
            thresholds: RelativeNormThresholds::default(),
            contrasts: Vec::new(),
            probes: Vec::new(),
            residual_model: CHAT,
            encode_rows: 256,
            progress: true,
        }
    }
}

/// The crosscoder's identity, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrosscoderInfo {
    /// Where it came from (format and path or hub id).
    pub source: String,
    /// Latents `F`.
    pub dict_size: usize,
    /// Width `d`.
    pub d_model: usize,
    /// `relu` or `batch_top_k`.
    pub activation: String,
    /// Code normalisation (`CROSSCODER`, ...).
    pub code_normalization: String,
    /// Input normaliser (`identity`, `scaling_factors`, `mean_std`).
    pub input_normalization: String,
    /// The hook it was trained on, if recorded.
    pub hook: Option<String>,
    /// The layer, if recorded.
    pub layer: Option<usize>,
    /// Model names in index order, if recorded.
    pub models: Vec<String>,
}

impl CrosscoderInfo {
    /// The facts of `cc`.
    pub fn of(cc: &dyn Crosscoder) -> Self {
        let c = cc.config();
        CrosscoderInfo {
            source: c.source.clone().unwrap_or_else(|| "(in memory)".into()),
            dict_size: c.dict_size,
            d_model: c.d_model,
            activation: c.activation.name().into(),
            code_normalization: c.code_normalization.reference_name().into(),
            input_normalization: cc.normalizer().name().into(),
            hook: c.hook.map(|h| h.to_string()),
            layer: c.layer,
            models: c.models.clone(),
        }
    }
}

/// What was run on what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Base model (index 0) name.
    pub base_model: String,
    /// Chat model (index 1) name.
    pub chat_model: String,
    /// The hook read.
    pub hook: String,
    /// Its layer.
    pub layer: Option<usize>,
    /// Residual width.
    pub d_model: usize,
    /// Backend of the models.
    pub backend: String,
    /// The crosscoder, if one was used.
    pub crosscoder: Option<CrosscoderInfo>,
    /// Where the dataset came from.
    pub dataset: String,
}

/// What a token is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// `<bos>`.
    Bos,
    /// A chat-template token.
    Template,
    /// The user's text.
    Content,
}

fn label<S: Serializer>(e: &Expectation, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(e.label())
}

/// A verification prompt's tokens and the candidates' activation on each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizedPrompt {
    /// `ACTIVATE`, `SILENT` or `NEUTRAL`.
    #[serde(serialize_with = "label")]
    pub expected: Expectation,
    /// The prompt text.
    pub prompt: String,
    /// Token strings (`▁` marks a leading space, as in the vocabulary).
    pub tokens: Vec<String>,
    /// What each token is.
    pub roles: Vec<TokenRole>,
    /// Whether the pooling read the token.
    pub pooled: Vec<bool>,
    /// `values[c][t]`: activation of candidate `features[c]` on token `t`.
    pub values: Vec<Vec<f32>>,
}

/// Token-level activations of one probe's candidates on its verification prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeTokens {
    /// The probe.
    pub probe: String,
    /// The candidate features, in column order of `values`.
    pub features: Vec<usize>,
    /// Every verification prompt of the probe.
    pub prompts: Vec<TokenizedPrompt>,
}

impl ProbeTokens {
    /// Column of `feature`.
    pub fn column(&self, feature: usize) -> Option<usize> {
        self.features.iter().position(|f| *f == feature)
    }
}

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Stereo runs, encoding and pooling of the contrast items.
    pub discovery_runs_s: f64,
    /// Statistics (permutation tests, FDR).
    pub statistics_s: f64,
    /// Verification runs and scoring.
    pub verification_s: f64,
    /// Everything.
    pub total_s: f64,
}

/// Everything a [`Day1`] run found.
#[derive(Debug, Clone)]
pub struct Day1Results {
    /// What was run on what.
    pub info: RunInfo,
    /// The options used.
    pub options: Day1Options,
    /// The plan (contrasts, split, probes).
    pub plan: Plan,
    /// Latents or residual dimensions.
    pub kind: FeatureKind,
    /// One hunt per contrast, in plan order.
    pub hunts: Vec<ContrastHunt>,
    /// Per contrast, the candidates' held-out replication (empty without held-out items).
    pub replications: Vec<Vec<Replication>>,
    /// Decoder analysis of the crosscoder (relative norms of every latent).
    pub decoder: Option<DecoderAnalysis>,
    /// Every candidate's verification.
    pub verifications: Vec<CandidateVerification>,
    /// Token-level activations per probe.
    pub tokens: Vec<ProbeTokens>,
    /// The sentence.
    pub conclusion: Conclusion,
    /// Phase timings.
    pub timings: Timings,
}

impl Day1Results {
    /// The verification of `feature` from `contrast`.
    pub fn verification(&self, contrast: &str, feature: usize) -> Option<&CandidateVerification> {
        self.verifications
            .iter()
            .find(|v| v.contrast == contrast && v.feature == feature)
    }

    /// The held-out replication of `feature` in contrast number `c`.
    pub fn replication(&self, c: usize, feature: usize) -> Option<&Replication> {
        self.replications
            .get(c)?
            .iter()
            .find(|r| r.feature == feature)
    }

    /// Writes `day1_summary.json`, `latent_stats.csv`, `token_activations.json`, the figures and
    /// `report.html` to `dir` (created if needed); returns the files written.
    ///
    /// # Errors
    /// [`AnalysisError::Io`](crate::AnalysisError::Io), [`AnalysisError::Figure`](crate::AnalysisError::Figure).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<Vec<std::path::PathBuf>> {
        crate::summary::write_all(self, dir.as_ref())
    }

    /// A concise terminal summary.
    pub fn terminal_summary(&self) -> String {
        crate::summary::terminal_summary(self)
    }
}

/// The seed notebook's sections 6-9 on any backend: the hunt over every contrast, held-out
/// verification through both models and the crosscoder, and the sentence.
///
/// ```no_run
/// # fn demo(runner: &model_pair::StereoRunner, cc: &dyn crosscoder::Crosscoder) -> diff_analysis::Result<()> {
/// use diff_analysis::{Day1, Day1Options};
/// let dataset = persona_dataset::PersonaDataset::shipped();
/// let results = Day1::new(runner, Some(cc), &dataset).options(Day1Options::default()).run()?;
/// println!("{}", results.terminal_summary());
/// results.write("results")?;
/// # Ok(()) }
/// ```
pub struct Day1<'a> {
    runner: &'a dyn PairedSource,
    crosscoder: Option<&'a dyn Crosscoder>,
    dataset: &'a PersonaDataset,
    options: Day1Options,
    dataset_label: String,
}

impl<'a> Day1<'a> {
    /// A run on `runner`'s two models, through `crosscoder` (or, with `None`, on residual
    /// dimensions: the notebook's fallback), over `dataset`.
    pub fn new(
        runner: &'a dyn PairedSource,
        crosscoder: Option<&'a dyn Crosscoder>,
        dataset: &'a PersonaDataset,
    ) -> Self {
        Day1 {
            runner,
            crosscoder,
            dataset,
            options: Day1Options::default(),
            dataset_label: "(in memory)".into(),
        }
    }

    /// Sets the options.
    pub fn options(mut self, options: Day1Options) -> Self {
        self.options = options;
        self
    }

    /// Names the dataset in the summary (e.g. its path, or `shipped`).
    pub fn dataset_label(mut self, label: impl Into<String>) -> Self {
        self.dataset_label = label.into();
        self
    }

    /// Validates everything that can be checked without running a model; returns the plan.
    ///
    /// # Errors
    /// As [`plan`](crate::plan()), plus [`check_crosscoder`].
    pub fn check(&self) -> Result<Plan> {
        let p = plan(self.dataset, &self.options)?;
        if let Some(cc) = self.crosscoder {
            check_crosscoder(cc.config(), self.runner.hook(), self.runner.d_model())?;
        }
        Ok(p)
    }

    fn info(&self) -> RunInfo {
        let hook = self.runner.hook();
        let [base, chat] = self.runner.models();
        RunInfo {
            base_model: base.name,
            chat_model: chat.name,
            hook: hook.to_string(),
            layer: hook.layer(),
            d_model: self.runner.d_model(),
            backend: self.runner.backend().to_string(),
            crosscoder: self.crosscoder.map(CrosscoderInfo::of),
            dataset: self.dataset_label.clone(),
        }
    }

    fn progress_bar(&self, total: u64) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {msg:32} [{bar:36}] {pos}/{len} prompts ({elapsed}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    /// Runs everything (see the crate docs).
    ///
    /// # Errors
    /// Any [`AnalysisError`](crate::AnalysisError): invalid options or dataset (before any run), a
    /// model or crosscoder failure, a pooling that selects no token.
    pub fn run(&self) -> Result<Day1Results> {
        let start = Instant::now();
        let plan = self.check()?;
        let o = &self.options;
        let space = match self.crosscoder {
            Some(cc) => FeatureSpace::Crosscoder(cc),
            None => FeatureSpace::Residual {
                model: o.residual_model,
            },
        };
        let kind = space.kind();
        let decoder = self
            .crosscoder
            .map(|cc| DecoderAnalysis::new(cc, BASE, CHAT, o.thresholds))
            .transpose()?;
        let mut hunt_options = o.hunt;
        hunt_options.permutation.seed = o.seed;
        let spec = ExtractSpec {
            mode: o.tokenization,
            pooling: o.pooling,
            columns: None,
            encode_rows: o.encode_rows,
        };
        let bar = self.progress_bar(plan.n_runs() as u64);
        let mut timings = Timings::default();

        let mut hunts = Vec::new();
        let mut replications = Vec::new();
        let mut thresholds: BTreeMap<(String, usize), f64> = BTreeMap::new();
        for cp in &plan.contrasts {
            let t = Instant::now();
            bar.set_message(format!("hunt: {}", cp.contrast.category));
            let contrast = self.dataset.contrast(&cp.contrast.category)?;
            let pairs = contrast.pairs(self.dataset)?;
            let ordered: Vec<_> = cp
                .discovery
                .iter()
                .chain(&cp.held_out)
                .filter_map(|id| pairs.iter().find(|p| p.item_id == id.as_str()))
                .collect();
            let n = ordered.len();
            let mut inputs = Vec::with_capacity(2 * n);
            let mut texts = Vec::with_capacity(2 * n);
            for side in [true, false] {
                for pair in &ordered {
                    let prompt = if side { pair.positive } else { pair.negative };
                    inputs.push(prompt_input(prompt, o.tokenization));
                    texts.push(prompt.to_plain_text());
                }
            }
            let ex = extract(self.runner, &space, &inputs, &texts, &spec, &bar)?;
            let nd = cp.discovery.len();
            let positive = ex.pooled.slice(s![0..n, ..]);
            let negative = ex.pooled.slice(s![n..2 * n, ..]);
            let discovery = PairedFeatures::new(
                cp.discovery.clone(),
                positive.slice(s![0..nd, ..]).to_owned(),
                negative.slice(s![0..nd, ..]).to_owned(),
            )?;
            let held_out = PairedFeatures::new(
                cp.held_out.clone(),
                positive.slice(s![nd.., ..]).to_owned(),
                negative.slice(s![nd.., ..]).to_owned(),
            )?;
            timings.discovery_runs_s += t.elapsed().as_secs_f64();

            let t = Instant::now();
            bar.set_message(format!("statistics: {}", cp.contrast.category));
            let h = hunt(
                &cp.contrast,
                &discovery,
                kind,
                decoder.as_ref(),
                &hunt_options,
            )?;
            let candidates: Vec<usize> = h.candidate_stats().map(|s| s.feature).collect();
            for &j in &candidates {
                let col = |a: &ndarray::Array2<f32>| -> Vec<f64> {
                    a.column(j).iter().map(|v| f64::from(*v)).collect()
                };
                thresholds.insert(
                    (cp.contrast.category.clone(), j),
                    fit_threshold(&col(&discovery.positive), &col(&discovery.negative)),
                );
            }
            replications.push(crate::hunt::replicate(
                &held_out,
                &candidates,
                &h.options.permutation,
            ));
            hunts.push(h);
            timings.statistics_s += t.elapsed().as_secs_f64();
        }

        let t = Instant::now();
        let mut verifications = Vec::new();
        let mut tokens = Vec::new();
        let probes = plan.probes();
        for (probe, contrasts) in &probes {
            bar.set_message(format!("verification: {probe}"));
            let prompts: Vec<_> = self.dataset.verification_for_probe(probe).collect();
            let mut features: Vec<usize> = Vec::new();
            for h in hunts
                .iter()
                .filter(|h| contrasts.contains(&h.contrast.category))
            {
                for s in h.candidate_stats() {
                    if !features.contains(&s.feature) {
                        features.push(s.feature);
                    }
                }
            }
            if features.is_empty() || prompts.is_empty() {
                bar.inc(prompts.len() as u64);
                continue;
            }
            let inputs: Vec<_> = prompts
                .iter()
                .map(|p| prompt_input(&p.prompt, o.tokenization))
                .collect();
            let texts: Vec<String> = prompts.iter().map(|p| p.prompt.to_plain_text()).collect();
            let vspec = ExtractSpec {
                columns: Some(&features),
                ..spec
            };
            let ex = extract(self.runner, &space, &inputs, &texts, &vspec, &bar)?;
            let labelled: Vec<(Expectation, String)> = prompts
                .iter()
                .zip(&texts)
                .map(|(p, t)| (p.expected, t.clone()))
                .collect();
            for h in hunts
                .iter()
                .filter(|h| contrasts.contains(&h.contrast.category))
            {
                for s in h.candidate_stats() {
                    let c = features
                        .iter()
                        .position(|f| *f == s.feature)
                        .expect("collected above");
                    let acts: Vec<f64> =
                        ex.pooled.column(c).iter().map(|v| f64::from(*v)).collect();
                    let threshold = thresholds[&(h.contrast.category.clone(), s.feature)];
                    verifications.push(verify_candidate(
                        &h.contrast.category,
                        probe,
                        s.feature,
                        threshold,
                        &labelled,
                        &acts,
                        &o.criteria,
                    ));
                }
            }
            let tokenizer = self.runner.tokenizer();
            let tokenized = labelled
                .iter()
                .zip(&ex.tokens)
                .zip(&ex.token_values)
                .map(|(((expected, text), metas), values)| {
                    let ids: Vec<u32> = metas.iter().map(|m| m.token_id).collect();
                    let selected = o.pooling.selected_rows(metas);
                    TokenizedPrompt {
                        expected: *expected,
                        prompt: text.clone(),
                        tokens: tokenizer.tokens(&ids),
                        roles: metas
                            .iter()
                            .map(|m| {
                                if m.is_bos {
                                    TokenRole::Bos
                                } else if m.is_template {
                                    TokenRole::Template
                                } else {
                                    TokenRole::Content
                                }
                            })
                            .collect(),
                        pooled: (0..metas.len()).map(|i| selected.contains(&i)).collect(),
                        values: values.axis_iter(Axis(1)).map(|c| c.to_vec()).collect(),
                    }
                })
                .collect();
            tokens.push(ProbeTokens {
                probe: probe.clone(),
                features,
                prompts: tokenized,
            });
        }
        timings.verification_s = t.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let conclusion = conclude(
            &verifications,
            &hunts,
            kind,
            &probes,
            &o.criteria,
            o.hunt.fdr,
        );
        timings.total_s = start.elapsed().as_secs_f64();
        Ok(Day1Results {
            info: self.info(),
            options: o.clone(),
            plan,
            kind,
            hunts,
            replications,
            decoder,
            verifications,
            tokens,
            conclusion,
            timings,
        })
    }
}
