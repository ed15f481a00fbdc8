//! The Activation Difference Lens (Minder et al. 2025): diffing a base/chat pair without a crosscoder.
//!
//! ```text
//! # The embedded demo pair over its corpus (layer 1, k = 5), aligned with the demo crosscoder
//! cargo run --release --example adl -- --out adl/
//!
//! # Real models over unrelated text (one document per line, or .jsonl), layer 13, and the shipped
//! # persona contrasts
//! cargo run --release --example adl -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --corpus fineweb_sample.jsonl --layers 13 --max-texts 10000 --out adl/
//!
//! # Only the child-vs-adult contrast, no corpus
//! cargo run --release --example adl -- --no-corpus --contrast child_vs_adult --out adl_child/
//! ```
//!
//! Two flavours of the difference. Over the corpus, both models read the first `k + 1` tokens of every
//! text (nothing after them runs, and each model only up to the deepest chosen layer); per layer and
//! position `j` after `<bos>`, `delta_j = mean h^chat_j - mean h^base_j`, and the mean over positions. Over
//! the persona dataset's contrasts (child vs adult, novice vs expert, biased vs neutral), per position
//! from the first token where a pair's two sides differ (the cue), the chat-minus-base difference on the
//! positive side minus the same on the negative side: what the fine-tune does with the cue, with what both
//! sides share cancelled.
//!
//! Each vector is read through both models' final norm and unembedding (the logit lens), each layer's
//! mean through the token-identity Patchscope (written into the last position of identity prompts at
//! several scales of the chat model's activation norm), and, with a crosscoder, compared with its latents'
//! chat-minus-base decoder directions. A difference below 1e-4 of the activation norm is float noise:
//! nothing is read from it and nothing is reported as found (chat = base gives exactly zero). The first
//! mean difference found (the corpus's, else a contrast's) then steers the chat model (`--steer-prompt`,
//! four neutral questions on the demo): a binary search for the largest strength whose answers stay
//! coherent, answers side by side.
//!
//! Writes `adl.safetensors` (the vectors and both models' mean norms), `adl.json` (schema:
//! crates/activation-diff-lens/SCHEMA.md), `adl_norms.png`, `adl_patchscope.png` and `adl.html`
//! (self-contained: the figures, the tables, the Patchscope per scale, the answers side by side) to
//! `--out`. The corpus sums are saved to `adl_state.json` after every batch: a run with the same inputs
//! resumes (`--restart` starts over).

use std::path::{Path, PathBuf};

use activation_cache::Corpus;
use activation_diff_lens::output::{write_all, write_tensors, AdlSummary, TENSORS_FILE};
use activation_diff_lens::{
    accumulate, contrast_difference, summarise, ActivationDifference, AdlModels, AdlSpec, AdlState,
    ContrastDifference, ContrastSpec, NamedContrast, ReadOptions, SteeringRequest,
};
use anyhow::{bail, Context, Result};
use clap::Parser;
use crosscoder::{BackendKind, CrosscoderLoader};
use diff_analysis::adl::contrast_prompts;
use gemma_model::{load_model, ComputeDtype, HubOptions, LanguageModel, LoadOptions, ModelSource};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::TokenizationMode;
use ndarray::s;
use persona_dataset::{Contrast, PersonaDataset};
use serde::{Deserialize, Serialize};
use stereo::demo::embedded_source;

const STATE_FILE: &str = "adl_state.json";

