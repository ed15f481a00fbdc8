//! [`Day1`]: the whole analysis of the seed notebook's sections 6-9, done right, on trait objects
//! only (a [`PairedSource`] holding the two models, an optional [`Crosscoder`]), so the same code runs on
//! every backend and in either memory mode.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crosscoder::{
    Crosscoder, DecoderAnalysis, LatentScaling, LatentScalingResult, RobustThresholds, BASE, CHAT,
};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::PairedSource;
use ndarray::{s, Axis};
use persona_dataset::{Expectation, PersonaDataset};

use latent_dashboard::{
    attach_lens, build_dashboards, DashboardOptions, LatentDashboard, PrecomputedValues,
};

use crate::confounds::{confound_results, ConfoundPrompt};
use crate::error::Result;
use crate::extract::{extract, prompt_input, ExtractSpec, Extracted, FeatureSpace};
use crate::hunt::{hunt, ContrastHunt, PairedFeatures, Replication, ScalingInfo};
use crate::lexical::{lexical_baseline, LexicalBaseline, TokenizedPrompt as LexicalPrompt};
use crate::options::Day1Options;
use crate::plan::{check_crosscoder, plan, ContrastPlan, Plan};
use crate::pooling::Pooling;
use crate::results::{
    CrosscoderInfo, Day1Results, ProbeTokens, RunInfo, Timings, TokenRole, TokenizedPrompt,
};
use crate::verify::{conclude, fit_threshold, verify_candidate, CandidateVerification};

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

    /// Runs everything (see the crate docs): the discovery phase (hunt and replication per contrast), the
    /// verification phase (per probe, on held-out prompts), then the conclusion.
    ///
    /// # Errors
    /// Any [`AnalysisError`](crate::AnalysisError): invalid options or dataset (before any run), a
    /// model or crosscoder failure, a pooling that selects no token.
    pub fn run(&self) -> Result<Day1Results> {
        let start = Instant::now();
        let plan = self.check()?;
        let options = &self.options;
        let space = match self.crosscoder {
            Some(cc) => FeatureSpace::Crosscoder(cc),
            None => FeatureSpace::Residual {
                model: options.residual_model,
            },
        };
        let kind = space.kind();
        let decoder = self
            .crosscoder
            .map(|cc| DecoderAnalysis::new(cc, BASE, CHAT, options.thresholds))
            .transpose()?;
        let scaling = self
            .crosscoder
            .filter(|_| options.latent_scaling)
            .map(|cc| LatentScaling::new(cc, None).map(Mutex::new))
            .transpose()?;
        let run = PhaseContext {
            space,
            spec: ExtractSpec {
                mode: options.tokenization,
                pooling: options.pooling,
                columns: None,
                encode_rows: options.encode_rows,
                latent_scaling: scaling.as_ref(),
            },
            bar: self.progress_bar(plan.n_runs() as u64),
        };
        let mut timings = Timings::default();
        let mut discovery = self.discover(&plan, &run, decoder.as_ref(), &mut timings)?;
        if let (Some(scaling), Some(decoder)) = (&scaling, &decoder) {
            let result = scaling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .result();
            tag_latent_scaling(&mut discovery.hunts, &result, decoder, &options.robust);
        }

        let verification_start = Instant::now();
        let probes = plan.probes();
        let mut verifications = Vec::new();
        let mut tokens = Vec::new();
        let mut dashboards: Vec<LatentDashboard> = Vec::new();
        for (probe, contrasts) in &probes {
            if let Some(verified) = self.verify_probe(probe, contrasts, &discovery, &run)? {
                verifications.extend(verified.verifications);
                tokens.push(verified.tokens);
                for d in verified.dashboards {
                    if !dashboards.iter().any(|e| e.latent == d.latent) {
                        dashboards.push(d);
                    }
                }
            }
        }
        if let (Some(cc), false) = (self.crosscoder, dashboards.is_empty()) {
            // The logit lens, through the models that stayed loaded with their unembedding.
            let lens_model = |i: usize| self.runner.loaded_model(i).filter(|m| m.has_unembedding());
            attach_lens(
                &mut dashboards,
                cc,
                [lens_model(BASE), lens_model(CHAT)],
                self.runner.tokenizer(),
                10,
            )?;
        }
        timings.verification_s = verification_start.elapsed().as_secs_f64();
        run.bar.finish_and_clear();
        let conclusion = conclude(
            &verifications,
            &discovery.hunts,
            kind,
            &probes,
            &options.criteria,
            options.hunt.fdr,
        );
        timings.total_s = start.elapsed().as_secs_f64();
        Ok(Day1Results {
            info: self.info(),
            options: options.clone(),
            plan,
            kind,
            hunts: discovery.hunts,
            replications: discovery.replications,
            decoder,
            verifications,
            tokens,
            conclusion,
            causal: Vec::new(),
            kl_evaluation: None,
            behaviour: None,
            adl: None,
            circuits: Vec::new(),
            dashboards,
            timings,
        })
    }

    /// The discovery phase: per contrast, both sides through both models, the hunt on the discovery items,
    /// a threshold per candidate, and the replication on the held-out items.
    fn discover(
        &self,
        plan: &Plan,
        run: &PhaseContext<'_>,
        decoder: Option<&DecoderAnalysis>,
        timings: &mut Timings,
    ) -> Result<Discovery> {
        let mut hunt_options = self.options.hunt;
        hunt_options.permutation.seed = self.options.seed;
        let mut discovery = Discovery::default();
        for contrast_plan in &plan.contrasts {
            let runs_start = Instant::now();
            let category = &contrast_plan.contrast.category;
            run.bar.set_message(format!("hunt: {category}"));
            let (found, held_out) = self.contrast_features(contrast_plan, run)?;
            timings.discovery_runs_s += runs_start.elapsed().as_secs_f64();

            let statistics_start = Instant::now();
            run.bar.set_message(format!("statistics: {category}"));
            let contrast_hunt = hunt(
                &contrast_plan.contrast,
                &found,
                run.space.kind(),
                decoder,
                &hunt_options,
            )?;
            let candidates: Vec<usize> =
                contrast_hunt.candidate_stats().map(|s| s.feature).collect();
            for &feature in &candidates {
                let column = |a: &ndarray::Array2<f32>| -> Vec<f64> {
                    a.column(feature).iter().map(|v| f64::from(*v)).collect()
                };
                discovery.thresholds.insert(
                    (category.clone(), feature),
                    fit_threshold(&column(&found.positive), &column(&found.negative)),
                );
            }
            discovery.replications.push(crate::hunt::replicate(
                &held_out,
                &candidates,
                &contrast_hunt.options.permutation,
            ));
            discovery.hunts.push(contrast_hunt);
            timings.statistics_s += statistics_start.elapsed().as_secs_f64();
        }
        Ok(discovery)
    }

    /// One contrast's pooled features: `(discovery items, held-out items)`, positive and negative side each.
    fn contrast_features(
        &self,
        contrast_plan: &ContrastPlan,
        run: &PhaseContext<'_>,
    ) -> Result<(PairedFeatures, PairedFeatures)> {
        let contrast = self.dataset.contrast(&contrast_plan.contrast.category)?;
        let pairs = contrast.pairs(self.dataset)?;
        let ordered: Vec<_> = contrast_plan
            .discovery
            .iter()
            .chain(&contrast_plan.held_out)
            .filter_map(|id| pairs.iter().find(|p| p.item_id == id.as_str()))
            .collect();
        let n = ordered.len();
        let mut inputs = Vec::with_capacity(2 * n);
        let mut texts = Vec::with_capacity(2 * n);
        for positive_side in [true, false] {
            for pair in &ordered {
                let prompt = if positive_side {
                    pair.positive
                } else {
                    pair.negative
                };
                inputs.push(prompt_input(prompt, self.options.tokenization));
                texts.push(prompt.to_plain_text());
            }
        }
        let extracted = extract(
            self.runner,
            &run.space,
            &inputs,
            &texts,
            &run.spec,
            &run.bar,
        )?;
        let n_discovery = contrast_plan.discovery.len();
        let positive = extracted.pooled.slice(s![0..n, ..]);
        let negative = extracted.pooled.slice(s![n..2 * n, ..]);
        let found = PairedFeatures::new(
            contrast_plan.discovery.clone(),
            positive.slice(s![0..n_discovery, ..]).to_owned(),
            negative.slice(s![0..n_discovery, ..]).to_owned(),
        )?;
        let held_out = PairedFeatures::new(
            contrast_plan.held_out.clone(),
            positive.slice(s![n_discovery.., ..]).to_owned(),
            negative.slice(s![n_discovery.., ..]).to_owned(),
        )?;
        Ok((found, held_out))
    }

    /// The contrast's best single-token detector from its discovery items, scored on `prompts`.
    fn lexical_baseline(
        &self,
        hunt: &ContrastHunt,
        prompts: &[&persona_dataset::VerificationPrompt],
    ) -> Result<Option<LexicalBaseline>> {
        let mode = self.options.tokenization;
        let tokenizer = self.runner.tokenizer();
        let ids = |p: &persona_dataset::PromptText| -> Result<Vec<u32>> {
            Ok(model_pair::tokenize_prompt(tokenizer, &prompt_input(p, mode), mode)?.ids)
        };
        let contrast = self.dataset.contrast(&hunt.contrast.category)?;
        let (mut positive, mut negative) = (Vec::new(), Vec::new());
        for pair in contrast.pairs(self.dataset)? {
            if hunt.item_ids.iter().any(|id| id == pair.item_id) {
                positive.push(ids(pair.positive)?);
                negative.push(ids(pair.negative)?);
            }
        }
        let tokenized = prompts
            .iter()
            .map(|p| {
                Ok(LexicalPrompt {
                    set: p.set.as_deref(),
                    expected: p.expected,
                    ids: ids(&p.prompt)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let spell = |t: u32| tokenizer.tokens(&[t]).pop().unwrap_or_default();
        Ok(lexical_baseline(&positive, &negative, &tokenized, &spell))
    }

    /// The verification of one probe: every candidate of its contrasts on the probe's held-out prompts, and
    /// the per-token values shown in the report. `None` when there is no candidate or no prompt.
    fn verify_probe(
        &self,
        probe: &str,
        contrasts: &[String],
        discovery: &Discovery,
        run: &PhaseContext<'_>,
    ) -> Result<Option<ProbeVerification>> {
        run.bar.set_message(format!("verification: {probe}"));
        let prompts: Vec<_> = self.dataset.verification_for_probe(probe).collect();
        let probe_hunts: Vec<&ContrastHunt> = discovery
            .hunts
            .iter()
            .filter(|h| contrasts.contains(&h.contrast.category))
            .collect();
        let mut features: Vec<usize> = Vec::new();
        for stats in probe_hunts.iter().flat_map(|h| h.candidate_stats()) {
            if !features.contains(&stats.feature) {
                features.push(stats.feature);
            }
        }
        if features.is_empty() || prompts.is_empty() {
            run.bar.inc(prompts.len() as u64);
            return Ok(None);
        }
        let inputs: Vec<_> = prompts
            .iter()
            .map(|p| prompt_input(&p.prompt, self.options.tokenization))
            .collect();
        let texts: Vec<String> = prompts.iter().map(|p| p.prompt.to_plain_text()).collect();
        let spec = ExtractSpec {
            columns: Some(&features),
            ..run.spec
        };
        let extracted = extract(self.runner, &run.space, &inputs, &texts, &spec, &run.bar)?;
        // Direct prompts decide the verdict; confound sets (a `set` name) are reported apart.
        let direct: Vec<usize> = (0..prompts.len())
            .filter(|i| prompts[*i].set.is_none())
            .collect();
        let labelled: Vec<(Expectation, String)> = direct
            .iter()
            .map(|&i| (prompts[i].expected, texts[i].clone()))
            .collect();
        let mut verifications = Vec::new();
        let has_confounds = prompts.iter().any(|p| p.set.is_some());
        for contrast_hunt in &probe_hunts {
            let category = &contrast_hunt.contrast.category;
            let lexical = if has_confounds {
                self.lexical_baseline(contrast_hunt, &prompts)?
            } else {
                None
            };
            for stats in contrast_hunt.candidate_stats() {
                let column = features
                    .iter()
                    .position(|f| *f == stats.feature)
                    .expect("collected above");
                let all: Vec<f64> = extracted
                    .pooled
                    .column(column)
                    .iter()
                    .map(|v| f64::from(*v))
                    .collect();
                let activations: Vec<f64> = direct.iter().map(|&i| all[i]).collect();
                let mut v = verify_candidate(
                    category,
                    probe,
                    stats.feature,
                    discovery.thresholds[&(category.clone(), stats.feature)],
                    &labelled,
                    &activations,
                    &self.options.criteria,
                );
                let confounds: Vec<ConfoundPrompt> = prompts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        p.set.as_ref().map(|set| ConfoundPrompt {
                            set: set.clone(),
                            expected: p.expected,
                            text: texts[i].clone(),
                            activation: all[i],
                        })
                    })
                    .collect();
                (v.confounds, v.confound_verdict) = confound_results(
                    &v,
                    &confounds,
                    self.options.criteria.min_balanced_accuracy,
                    lexical.as_ref(),
                );
                v.lexical = lexical.clone();
                verifications.push(v);
            }
        }
        let dashboards = match (&run.space, &self.options.dashboards) {
            (FeatureSpace::Crosscoder(_), Some(options)) => {
                probe_dashboards(&extracted, &features, self.runner.tokenizer(), options)?
            }
            _ => Vec::new(),
        };
        let prompts = tokenized_prompts(
            &labelled,
            &extracted,
            self.options.pooling,
            self.runner.tokenizer(),
        );
        let tokens = ProbeTokens {
            probe: probe.to_string(),
            features,
            prompts,
        };
        Ok(Some(ProbeVerification {
            verifications,
            tokens,
            dashboards,
        }))
    }
}

/// One probe's verification: its candidates' verifications, the per-token values shown in the report,
/// and the candidates' dashboards.
struct ProbeVerification {
    verifications: Vec<CandidateVerification>,
    tokens: ProbeTokens,
    dashboards: Vec<LatentDashboard>,
}

/// What every phase of a run shares: the feature space, how prompts become features, the progress bar.
struct PhaseContext<'a> {
    space: FeatureSpace<'a>,
    spec: ExtractSpec<'a>,
    bar: ProgressBar,
}

