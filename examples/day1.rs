//! Day 1 of model diffing, done right: find the latents chat training added that model the user.
//!
//! ```text
//! # The embedded demo pair (tiny base/chat Gemma-2 with planted mechanisms, fixtures/demo/):
//! cargo run --release --example day1
//!
//! # The real thing, no code change:
//! cargo run --release --example day1 -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 --layer 13 \
//!     --dataset fixtures/persona/user_persona_prompts.json --backend flex --pooling mean --out results/
//! ```
//!
//! Every contrast of the persona dataset (novice vs expert, biased vs neutral, child vs adult) goes
//! through both models and the crosscoder; per latent, the paired differences between the two variants
//! of each item are tested (sign-flip permutation, Benjamini-Hochberg); the candidates are verified on
//! held-out prompts through both models; the results directory gets `day1_summary.json` (schema in
//! `crates/diff-analysis/SCHEMA.md`), `latent_stats.csv`, `token_activations.json`, PNG figures and a
//! self-contained `report.html`.
//!
//! `--sequential` holds one model in memory at a time (same results).
//!
//! Everything that can be checked without loading a model is checked first: flag combinations, the
//! dataset's contrasts and split, the models' `config.json`, and the crosscoder's hook and width.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use activation_diff_lens::AdlModels;
use anyhow::{bail, Result};
use circuits::{CircuitModels, CircuitOptions};
use clap::Parser;
use crosscoder::Crosscoder;
use diff_analysis::adl::{run_adl, AdlOptions};
use diff_analysis::behaviour::{test_sycophancy_behaviour, SYCOPHANCY_PREFERENCE_DIR};
use diff_analysis::causal::{run_causal_tests, CausalOptions};
use diff_analysis::circuit_step::map_verified_circuits;
use diff_analysis::setup::{CrosscoderSpec, Day1Setup, HookChoice};
use diff_analysis::{
    plan, validate_options, Day1, Day1Options, HuntOptions, Pooling, VerificationCriteria,
};
use gemma_model::{BackendKind, ComputeDtype, HubOptions};
use model_pair::{PairedSource, StereoRunner, TokenizationMode, BASE, CHAT};
use persona_dataset::PersonaDataset;
use steering::preference::output::write_preference;
use steering::{PreferenceSpec, SteeringModels};
use stereo::demo::{embedded_source, fixture_dir, DemoManifest};

