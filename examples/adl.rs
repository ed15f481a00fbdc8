//! The Activation Difference Lens (Minder et al. 2025): diffing a base/chat pair without a crosscoder.
//!
//! ```text
//! # The embedded demo pair over its corpus (layer 1, k = 5), aligned with the demo crosscoder
//! cargo run --release --example adl -- --out adl/
//!
//! # Real models over unrelated text (one document per line, or .jsonl), layer 13
//! cargo run --release --example adl -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --corpus fineweb_sample.jsonl --layers 13 --max-texts 10000 --out adl/
//! ```
//!
//! Both models read the first `k + 1` tokens of every text (nothing after them runs, and each model only
//! up to the deepest chosen layer); per layer and position `j` after `<bos>`, `delta_j = mean h^chat_j -
//! mean h^base_j`, and the mean over positions. Each is read through both models' final norm and
//! unembedding (the logit lens), each layer's mean through the token-identity Patchscope (written into
//! the last position of identity prompts at several scales of the chat model's activation norm), and, with
//! a crosscoder, compared with its latents' chat-minus-base decoder directions. The first layer's mean
//! difference then steers the chat model (`--steer-prompt`, four neutral questions on the demo): a binary
//! search for the largest strength whose answers stay coherent, answers side by side. Writes `adl.safetensors` (the vectors and both models' mean norms) and `adl.json` (schema:
//! crates/activation-diff-lens/SCHEMA.md) and `adl.html` (self-contained: the tables, the Patchscope per
//! scale, the answers side by side) to `--out`. The sums are saved to `adl_state.json` after every
//! batch: a run with the same inputs resumes (`--restart` starts over).

use std::path::{Path, PathBuf};

