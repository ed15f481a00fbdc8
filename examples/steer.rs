//! Causal test of a crosscoder latent: generate with it clamped, ablated, steered or patched into base,
//! and measure how the chat model's answers change.
//!
//! ```text
//! # The embedded demo (tiny base/chat pair with planted mechanisms, fixtures/demo/):
//! cargo run --release --example steer -- --latent 19 --ablate --prompt "I'm 7 years old. Why is the sky blue?" --out steer/
//!
//! # A dose-response with the automatic strength, on real models:
//! cargo run --release --example steer -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 --latent 1234 \
//!     --clamp-dose-response --auto-strength --dataset prompts.txt --target " simple" --target " rigorous" --out steer/
//! ```
//!
//! Exactly one edit: `--clamp V[,V2...]` (set the latent to V), `--ablate` (clamp to 0), `--add ALPHA[,...]`
//! (steer along its chat decoder vector), `--patch-into-base` (base stream plus the latent's chat-minus-base
//! contribution), or `--clamp-dose-response` / `--add-dose-response` (-2, -1, 0, 1, 2, 4 times the
//! latent's largest activation on the prompts). Values are absolute unless `--relative` (x max activation).
//! Writes `steering.json` (schema: crates/steering/SCHEMA.md), `steering_dose_response.png` and
//! `steering.html` to `--out`.
//!
//! `--dataset` also takes a persona dataset (`fixtures/persona/user_persona_prompts.json` or one like it):
//! its forced-choice items (a false belief with an agreeing and a correcting answer) become the prompts,
//! and the edit is also measured as behaviour: `log p(agree) - log p(correct)` per item, unedited, edited
//! and with a matched-norm random latent, with paired statistics and judged free answers
//! (`preference.json`, `preference.png`, `preference.html` in `--out/preference[_<value>]/`):
//!
//! ```text
//! cargo run --release --example steer -- --latent 224 --ablate --dataset fixtures/persona/user_persona_prompts.json --out steer/
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use diff_analysis::behaviour::preference_items;
use gemma_model::generation::InterventionScope;
use gemma_model::BackendKind;
use gemma_model::ComputeDtype;
use persona_dataset::PersonaDataset;
use steering::preference::output::write_preference;
use steering::{
    run_preference, run_steering, EditKind, PreferenceEdit, PreferenceItem, PreferenceSpec,
    SteeringSpec, StrengthUnit,
};
use stereo::pair::{GenerationPair, PairChoice};