/// The discovery phase's results.
#[derive(Default)]
struct Discovery {
    /// One hunt per contrast, in plan order.
    hunts: Vec<ContrastHunt>,
    /// The held-out replication of each hunt's candidates.
    replications: Vec<Vec<Replication>>,
    /// The discovery threshold of each `(contrast, candidate)`.
    thresholds: BTreeMap<(String, usize), f64>,
}

/// The dashboards of `features` over the verification prompts of one probe (their per-token values).
fn probe_dashboards(
    extracted: &Extracted,
    features: &[usize],
    tokenizer: &gemma_model::GemmaTokenizer,
    options: &DashboardOptions,
) -> Result<Vec<LatentDashboard>> {
    let tokens: Vec<model_pair::TokenMeta> = extracted
        .tokens
        .iter()
        .enumerate()
        .flat_map(|(prompt, metas)| {
            metas
                .iter()
                .map(move |m| model_pair::TokenMeta { prompt, ..*m })
        })
        .collect();
    let views: Vec<_> = extracted.token_values.iter().map(|v| v.view()).collect();
    let values = ndarray::concatenate(Axis(0), &views).map_err(|e| {
        crate::error::AnalysisError::option("dashboards", format!("per-token values: {e}"))
    })?;
    let source = PrecomputedValues::new(tokens, features.to_vec(), values)?;
    Ok(build_dashboards(
        &source, features, tokenizer, options, false,
    )?)
}