/// Find chat-specific "user model" latents: hunt, verify, report.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base model (index 0): hub id or local directory [default: the embedded demo, fixtures/demo/base].
    #[arg(long)]
    base: Option<String>,
    /// Chat model (index 1): hub id or local directory [default: fixtures/demo/chat].
    #[arg(long)]
    chat: Option<String>,
    /// Crosscoder: directory, `.pt` / `.safetensors` file or hub id [default: fixtures/demo/crosscoder].
    #[arg(long)]
    crosscoder: Option<String>,
    /// Run without a crosscoder: the same statistics on the chat model's residual dimensions (the
    /// notebook's fallback, clearly labelled in every output).
    #[arg(long, conflicts_with = "crosscoder")]
    no_crosscoder: bool,
    /// Per-model scaling factors of a ckkissane crosscoder, comma-separated (they multiply the
    /// activations before encoding).
    #[arg(long, value_delimiter = ',', value_parser = stereo::cli::positive)]
    scaling_factors: Option<Vec<f32>>,
    /// Layer of the `resid_post` hook [default: the crosscoder's layer; without one, the demo's planted
    /// layer on the demo, else 13].
    #[arg(long)]
    layer: Option<usize>,
    /// Full hook name, overriding --layer's `blocks.{layer}.hook_resid_post` (e.g. blocks.14.hook_resid_pre).
    #[arg(long)]
    hook: Option<String>,
    /// Persona dataset JSON [default: the shipped dataset, fixtures/persona/user_persona_prompts.json].
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// An extra file of verification prompts, appended to the dataset's.
    #[arg(long)]
    verification: Option<PathBuf>,
    /// A contrast (category) to analyse; repeat for several [default: every category with a contrast].
    #[arg(long = "contrast")]
    contrasts: Vec<String>,
    /// Compute backend for the models and the crosscoder: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype of the models and the crosscoder: f32, or bf16 (bf16 weights and product
    /// inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Token pooling: mean (content tokens), max, last, template (chat-template tokens; needs
    /// --chat-template) or mean-all (the notebook's, BOS included).
    #[arg(long, default_value = "mean")]
    pooling: Pooling,
    /// Wrap every prompt in the Gemma chat template for BOTH models (default: raw `<bos>` + text, the
    /// notebook's mode).
    #[arg(long)]
    chat_template: bool,
    /// Share of each contrast's items used for discovery; the rest replicate the candidates. (With few
    /// discovery items no latent can reach FDR significance: n items give p >= 2^(1-n).)
    #[arg(long, default_value_t = 0.75, value_parser = stereo::cli::split_fraction_f64)]
    discovery_ratio: f64,
    /// Seed of the split and of the permutation tests.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Candidates per contrast (verified and shown).
    #[arg(long, default_value_t = 10, value_parser = stereo::cli::count)]
    top_k: usize,
    /// Keep shared and base-only latents as candidates too (by default only chat-only latents are
    /// verified: the question is what chat training added).
    #[arg(long)]
    all_classes: bool,
    /// False discovery rate (Benjamini-Hochberg) over the latents tested in a contrast.
    #[arg(long, default_value_t = 0.05, value_parser = stereo::cli::probability_f64)]
    fdr: f64,
    /// Smallest AUROC (ACTIVATE vs SILENT) for a candidate to pass verification.
    #[arg(long, default_value_t = 0.8, value_parser = stereo::cli::unit_interval_f64)]
    min_auroc: f64,
    /// Smallest balanced accuracy at the discovery threshold for a candidate to pass.
    #[arg(long, default_value_t = 0.75, value_parser = stereo::cli::unit_interval_f64)]
    min_balanced_accuracy: f64,
    /// Prompts per forward batch.
    #[arg(long, default_value_t = 8, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Hold one model in memory at a time (load base, run, drop; then chat) instead of both: for
    /// machines where the pair does not fit. Same results, each model loaded once per batch of runs.
    #[arg(long, conflicts_with = "causal")]
    sequential: bool,
    /// Then test the concluded latents causally: clamp each to 0 where it fires and to its maximum
    /// where it is silent, while the chat model answers (base model in lockstep to the hook), and add
    /// the effect to the summary, the report and the sentence (full results in `<out>/causal/`). For a
    /// concluded sycophancy latent, also the forced choice on the dataset's false-belief items
    /// (log p(agree) - log p(correct) with the latent ablated, against a matched random latent) and
    /// the free answers, judged (`<out>/causal/sycophancy_preference/`).
    #[arg(long, conflicts_with = "no_crosscoder")]
    causal: bool,
    /// A string whose probability as the answer the causal test compares (repeatable) [default on
    /// the demo: its simple-register words].
    #[arg(long = "causal-target")]
    causal_targets: Vec<String>,
    /// New tokens per answer in the causal test.
    #[arg(long, default_value_t = 16, value_parser = stereo::cli::count)]
    causal_max_new_tokens: usize,
    /// Then map the circuit of every verified candidate: which heads and MLPs of both models write it
    /// (chat minus base per component) and which later heads and MLPs of the chat model read it, on the
    /// positive side of its contrast (in the summary, the report and `<out>/circuits/`).
    #[arg(long, conflicts_with_all = ["no_crosscoder", "sequential"])]
    circuits: bool,
    /// Skip Latent Scaling (by default it runs over every token of the discovery prompts and tags each
    /// latent robust chat-only or not: nu_error < 0.2, nu_reconstruction < 0.5, relative norm >= 0.9).
    #[arg(long)]
    no_latent_scaling: bool,
    /// With --no-crosscoder, skip the Activation Difference Lens (by default it runs at the hook's layer:
    /// the persona contrasts' chat-minus-base differences per position from the cue, and the corpus
    /// difference when there is a corpus; results in the report and in `<out>/adl/`).
    #[arg(long)]
    no_adl: bool,
    /// Unrelated texts for the ADL's corpus difference (.txt, one per line, or .jsonl) [default on the
    /// demo: its corpus; otherwise none, contrasts only].
    #[arg(long, conflicts_with = "no_adl")]
    adl_corpus: Option<PathBuf>,
    /// Use at most this many ADL corpus texts.
    #[arg(long, value_parser = stereo::cli::count)]
    adl_max_texts: Option<usize>,
    /// A prompt to steer the chat model on with the first ADL mean difference found (repeatable)
    /// [default on the demo: four neutral questions].
    #[arg(long = "adl-steer-prompt")]
    adl_steer_prompts: Vec<String>,
    /// Results directory.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Read the hub cache only (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();

    // 1. Flags.
    let demo = args.base.is_none() && args.chat.is_none();
    if args.base.is_some() != args.chat.is_some() {
        bail!("give both --base and --chat (or neither, for the embedded demo)");
    }
    if !demo && args.crosscoder.is_none() && !args.no_crosscoder {
        bail!(
            "with --base/--chat, name the crosscoder trained on them with --crosscoder <DIR|HUB_ID>, or pass \
             --no-crosscoder for the residual-dimension fallback"
        );
    }
    if args.scaling_factors.is_some() && args.no_crosscoder {
        bail!("--scaling-factors applies to a crosscoder, but --no-crosscoder was given");
    }
    let options = Day1Options {
        pooling: args.pooling,
        tokenization: if args.chat_template {
            TokenizationMode::ChatTemplate
        } else {
            TokenizationMode::Raw
        },
        discovery_ratio: args.discovery_ratio,
        seed: args.seed,
        hunt: HuntOptions {
            fdr: args.fdr,
            top_k: args.top_k,
            chat_only_candidates: !args.all_classes,
            ..HuntOptions::default()
        },
        criteria: VerificationCriteria {
            min_auroc: args.min_auroc,
            min_balanced_accuracy: args.min_balanced_accuracy,
        },
        contrasts: args.contrasts.clone(),
        progress: !args.quiet,
        latent_scaling: !args.no_latent_scaling,
        ..Day1Options::default()
    };
    validate_options(&options)?;

    // 2. The dataset and the plan.
    let (mut dataset, dataset_label) = match &args.dataset {
        Some(path) => (PersonaDataset::from_path(path)?, path.display().to_string()),
        None => (
            PersonaDataset::shipped(),
            "shipped (fixtures/persona/user_persona_prompts.json)".to_string(),
        ),
    };
    if let Some(path) = &args.verification {
        dataset = dataset.with_verification_from_path(path)?;
    }
    let planned = plan(&dataset, &options)?;

    // 3. Sources (the embedded demo by default), then every check that needs no weights.
    let t = Instant::now();
    let (base, chat) = match (&args.base, &args.chat) {
        (Some(b), Some(c)) => (b.clone(), c.clone()),
        _ => (embedded_source("base")?, embedded_source("chat")?),
    };
    let crosscoder = match (&args.crosscoder, args.no_crosscoder) {
        (Some(c), _) => Some(c.clone()),
        (None, true) => None,
        (None, false) => Some(embedded_source("crosscoder")?),
    };
    let mut hub = HubOptions::from_env();
    hub.offline |= args.offline;
    let mut prepared = Day1Setup {
        base,
        chat,
        crosscoder: crosscoder.map(|source| CrosscoderSpec {
            source,
            scaling_factors: args.scaling_factors.clone(),
        }),
        hook: HookChoice {
            hook: args.hook.as_deref().map(str::parse).transpose()?,
            // Without a crosscoder to name the layer, the demo's planted layer (13 for real models).
            layer: match (args.layer, demo && args.no_crosscoder) {
                (None, true) => Some(DemoManifest::load(&fixture_dir())?.hook_layer),
                (layer, _) => layer,
            },
        },
        backend: args.backend,
        dtype: args.dtype,
        hub,
    }
    .prepare()?;
    println!(
        "plan: {} contrast(s) [{}], {} prompt runs, hook {}, {} ({:.1?})",
        planned.contrasts.len(),
        planned
            .contrasts
            .iter()
            .map(|c| format!(
                "{}: {} + {} held-out",
                c.contrast.category,
                c.discovery.len(),
                c.held_out.len()
            ))
            .collect::<Vec<_>>()
            .join("; "),
        planned.n_runs(),
        prepared.hook,
        match &prepared.checkpoint {
            Some(c) => format!("crosscoder F = {}", c.config().dict_size),
            None => "no crosscoder: residual dimensions of the chat model".into(),
        },
        t.elapsed()
    );

    // 4. Load (only the layers the hook needs; the chat model whole for --causal and the ADL).
    let t = Instant::now();
    let adl_layer = adl_layer(&args, prepared.hook);
    // --causal and the ADL keep the pair concrete: they generate and read heads with the same models.
    let (runner, loaded) = if args.causal || args.circuits || adl_layer.is_some() {
        let (base, chat) = prepared.load_for_generation()?;
        let runner = StereoRunner::from_loaded(base, chat, prepared.hook)?;
        (Some(runner.with_batch_size(args.batch_size)), None)
    } else {
        (
            None,
            Some(prepared.load_pair(args.sequential, args.batch_size)?),
        )
    };
    let pair: &dyn PairedSource = match (&runner, &loaded) {
        (Some(runner), _) => runner,
        (None, Some(loaded)) => loaded.as_ref(),
        (None, None) => unreachable!("one of the two is loaded"),
    };
    let crosscoder: Option<Arc<dyn Crosscoder>> = prepared.build_crosscoder()?.map(Arc::from);
    println!(
        "{}{} on {} in {:.1?}",
        if args.sequential {
            "read both models' configs (each is loaded when it runs)"
        } else {
            "loaded both models"
        },
        if crosscoder.is_some() {
            " and the crosscoder"
        } else {
            ""
        },
        args.backend,
        t.elapsed()
    );

    // 5. Run, test causally if asked, write, report.
    let mut results = Day1::new(pair, crosscoder.as_deref(), &dataset)
        .options(options)
        .dataset_label(dataset_label)
        .run()?;
    if let (true, Some(runner), Some(crosscoder)) = (args.causal, &runner, &crosscoder) {
        let targets = if args.causal_targets.is_empty() && demo {
            demo_register_targets()?
        } else {
            args.causal_targets.clone()
        };
        let causal = CausalOptions {
            targets,
            max_new_tokens: args.causal_max_new_tokens,
            chat_template: args.chat_template,
            batch_size: args.batch_size,
            ..CausalOptions::default()
        };
        let models = SteeringModels {
            base: runner.model(BASE),
            chat: runner.model(CHAT),
            tokenizer: runner.tokenizer(),
            crosscoder: crosscoder.clone(),
            hook: prepared.hook,
        };
        let runs = run_causal_tests(&mut results, &models, &causal, !args.quiet)?;
        for (name, run) in &runs {
            steering::output::write_all(run, &args.out.join("causal").join(name))?;
        }
        if let Some(kl) = &results.kl_evaluation {
            steering::kl_evaluation::write_kl_evaluation(
                kl,
                &args.out.join("causal").join("kl_evaluation"),
            )?;
        }
        let behaviour = test_sycophancy_behaviour(
            &mut results,
            &models,
            &dataset,
            |latent| PreferenceSpec {
                free_tokens: args.causal_max_new_tokens,
                batch_size: args.batch_size,
                ..PreferenceSpec::ablate(vec![latent])
            },
            !args.quiet,
        )?;
        if let Some(b) = &behaviour {
            write_preference(b, &args.out.join("causal").join(SYCOPHANCY_PREFERENCE_DIR))?;
            println!("sycophancy as behaviour: {}", b.sentence());
        }
    }
    if let (true, Some(runner), Some(crosscoder)) = (args.circuits, &runner, &crosscoder) {
        let t = Instant::now();
        let name = args
            .crosscoder
            .clone()
            .unwrap_or_else(|| "the embedded demo crosscoder".into());
        let n = map_verified_circuits(
            &mut results,
            CircuitModels {
                models: [runner.model(BASE), runner.model(CHAT)],
                tokenizer: runner.tokenizer(),
                crosscoder: crosscoder.as_ref(),
                crosscoder_name: &name,
            },
            &dataset,
            &CircuitOptions {
                batch_size: args.batch_size,
                ..CircuitOptions::default()
            },
        )?;
        println!("mapped {n} circuit(s) in {:.1?}", t.elapsed());
    }
    if let (Some(runner), Some(layer)) = (&runner, adl_layer) {
        let t = Instant::now();
        let contrasts: Vec<persona_dataset::Contrast> = planned
            .contrasts
            .iter()
            .map(|c| persona_dataset::Contrast {
                category: c.contrast.category.clone(),
                positive: c.contrast.positive.clone(),
                negative: c.contrast.negative.clone(),
            })
            .collect();
        results.adl = Some(run_adl(
            AdlModels {
                models: [runner.model(BASE), runner.model(CHAT)],
                tokenizer: runner.tokenizer(),
                crosscoder: None,
            },
            &dataset,
            &contrasts,
            &[layer],
            options_tokenization(&args),
            &adl_options(&args, demo)?,
            !args.quiet,
        )?);
        println!(
            "activation difference lens at layer {layer} in {:.1?}",
            t.elapsed()
        );
    }
    let files = results.write(&args.out)?;
    print!("{}", results.terminal_summary());
    println!(
        "wrote {} files to {} (open {}) in {:.1?} overall",
        files.len(),
        args.out.display(),
        args.out
            .join(diff_analysis::output::summary::REPORT_FILE)
            .display(),
        started.elapsed()
    );
    Ok(())
}