/// The mean chat-minus-base activation difference over unrelated texts, read with the logit lens.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base model (index 0) [default: the embedded demo's].
    #[arg(long)]
    base: Option<String>,
    /// Chat model (index 1) [default: the embedded demo's].
    #[arg(long)]
    chat: Option<String>,
    /// Texts (.txt, one per line, or .jsonl) [default: the embedded demo's corpus].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Layers to read, comma-separated [default: the crosscoder's, else the middle layer].
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Positions after <bos>.
    #[arg(long, default_value_t = 5, value_parser = stereo::cli::count)]
    k: usize,
    /// Skip the corpus difference (contrasts only).
    #[arg(long, conflicts_with = "corpus")]
    no_corpus: bool,
    /// Persona dataset for the contrast flavour [default: the shipped one].
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// A contrast (category) to difference; repeat for several [default: every one of the dataset].
    #[arg(long = "contrast")]
    contrasts: Vec<String>,
    /// Skip the contrast flavour.
    #[arg(long, conflicts_with_all = ["contrasts", "no_corpus"])]
    no_contrasts: bool,
    /// Tokenize the contrasts' text prompts as raw `<bos>` + text instead of a chat-template user turn.
    #[arg(long)]
    raw_contrasts: bool,
    /// Use at most this many texts.
    #[arg(long, value_parser = stereo::cli::count)]
    max_texts: Option<usize>,
    /// Texts per forward batch.
    #[arg(long, default_value_t = 32, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// A crosscoder of the pair to compare the differences with [default on the demo: its crosscoder].
    #[arg(long, conflicts_with = "no_crosscoder")]
    crosscoder: Option<String>,
    /// No crosscoder comparison.
    #[arg(long)]
    no_crosscoder: bool,
    /// Tokens per side of each lens readout, and latents per alignment.
    #[arg(long, default_value_t = 10, value_parser = stereo::cli::count)]
    top: usize,
    /// Skip the token-identity Patchscope (it needs the chat model whole).
    #[arg(long)]
    no_patchscope: bool,
    /// Patchscope scales, times the chat model's mean activation norm at the layer.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1,2,4", value_parser = stereo::cli::positive)]
    patchscope_scales: Vec<f32>,
    /// A prompt to steer the chat model on with the first layer's mean difference (repeatable)
    /// [default on the demo: four neutral questions].
    #[arg(long = "steer-prompt")]
    steer_prompts: Vec<String>,
    /// New tokens per steered answer.
    #[arg(long, default_value_t = 24, value_parser = stereo::cli::count)]
    max_new_tokens: usize,
    /// Skip steering.
    #[arg(long)]
    no_steering: bool,
    /// The largest steering strength tried, times the chat model's mean activation norm.
    #[arg(long, default_value_t = 2.0, value_parser = stereo::cli::positive)]
    max_strength: f32,
    /// Benchmark instead: random Gemma-2-2b weights (both models to layer 13, with the unembedding),
    /// this many random texts of k + 1 tokens; prints the time of the difference against the two plain
    /// forward passes it needs, and of the logit lens against the difference.
    #[arg(long, value_parser = stereo::cli::count)]
    bench: Option<usize>,
    /// Ignore saved sums and start over.
    #[arg(long)]
    restart: bool,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype of the models and the crosscoder: f32, or bf16 (bf16 weights and product
    /// inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Results directory.
    #[arg(long, default_value = "adl")]
    out: PathBuf,
    /// Read the hub cache only.
    #[arg(long)]
    offline: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// What the saved sums belong to.
#[derive(Serialize, Deserialize)]
struct Saved {
    models: [String; 2],
    corpus: String,
    state: AdlState,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(texts) = args.bench {
        return bench((texts, args.k, args.batch_size), args.backend, args.dtype);
    }
    let demo = args.base.is_none() && args.chat.is_none();
    if args.base.is_some() != args.chat.is_some() {
        bail!("give both --base and --chat (or neither, for the embedded demo)");
    }
    let part = |given: &Option<String>, name: &str| -> Result<String> {
        Ok(match given {
            Some(s) => s.clone(),
            None => embedded_source(name)?,
        })
    };
    let sources = [part(&args.base, "base")?, part(&args.chat, "chat")?];
    let crosscoder_source = match (&args.crosscoder, demo && !args.no_crosscoder) {
        (Some(c), _) => Some(c.clone()),
        (None, true) => Some(embedded_source("crosscoder")?),
        (None, false) => None,
    };
    let mut hub = HubOptions::from_env();
    hub.offline |= args.offline;
    let crosscoder = crosscoder_source
        .as_ref()
        .map(|c| {
            CrosscoderLoader::new(c)
                .backend(args.backend)
                .dtype(args.dtype)
                .offline(hub.offline)
                .load()
                .with_context(|| format!("loading crosscoder `{c}`"))
        })
        .transpose()?;

    // Layers: as asked, the crosscoder's, or the middle one.
    let probe = load_model(
        &ModelSource::parse(&sources[1])?,
        &LoadOptions {
            stop_at_layer: Some(0),
            unembedding: false,
            hub: hub.clone(),
            ..LoadOptions::default()
        }
        .with_backend(args.backend),
    )?;
    let n_layers = probe.model.config().num_hidden_layers;
    drop(probe);
    let layers = match (&args.layers, &crosscoder) {
        (Some(layers), _) => layers.clone(),
        (None, Some(cc)) => vec![cc
            .config()
            .layer
            .context("the crosscoder does not record its layer; give --layers")?],
        (None, None) => vec![n_layers / 2],
    };
    let deepest = *layers.iter().max().context("no layer")?;
    if deepest >= n_layers {
        bail!(
            "layer {deepest} does not exist: the models have {n_layers} (0..={})",
            n_layers - 1
        );
    }
    let options = LoadOptions {
        stop_at_layer: Some(deepest),
        unembedding: true,
        hub,
        dtype: args.dtype,
        ..LoadOptions::default()
    }
    .with_backend(args.backend);
    let steer_prompts: Vec<String> = if args.no_steering {
        Vec::new()
    } else if args.steer_prompts.is_empty() && demo {
        stereo::demo::NEUTRAL_QUESTIONS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.steer_prompts.clone()
    };
    // The Patchscope and steering read the chat model's predictions: the chat model whole.
    let chat_options = if args.no_patchscope && steer_prompts.is_empty() {
        options.clone()
    } else {
        LoadOptions {
            stop_at_layer: None,
            ..options.clone()
        }
    };
    let loaded = [
        load_model(&ModelSource::parse(&sources[0])?, &options)?,
        load_model(&ModelSource::parse(&sources[1])?, &chat_options)?,
    ];
    let models: [&dyn LanguageModel; 2] = [loaded[0].model.as_ref(), loaded[1].model.as_ref()];
    let tokenizer = loaded[1]
        .tokenizer
        .clone()
        .context("the chat model has no tokenizer.json")?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let names = [models[0].name().to_string(), models[1].name().to_string()];
    let corpus = if args.no_corpus {
        None
    } else {
        Some(corpus_difference(
            &args, &layers, models, &tokenizer, &names,
        )?)
    };
    let contrasts = if args.no_contrasts {
        Vec::new()
    } else {
        contrast_differences(&args, &layers, models, &tokenizer)?
    };
    let named: Vec<NamedContrast<'_>> = contrasts
        .iter()
        .map(|(c, d)| NamedContrast {
            category: &c.category,
            sides: [&c.positive, &c.negative],
            difference: d,
        })
        .collect();
    write_tensors(
        corpus.as_ref().map(|(_, d)| d),
        &named
            .iter()
            .map(|c| (c.category, c.difference))
            .collect::<Vec<_>>(),
        &args.out.join(TENSORS_FILE),
    )?;
    let summary = summarise(
        AdlModels {
            models,
            tokenizer: &tokenizer,
            crosscoder: crosscoder.as_deref(),
        },
        corpus.as_ref().map(|(source, d)| (source.as_str(), d)),
        &named,
        &ReadOptions {
            top: args.top,
            patchscope_scales: if args.no_patchscope {
                Vec::new()
            } else {
                args.patchscope_scales.clone()
            },
        },
        &SteeringRequest {
            prompts: steer_prompts,
            max_strength: args.max_strength,
            max_new_tokens: args.max_new_tokens,
        },
    )?;
    let files = write_all(&summary, &args.out)?;
    print_summary(&summary);
    println!(
        "wrote {TENSORS_FILE} and {} to {}",
        files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", "),
        args.out.display()
    );
    Ok(())
}