/// The verification prompts with their tokens, roles, pooled rows and per-token feature values.
fn tokenized_prompts(
    labelled: &[(Expectation, String)],
    extracted: &Extracted,
    pooling: Pooling,
    tokenizer: &gemma_model::GemmaTokenizer,
) -> Vec<TokenizedPrompt> {
    labelled
        .iter()
        .zip(&extracted.tokens)
        .zip(&extracted.token_values)
        .map(|(((expected, text), metas), values)| {
            let ids: Vec<u32> = metas.iter().map(|m| m.token_id).collect();
            let selected = pooling.selected_rows(metas);
            TokenizedPrompt {
                expected: *expected,
                prompt: text.clone(),
                tokens: tokenizer.tokens(&ids),
                roles: metas.iter().map(TokenRole::of).collect(),
                pooled: (0..metas.len()).map(|i| selected.contains(&i)).collect(),
                values: values.axis_iter(Axis(1)).map(|c| c.to_vec()).collect(),
            }
        })
        .collect()
}

/// Writes Latent Scaling's verdict into every latent's decoder facts.
fn tag_latent_scaling(
    hunts: &mut [ContrastHunt],
    result: &LatentScalingResult,
    decoder: &DecoderAnalysis,
    thresholds: &RobustThresholds,
) {
    let mut column = vec![None; decoder.relative_norms.len()];
    for (i, &j) in result.latents.iter().enumerate() {
        column[j] = Some(i);
    }
    for contrast_hunt in hunts {
        for stats in &mut contrast_hunt.stats {
            let j = stats.feature;
            if let (Some(info), Some(&Some(i))) = (stats.decoder.as_mut(), column.get(j)) {
                let (nu_error, nu_reconstruction) =
                    (result.nu_error[i], result.nu_reconstruction[i]);
                info.latent_scaling = Some(ScalingInfo {
                    nu_error,
                    nu_reconstruction,
                    robust_chat_only: thresholds.is_robust(
                        decoder.relative_norms[j],
                        nu_error,
                        nu_reconstruction,
                    ),
                });
            }
        }
    }
}