use activation_cache::Corpus;
use activation_diff_lens::output::{
    write_summary, write_tensors, AdlSummary, LayerPatchscope, PositionReading, JSON_FILE,
    SCHEMA_VERSION, TENSORS_FILE,
};
use activation_diff_lens::{
    accumulate, align_with_crosscoder, identity_prompts, logit_lens, patchscope, steering_search,
    ActivationDifference, AdlSpec, AdlState, AdlSteeringSpec, PatchscopeSpec,
};
use anyhow::{bail, Context, Result};
use clap::Parser;
use crosscoder::{BackendKind, CrosscoderLoader};
use gemma_model::{load_model, HubOptions, LanguageModel, LoadOptions, ModelSource};
use ndarray::{s, Array2};
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
        return bench(texts, args.k, args.batch_size, args.backend);
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
        ..LoadOptions::default()
    }
    .with_backend(args.backend);
    let steer_prompts: Vec<String> = if args.no_steering {
        Vec::new()
    } else if args.steer_prompts.is_empty() && demo {
        [
            "Why is the sky blue?",
            "How do plants grow?",
            "What makes thunder?",
            "How does a computer remember things?",
        ]
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

    let corpus_path = match &args.corpus {
        Some(p) => p.clone(),
        None => PathBuf::from(embedded_source("corpus.jsonl")?),
    };
    let corpus = Corpus::from_path(&corpus_path)
        .with_context(|| format!("reading {}", corpus_path.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut spec = AdlSpec::new(layers.clone());
    spec.k = args.k;
    spec.batch_size = args.batch_size;
    spec.max_texts = args.max_texts;
    let names = [models[0].name().to_string(), models[1].name().to_string()];
    let mut state = start_or_resume(
        &args,
        &spec,
        &names,
        &corpus,
        models[1].config().hidden_size,
    )?;
    let state_path = args.out.join(STATE_FILE);
    accumulate(
        models,
        &tokenizer,
        corpus.documents(),
        &mut state,
        &mut |state| save(&state_path, &names, &corpus, state),
        !args.quiet,
    )?;
    let difference = state.result()?;
    write_tensors(&difference, &args.out.join(TENSORS_FILE))?;
    let readings = read(
        &difference,
        models,
        &tokenizer,
        crosscoder.as_deref(),
        args.top,
    )?;
    let patchscope = if args.no_patchscope {
        Vec::new()
    } else {
        difference
            .layers
            .iter()
            .enumerate()
            .map(|(l, &layer)| {
                let spec = PatchscopeSpec {
                    layer,
                    scales: args.patchscope_scales.clone(),
                    target_norm: difference.norms[1].row(l).mean().unwrap_or(1.0) as f32,
                    prompts: identity_prompts(),
                    top: args.top,
                };
                Ok(LayerPatchscope {
                    layer,
                    readout: patchscope(
                        difference.delta_mean.row(l),
                        models[1],
                        &tokenizer,
                        &spec,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    let steering = if steer_prompts.is_empty() {
        None
    } else {
        let mut spec = AdlSteeringSpec::new(
            difference.layers[0],
            difference.norms[1].row(0).mean().unwrap_or(1.0) as f32,
        );
        spec.max_strength = args.max_strength;
        Some(steering_search(
            models[1],
            &tokenizer,
            difference.delta_mean.row(0),
            &steer_prompts,
            &spec,
        )?)
    };
    let summary = AdlSummary {
        schema_version: SCHEMA_VERSION,
        models: names,
        corpus: corpus.source().to_string(),
        k: difference.k,
        layers: difference.layers.clone(),
        texts: difference.texts,
        skipped: difference.skipped,
        readings,
        patchscope,
        steering,
    };
    write_summary(&summary, &args.out.join(JSON_FILE))?;
    stereo::backend::atomic_file::write_atomic(
        &args.out.join(activation_diff_lens::html::HTML_FILE),
        activation_diff_lens::html::adl_page(&summary).as_bytes(),
    )?;
    print_summary(&summary);
    println!(
        "wrote {}, {} and {} to {}",
        TENSORS_FILE,
        JSON_FILE,
        activation_diff_lens::html::HTML_FILE,
        args.out.display()
    );
    Ok(())
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

/// Every position of every layer, then the layer's mean: norms, both lenses, the aligned latents.
fn read(
    difference: &ActivationDifference,
    models: [&dyn LanguageModel; 2],
    tokenizer: &gemma_model::GemmaTokenizer,
    crosscoder: Option<&dyn crosscoder::Crosscoder>,
    top: usize,
) -> Result<Vec<PositionReading>> {
    let (k, d) = (difference.k, difference.delta.dim().2);
    let mut readings = Vec::new();
    for (l, &layer) in difference.layers.iter().enumerate() {
        let mut rows = Array2::zeros((k + 1, d));
        rows.slice_mut(s![..k, ..])
            .assign(&difference.delta.slice(s![l, .., ..]));
        rows.row_mut(k).assign(&difference.delta_mean.row(l));
        let lenses = models
            .iter()
            .map(|m| logit_lens(rows.view(), *m, tokenizer, top))
            .collect::<activation_diff_lens::Result<Vec<_>>>()?;
        let aligned = match crosscoder {
            Some(cc) => align_with_crosscoder(rows.view(), cc, top)?,
            None => vec![Vec::new(); k + 1],
        };
        for j in 0..=k {
            let row = rows.row(j);
            readings.push(PositionReading {
                layer,
                position: (j < k).then_some(j),
                norm: row.dot(&row).sqrt(),
                model_norms: (j < k)
                    .then(|| [difference.norms[0][[l, j]], difference.norms[1][[l, j]]]),
                lens: lenses.iter().map(|lens| lens[j].clone()).collect(),
                aligned_latents: aligned[j].clone(),
            });
        }
    }
    Ok(readings)
}

fn print_summary(summary: &AdlSummary) {
    if let Some(s) = &summary.steering {
        match &s.chosen {
            Some(c) => println!(
                "  steering at layer {}: largest coherent strength {} x norm (NLL {:.3} vs {:.3} unsteered)",
                s.spec.layer, c.strength, c.nll, s.unsteered.nll
            ),
            None => println!("  steering at layer {}: no coherent strength above 0", s.spec.layer),
        }
        for (i, prompt) in s.prompts.iter().enumerate() {
            println!(
                "    {prompt}\n      unsteered: {}",
                s.unsteered.answers[i].replace('\n', " ")
            );
            if let Some(c) = &s.chosen {
                println!("      steered:   {}", c.answers[i].replace('\n', " "));
            }
        }
    }
    for p in &summary.patchscope {
        let best = &p.readout.scales[p.readout.best];
        println!(
            "  layer {} Patchscope: most consistent at {} x norm ({:.2}): {}",
            p.layer,
            best.scale,
            best.consistency,
            best.tokens
                .iter()
                .take(5)
                .map(|t| t.token.replace('▁', " "))
                .collect::<Vec<_>>()
                .join("|")
        );
    }
    println!(
        "activation difference over {} texts ({} too short), k = {}",
        summary.texts, summary.skipped, summary.k
    );
    for r in &summary.readings {
        let label = match r.position {
            Some(j) => format!("layer {} position {j}", r.layer),
            None => format!("layer {} mean", r.layer),
        };
        let words = |i: usize| -> String {
            r.lens
                .get(i)
                .map(|l| {
                    l.promoted
                        .iter()
                        .take(5)
                        .map(|e| e.token.replace('▁', " "))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .unwrap_or_default()
        };
        let aligned = r
            .aligned_latents
            .first()
            .map(|a| format!("; best latent #{} (cos {:.2})", a.latent, a.cosine))
            .unwrap_or_default();
        println!(
            "  {label:<20} |delta| {:.3}{}; chat head: {}{aligned}",
            r.norm,
            r.model_norms
                .map(|[b, c]| format!(" (|h| base {b:.1}, chat {c:.1})"))
                .unwrap_or_default(),
            words(1)
        );
    }
}

/// `--bench`: the cost of the difference against the two forward passes it needs, at Gemma-2-2b shapes.
fn bench(texts: usize, k: usize, batch_size: usize, backend: BackendKind) -> Result<()> {
    use gemma_model::throughput::benchmark_batch;
    use gemma_model::{random_model, Gemma2Config, HookPoint, RunRequest, TokenBatch};
    use std::time::Instant;

    const LAYER: usize = 13;
    let config = Gemma2Config::gemma_2_2b();
    let options = LoadOptions {
        stop_at_layer: Some(LAYER),
        unembedding: true,
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