/// Clamp, ablate, steer or patch a crosscoder latent while the chat model generates.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base model (index 0) [default: the embedded demo's].
    #[arg(long)]
    base: Option<String>,
    /// Chat model (index 1) [default: the embedded demo's].
    #[arg(long)]
    chat: Option<String>,
    /// Crosscoder [default: the embedded demo's].
    #[arg(long)]
    crosscoder: Option<String>,
    /// The latent to edit; repeat to edit several together.
    #[arg(long = "latent", required_unless_present = "bench_lockstep")]
    latents: Vec<usize>,
    /// Clamp the latent to these values (a dose-response when several).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        group = "edit",
        value_parser = stereo::cli::finite
    )]
    clamp: Option<Vec<f32>>,
    /// Clamp to 0.
    #[arg(long, group = "edit")]
    ablate: bool,
    /// Add ALPHA times the latent's chat decoder vector (a dose-response when several).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        group = "edit",
        value_parser = stereo::cli::finite
    )]
    add: Option<Vec<f32>>,
    /// Feed the base stream plus the latent's chat-minus-base contribution to the chat model.
    #[arg(long, group = "edit")]
    patch_into_base: bool,
    /// Clamp at -2, -1, 0, 1, 2, 4 times the latent's largest activation on the prompts.
    #[arg(long, group = "edit")]
    clamp_dose_response: bool,
    /// Steer at -2, -1, 0, 1, 2, 4 times the latent's largest activation on the prompts.
    #[arg(long, group = "edit")]
    add_dose_response: bool,
    /// Read --clamp / --add values as multiples of the latent's largest activation on the prompts.
    #[arg(long)]
    relative: bool,
    /// Report the largest positive strength whose answers stay coherent.
    #[arg(long)]
    auto_strength: bool,
    /// How much higher than the baseline's the answers' NLL may be to count as coherent (nats/token).
    #[arg(long, default_value_t = 1.0, value_parser = stereo::cli::non_negative_f64)]
    coherence_margin: f64,
    /// A prompt; repeatable.
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A file of prompts: one per line (.txt), a JSON array of strings, or a persona dataset (.json)
    /// whose forced-choice items are also scored as behaviour.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// A string whose log-probability as the answer is compared (e.g. " simple"); repeatable.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Seed of the matched random-latent controls of the forced choice (persona datasets only).
    #[arg(long, default_value_t = 20)]
    control_seed: u64,
    /// How many matched random-latent controls the forced choice runs (0: none).
    #[arg(long, default_value_t = 5, value_parser = stereo::cli::count_or_zero)]
    controls: usize,
    /// Where the edit applies: all, prompt or generated.
    #[arg(long, default_value = "all")]
    scope: InterventionScope,
    /// Edit <bos> too.
    #[arg(long)]
    edit_bos: bool,
    /// New tokens per answer (greedy).
    #[arg(long, default_value_t = 32, value_parser = stereo::cli::count)]
    max_new_tokens: usize,
    /// Send prompts raw instead of as a user turn of the chat template.
    #[arg(long)]
    raw: bool,
    /// Full hook name [default: the crosscoder's].
    #[arg(long)]
    hook: Option<String>,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 8, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype of the models and the crosscoder: f32, or bf16 (bf16 weights and product
    /// inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Results directory.
    #[arg(long, default_value = "steering")]
    out: PathBuf,
    /// Read the hub cache only.
    #[arg(long)]
    offline: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Benchmark instead: random Gemma-2-2b weights (chat whole, base to layer 13) and a random
    /// 2 x 2304 -> 16384 crosscoder; a 128-token prompt and --max-new-tokens greedy tokens, plain chat
    /// decoding vs lockstep with a clamp at every step. Prints the time ratio and the peak RSS against the
    /// bytes of weights held.
    #[arg(long)]
    bench_lockstep: bool,
}

const DOSE_RESPONSE: [f32; 6] = [-2.0, -1.0, 0.0, 1.0, 2.0, 4.0];

/// The prompts, and the forced-choice items when `--dataset` is a persona dataset.
fn read_prompts(args: &Args) -> Result<(Vec<String>, Vec<PreferenceItem>)> {
    let mut prompts = args.prompts.clone();
    let mut items = Vec::new();
    if let Some(path) = &args.dataset {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let is_object = text.trim_start().starts_with('{');
        if path.extension().is_some_and(|e| e == "json") && is_object {
            let dataset = PersonaDataset::from_path(path)?;
            items = preference_items(&dataset);
            if items.is_empty() {
                bail!(
                    "{}: a persona dataset without forced-choice items (items with \"continuations\")",
                    path.display()
                );
            }
            prompts.extend(items.iter().map(|i| i.prompt_text().to_owned()));
        } else if path.extension().is_some_and(|e| e == "json") {
            let list: Vec<String> = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: expected a JSON array of strings or a persona dataset",
                    path.display()
                )
            })?;
            prompts.extend(list);
        } else {
            prompts.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
    }
    if prompts.is_empty() {
        bail!("give at least one --prompt or a --dataset file");
    }
    Ok((prompts, items))
}