/// The layer of the ADL: with --no-crosscoder (unless --no-adl or --sequential), the last layer the hook
/// reads (`resid_post` of the hook's layer, the layer before a `resid_pre` hook).
fn adl_layer(args: &Args, hook: gemma_model::HookPoint) -> Option<usize> {
    if !args.no_crosscoder || args.no_adl {
        return None;
    }
    if args.sequential {
        println!("note: --sequential holds one model at a time; the activation difference lens needs both (skipped)");
        return None;
    }
    hook.layers_needed().checked_sub(1)
}

/// How the dataset's text prompts are tokenized (the hunt's choice).
fn options_tokenization(args: &Args) -> TokenizationMode {
    if args.chat_template {
        TokenizationMode::ChatTemplate
    } else {
        TokenizationMode::Raw
    }
}

/// The ADL's corpus (the demo's by default on the demo) and steering prompts.
fn adl_options(args: &Args, demo: bool) -> Result<AdlOptions> {
    let corpus_path = match (&args.adl_corpus, demo) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(PathBuf::from(embedded_source("corpus.jsonl")?)),
        (None, false) => None,
    };
    let corpus = corpus_path
        .map(|path| -> Result<(String, Vec<model_pair::PromptInput>)> {
            let corpus = activation_cache::Corpus::from_path(&path)?;
            Ok((corpus.source().to_string(), corpus.documents().to_vec()))
        })
        .transpose()?;
    let steer_prompts = if args.adl_steer_prompts.is_empty() && demo {
        stereo::demo::NEUTRAL_QUESTIONS[..3]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.adl_steer_prompts.clone()
    };
    let mut options = AdlOptions {
        corpus,
        max_texts: args.adl_max_texts,
        ..AdlOptions::default()
    };
    options.steering.prompts = steer_prompts;
    Ok(options)
}

/// The demo's simple-register words (what its planted reader raises), as answer targets.
fn demo_register_targets() -> Result<Vec<String>> {
    let manifest = DemoManifest::load(&fixture_dir())?;
    Ok(manifest
        .reader
        .map(|r| r.register_words.iter().map(|w| format!(" {w}")).collect())
        .unwrap_or_default())
}