/// The corpus difference (resumed from `adl_state.json` when it holds this run's sums), with the
/// corpus's name.
fn corpus_difference(
    args: &Args,
    layers: &[usize],
    models: [&dyn LanguageModel; 2],
    tokenizer: &gemma_model::GemmaTokenizer,
    names: &[String; 2],
) -> Result<(String, ActivationDifference)> {
    let corpus_path = match &args.corpus {
        Some(p) => p.clone(),
        None => PathBuf::from(embedded_source("corpus.jsonl")?),
    };
    let corpus = Corpus::from_path(&corpus_path)
        .with_context(|| format!("reading {}", corpus_path.display()))?;
    let mut spec = AdlSpec::new(layers.to_vec());
    spec.k = args.k;
    spec.batch_size = args.batch_size;
    spec.max_texts = args.max_texts;
    let mut state = start_or_resume(args, &spec, names, &corpus, models[1].config().hidden_size)?;
    let state_path = args.out.join(STATE_FILE);
    accumulate(
        models,
        tokenizer,
        corpus.documents(),
        &mut state,
        &mut |state| save(&state_path, names, &corpus, state),
        !args.quiet,
    )?;
    Ok((corpus.source().to_string(), state.result()?))
}

/// Every chosen contrast of the dataset, differenced.
fn contrast_differences(
    args: &Args,
    layers: &[usize],
    models: [&dyn LanguageModel; 2],
    tokenizer: &gemma_model::GemmaTokenizer,
) -> Result<Vec<(Contrast, ContrastDifference)>> {
    let dataset = match &args.dataset {
        Some(path) => PersonaDataset::from_path(path)?,
        None => PersonaDataset::shipped(),
    };
    let all = dataset.contrasts();
    let chosen: Vec<Contrast> = if args.contrasts.is_empty() {
        all
    } else {
        args.contrasts
            .iter()
            .map(|name| {
                all.iter()
                    .find(|c| &c.category == name)
                    .cloned()
                    .with_context(|| {
                        format!(
                            "the dataset has no contrast `{name}` (it has: {})",
                            all.iter()
                                .map(|c| c.category.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    let mode = if args.raw_contrasts {
        TokenizationMode::Raw
    } else {
        TokenizationMode::ChatTemplate
    };
    let mut spec = ContrastSpec::new(layers.to_vec());
    spec.k = args.k;
    spec.batch_size = args.batch_size;
    spec.tokenization = mode;
    chosen
        .into_iter()
        .map(|c| {
            let pairs = contrast_prompts(&dataset, &c, mode)?;
            let bar = if args.quiet {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(0).with_message(c.category.clone())
            };
            if let Ok(style) =
                ProgressStyle::with_template("contrast {msg} [{bar:36}] {pos}/{len} prompts")
            {
                bar.set_style(style);
            }
            let difference = contrast_difference(models, tokenizer, &pairs, &spec, &bar)?;
            bar.finish_and_clear();
            Ok((c, difference))
        })
        .collect()
}

fn start_or_resume(
    args: &Args,
    spec: &AdlSpec,
    names: &[String; 2],
    corpus: &Corpus,
    d_model: usize,
) -> Result<AdlState> {
    let path = args.out.join(STATE_FILE);
    if args.restart || !path.exists() {
        return Ok(AdlState::new(spec.clone(), d_model));
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Saved =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut same_spec = saved.state.spec.clone();
    same_spec.max_texts = spec.max_texts;
    if saved.models != *names || saved.corpus != corpus.fingerprint() || same_spec != *spec {
        bail!(
            "{} holds sums of another run ({:?} on corpus {}, {:?}); use --restart or another --out",
            path.display(),
            saved.models,
            saved.corpus,
            saved.state.spec
        );
    }
    let mut state = saved.state;
    state.spec.max_texts = spec.max_texts;
    println!(
        "resuming after {} texts ({} skipped)",
        state.texts, state.skipped
    );
    Ok(state)
}

fn save(
    path: &Path,
    names: &[String; 2],
    corpus: &Corpus,
    state: &AdlState,
) -> activation_diff_lens::Result<()> {
    let saved = Saved {
        models: names.clone(),
        corpus: corpus.fingerprint(),
        state: state.clone(),
    };
    let text = serde_json::to_string(&saved).map_err(|e| activation_diff_lens::AdlError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    stereo::backend::atomic_file::write_atomic(path, text.as_bytes()).map_err(|e| {
        activation_diff_lens::AdlError::File {
            path: e.path,
            reason: e.source.to_string(),
        }
    })
}

fn print_summary(summary: &AdlSummary) {
    if !summary.found {
        println!(
            "no difference found: every difference is below {} of the chat model's activation norm",
            activation_diff_lens::NEGLIGIBLE_RELATIVE_NORM
        );
    }
    if let Some(c) = &summary.corpus {
        println!(
            "over the corpus: {} texts ({} too short), k = {}",
            c.texts, c.skipped, summary.k
        );
        print_reading(&c.reading);
    }
    for c in &summary.contrasts {
        println!(
            "contrast {} ({} minus {}): {} pairs, per position from the cue",
            c.category, c.sides[0], c.sides[1], c.pairs
        );
        print_reading(&c.reading);
    }
    if let Some(s) = &summary.steering {
        let search = &s.search;
        match &search.chosen {
            Some(c) => println!(
                "steering with the {} mean at layer {}: largest coherent strength {} x norm (NLL {:.3} vs {:.3} unsteered)",
                s.vector, search.spec.layer, c.strength, c.nll, search.unsteered.nll
            ),
            None => println!(
                "steering with the {} mean at layer {}: no coherent strength above 0",
                s.vector, search.spec.layer
            ),
        }
        for (i, prompt) in search.prompts.iter().enumerate() {
            println!(
                "    {prompt}\n      unsteered: {}",
                search.unsteered.answers[i].replace('\n', " ")
            );
            if let Some(c) = &search.chosen {
                println!("      steered:   {}", c.answers[i].replace('\n', " "));
            }
        }
    }
}

fn words(entries: &[activation_diff_lens::LensEntry]) -> String {
    entries
        .iter()
        .take(5)
        .map(|e| e.token.replace('▁', " "))
        .collect::<Vec<_>>()
        .join("|")
}

fn print_reading(reading: &activation_diff_lens::DifferenceReading) {
    for r in &reading.readings {
        let label = match r.position {
            Some(j) => format!("layer {} position {j}", r.layer),
            None => format!("layer {} mean", r.layer),
        };
        if r.negligible {
            println!("  {label:<20} |delta| {:.3e}: negligible", r.norm);
            continue;
        }
        let aligned = r
            .aligned_latents
            .first()
            .map(|a| format!("; best latent #{} (cos {:.2})", a.latent, a.cosine))
            .unwrap_or_default();
        println!(
            "  {label:<20} |delta| {:.3} ({:.1}% of |h|); chat head: {}{aligned}",
            r.norm,
            100.0 * r.relative_norm,
            r.lens
                .get(1)
                .map(|l| words(&l.promoted))
                .unwrap_or_default()
        );
    }
    for p in &reading.patchscope {
        let best = &p.readout.scales[p.readout.best];
        println!(
            "  layer {} Patchscope: most consistent at {} x norm ({:.2}): {}",
            p.layer,
            best.scale,
            best.consistency,
            words(&best.tokens)
        );
    }
}

/// `--bench`: the cost of the difference against the two forward passes it needs, at Gemma-2-2b shapes.
fn bench(
    (texts, k, batch_size): (usize, usize, usize),
    backend: BackendKind,
    dtype: ComputeDtype,
) -> Result<()> {
    use gemma_model::throughput::benchmark_batch;
    use gemma_model::{random_model, Gemma2Config, HookPoint, RunRequest, TokenBatch};
    use std::time::Instant;

    const LAYER: usize = 13;
    let config = Gemma2Config::gemma_2_2b();
    let options = LoadOptions {
        stop_at_layer: Some(LAYER),
        unembedding: true,
        dtype,
        ..LoadOptions::default()
    }
    .with_backend(backend);
    let t = Instant::now();
    let base = random_model(&config, &options, 1)?;
    let chat = random_model(&config, &options, 2)?;
    println!(
        "random Gemma-2-2b pair to layer {LAYER} built in {:.1?}",
        t.elapsed()
    );
    let batch = benchmark_batch(&config, texts, k + 1, 7)?;
    let sequences: Vec<Vec<u32>> = batch.ids().chunks(k + 1).map(<[u32]>::to_vec).collect();
    let models: [&dyn LanguageModel; 2] = [base.as_ref(), chat.as_ref()];
    let request = RunRequest::capture([HookPoint::ResidPost(LAYER)]);

    let t = Instant::now();
    for chunk in sequences.chunks(batch_size) {
        let tokens = TokenBatch::new(chunk, config.pad_token_id, gemma_model::PaddingSide::Right)?;
        for model in models {
            model.run(&tokens, &request)?;
        }
    }
    let forward = t.elapsed().as_secs_f64();

    let mut spec = AdlSpec::new(vec![LAYER]);
    spec.k = k;
    let mut state = AdlState::new(spec, config.hidden_size);
    let t = Instant::now();
    for chunk in sequences.chunks(batch_size) {
        activation_diff_lens::add_sequences(models, chunk, &mut state)?;
    }
    let difference_time = t.elapsed().as_secs_f64();
    let difference = state.result()?;

    // The lens of the k positions and the mean through the chat head (the unembedding product is all
    // of its cost; the token strings need a tokenizer, which random weights lack).
    let mut rows = ndarray::Array3::zeros((1, k + 1, config.hidden_size));
    rows.slice_mut(s![0, ..k, ..])
        .assign(&difference.delta.slice(s![0, .., ..]));
    rows.slice_mut(s![0, k, ..])
        .assign(&difference.delta_mean.row(0));
    let t = Instant::now();
    chat.unembed(&rows)?;
    let lens = t.elapsed().as_secs_f64();
    println!(
        "{texts} texts x {} tokens, batches of {batch_size}, {backend}: two forward passes {forward:.2} s, \
         the difference {difference_time:.2} s ({:.3}x), the lens of {} vectors {lens:.3} s ({:.2}% of the difference)",
        k + 1,
        difference_time / forward,
        k + 1,
        100.0 * lens / difference_time
    );
    Ok(())
}