/// The forced-choice runs of the edit: one for an ablation, one per value of a clamp or steer (a
/// relative value times the latent's largest activation on the prompts), with its directory name.
fn preference_runs(
    spec: &SteeringSpec,
    max_activation: &[f32],
) -> Result<Vec<(String, PreferenceEdit)>> {
    let absolute = |v: f32| -> Result<f32> {
        match spec.unit {
            StrengthUnit::Absolute => Ok(v),
            StrengthUnit::MaxActivation if max_activation.len() == 1 => Ok(v * max_activation[0]),
            StrengthUnit::MaxActivation => {
                bail!("the forced choice edits several latents with one absolute value: drop --relative")
            }
        }
    };
    Ok(match spec.kind {
        EditKind::Ablate => vec![("preference".into(), PreferenceEdit::Ablate)],
        EditKind::Clamp => spec
            .strengths
            .iter()
            .map(|v| {
                Ok((
                    format!("preference_clamp_{v}"),
                    PreferenceEdit::Clamp(absolute(*v)?),
                ))
            })
            .collect::<Result<_>>()?,
        EditKind::Steer => spec
            .strengths
            .iter()
            .map(|v| {
                Ok((
                    format!("preference_add_{v}"),
                    PreferenceEdit::Steer(absolute(*v)?),
                ))
            })
            .collect::<Result<_>>()?,
        EditKind::PatchIntoBase => {
            bail!("the forced choice measures --ablate, --clamp or --add, not --patch-into-base")
        }
    })
}

fn spec(args: &Args) -> Result<SteeringSpec> {
    let mut spec = SteeringSpec::clamp(args.latents[0]);
    spec.latents = args.latents.clone();
    let unit = if args.relative {
        StrengthUnit::MaxActivation
    } else {
        StrengthUnit::Absolute
    };
    (spec.kind, spec.strengths, spec.unit) = match (&args.clamp, &args.add) {
        (Some(v), _) => (EditKind::Clamp, v.clone(), unit),
        (_, Some(v)) => (EditKind::Steer, v.clone(), unit),
        _ if args.ablate => (EditKind::Ablate, Vec::new(), unit),
        _ if args.patch_into_base => (EditKind::PatchIntoBase, Vec::new(), unit),
        _ if args.clamp_dose_response => (
            EditKind::Clamp,
            DOSE_RESPONSE.to_vec(),
            StrengthUnit::MaxActivation,
        ),
        _ if args.add_dose_response => (
            EditKind::Steer,
            DOSE_RESPONSE.to_vec(),
            StrengthUnit::MaxActivation,
        ),
        _ => {
            bail!("choose an edit: --clamp, --ablate, --add, --patch-into-base or a dose-response")
        }
    };
    if args.auto_strength && !spec.strengths.iter().any(|s| *s > 0.0) {
        bail!("--auto-strength needs positive strengths (try --clamp-dose-response)");
    }
    spec.scope = args.scope;
    spec.edit_bos = args.edit_bos;
    spec.max_new_tokens = args.max_new_tokens;
    spec.chat_template = !args.raw;
    spec.targets = args.targets.clone();
    spec.coherence.max_nll_increase = args.coherence_margin;
    spec.batch_size = args.batch_size;
    Ok(spec)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.bench_lockstep {
        return bench_lockstep(args.max_new_tokens, args.backend, args.dtype);
    }
    let spec = spec(&args)?;
    let (prompts, items) = read_prompts(&args)?;
    if !items.is_empty() {
        // Refuse an edit the forced choice cannot take before anything runs.
        preference_runs(&spec, &vec![1.0; spec.latents.len()])?;
    }
    let pair = GenerationPair::load(
        PairChoice {
            base: args.base.clone(),
            chat: args.chat.clone(),
            crosscoder: args.crosscoder.clone(),
            hook: args.hook.clone(),
            offline: args.offline,
            dtype: args.dtype,
        }
        .prepare(args.backend)?,
    )?;
    let models = pair.models();
    let results = run_steering(&models, &spec, &prompts, !args.quiet)?;
    let files = steering::output::write_all(&results, &args.out)?;
    for s in &results.strengths {
        println!(
            "strength {:>5}: KL {:.4} ± {:.4}, NLL {:.3} (baseline {:.3}), distinct-2 {:.2}, {}/{} answers changed{}",
            s.strength,
            s.kl.mean,
            s.kl.half_width,
            s.nll.mean,
            results.baseline_nll.mean,
            s.distinct_2.mean,
            s.changed_answers,
            results.prompts.len(),
            if s.coherent { "" } else { "  (incoherent)" }
        );
    }
    if args.auto_strength {
        match results.auto_strength {
            Some(s) => println!("auto strength: {s}"),
            None => println!("auto strength: none (no positive strength stays coherent)"),
        }
    }
    println!("wrote {} files to {}", files.len(), args.out.display());
    if !items.is_empty() {
        for (name, edit) in preference_runs(&spec, &results.max_activation)? {
            let preference = PreferenceSpec {
                edit,
                free_tokens: args.max_new_tokens,
                batch_size: args.batch_size,
                control_seed: args.control_seed,
                controls: args.controls,
                ..PreferenceSpec::ablate(spec.latents.clone())
            };
            let found = run_preference(&models, &items, &preference, !args.quiet)?;
            let dir = args.out.join(&name);
            write_preference(&found, &dir)?;
            println!("{}; wrote {}", found.sentence(), dir.display());
        }
    }
    Ok(())
}

/// `--bench-lockstep`: the cost of steering on top of plain chat decoding, at Gemma-2-2b shapes.
fn bench_lockstep(new_tokens: usize, backend: BackendKind, dtype: ComputeDtype) -> Result<()> {
    use gemma_model::generation::ModelStepper;
    use gemma_model::throughput::{
        benchmark_batch, peak_rss_bytes, time_decode, weight_bytes_per_step_in,
    };
    use gemma_model::{random_model, Gemma2Config, HookPoint, LoadOptions};
    use model_pair::{EditPlan, LatentEdit, LockstepStepper};

    const PROMPT_LEN: usize = 128;
    const LAYER: usize = 13;
    const LATENTS: usize = 16_384;
    let config = Gemma2Config::gemma_2_2b();
    let chat_options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    let chat = random_model(&config, &chat_options.with_backend(backend), 1)?;
    let base_options = LoadOptions {
        stop_at_layer: Some(LAYER),
        unembedding: false,
        dtype,
        ..LoadOptions::default()
    }
    .with_backend(backend);
    let base = random_model(&config, &base_options, 2)?;
    let d = config.hidden_size;
    let crosscoder: Arc<dyn crosscoder::Crosscoder> = Arc::from(
        crosscoder::throughput::random_checkpoint(2, d, LATENTS, 3)?.build_in(backend, dtype)?,
    );
    let prompts = benchmark_batch(&config, 1, PROMPT_LEN, 0)?;
    let capacity = PROMPT_LEN + new_tokens;
    let mut plain = ModelStepper::new(chat.as_ref(), 1, capacity)?;
    let alone = time_decode(&mut plain, &prompts, new_tokens)?;
    let hook = HookPoint::ResidPost(LAYER);
    let mut lockstep =
        LockstepStepper::new(base.as_ref(), chat.as_ref(), crosscoder, hook, 1, capacity)?
            .with_plan(EditPlan::everywhere(LatentEdit::Clamp(vec![(0, 5.0)])))?;
    let edited = time_decode(&mut lockstep, &prompts, new_tokens)?;
    // Weights held: the chat model whole (tied embedding once), the base model's embedding and layers
    // 0..=13, the crosscoder's encoder and decoder.
    let held = weight_bytes_per_step_in(&config, config.num_hidden_layers, true, dtype)
        + weight_bytes_per_step_in(&config, LAYER + 1, true, dtype)
        + (2 * 2 * d * LATENTS * dtype.bytes_per_weight()) as u64;
    let rss = peak_rss_bytes();
    println!(
        "{}",
        serde_json::json!({
            "backend": backend.name(),
            "dtype": dtype.name(),
            "prompt_len": PROMPT_LEN,
            "new_tokens": new_tokens,
            "plain_decode_s": alone.decode_s,
            "lockstep_decode_s": edited.decode_s,
            "plain_prefill_s": alone.prefill_s,
            "lockstep_prefill_s": edited.prefill_s,
            "lockstep_over_plain": edited.decode_s / alone.decode_s,
            "weights_held_bytes": held,
            "peak_rss_bytes": rss,
            "rss_over_weights": rss.map(|r| r as f64 / held as f64),
        })
    );
    Ok(())
}
