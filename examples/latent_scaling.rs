//! Latent Scaling (Minder, Dumas et al. 2025): which "chat-only" latents are really chat-only, and which
//! are artifacts of the crosscoder's sparsity objective?
//!
//! ```text
//! cargo run --release --example latent_scaling -- \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 \
//!     --store cache/ --out scaling/
//! cargo run --release --example latent_scaling -- --crosscoder fixtures/demo/crosscoder \
//!     --activations pairs.safetensors --latents 19,12 --out scaling/
//! ```
//!
//! One streaming pass over paired activations, from an activation store (`cache_activations`) or a
//! safetensors file with `activations [N, 2, d]` (the `encode` example's input), fits per latent `j` and
//! model `m` the closed-form `beta = d . (sum f_j y) / (||d||^2 sum f_j^2)` (`d` the chat decoder vector,
//! in raw units) for the reconstruction, error and activation targets (`crosscoder::latent_scaling`).
//!
//! Writes to `--out`:
//! - `latent_scaling.safetensors`: `beta_reconstruction`, `beta_error`, `beta_activation` (f32 `[2, L]`,
//!   row 0 base, row 1 chat, NaN where the latent never fired), `nu_reconstruction`, `nu_error` (f32
//!   `[L]`), `sum_f2` (f64 `[L]`), `latents` (i64 `[L]`; `L = F` without `--latents`);
//! - `latent_scaling.json`: the rows, thresholds, counts, and every robust chat-only latent (relative
//!   decoder norm >= 0.9, nu_error < 0.2, nu_reconstruction < 0.5 by default) and every latent chat-only
//!   by its decoder norm that Latent Scaling does not confirm.
//!
//! With `--dtype bf16` the crosscoder is held in bf16; rows of a bf16 store then reach it as they are
//! (`read_rows_bf16`, `LatentScaling::add_batch_bf16`: no f32 copy of a batch; the same sums as
//! widening them first, bit for bit).
//!
//! The pass saves its sums to `latent_scaling_state.json` every `--checkpoint-every` batches; a run with
//! the same inputs continues where the last one stopped (`--restart` starts over).

use std::ops::Range;
use std::path::PathBuf;

use activation_cache::{ActivationStore, StoreDtype};
use anyhow::{bail, Context, Result};
use clap::Parser;
use crosscoder::{
    analysis::relative_norms, encode_file, BackendKind, Crosscoder, CrosscoderLoader,
    LatentScaling, LatentScalingResult, LatentScalingState, RobustThresholds, BASE, CHAT,
};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{s, Array3};
use serde::{Deserialize, Serialize};
use stereo_core::ComputeDtype;

const STATE_FILE: &str = "latent_scaling_state.json";

/// Latent Scaling of a crosscoder's latents over paired activations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Crosscoder: a directory, a `.pt` / `.safetensors` file, or a hub id (`org/name[/subfolder]`).
    #[arg(long)]
    crosscoder: String,
    /// Per-model scaling factors, comma-separated (ckkissane: they multiply the activations before encoding).
    #[arg(long, value_delimiter = ',', value_parser = stereo::cli::positive)]
    scaling_factors: Option<Vec<f32>>,
    /// Hub revision of the crosscoder (branch, tag or commit).
    #[arg(long)]
    revision: Option<String>,
    /// Only read the local hub cache (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Paired activations: a safetensors file with `activations [N, 2, d]`.
    #[arg(long, conflicts_with = "store", required_unless_present = "store")]
    activations: Option<PathBuf>,
    /// Paired activations: an activation store made by `cache_activations`.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Only these latents, comma-separated (default: every latent).
    #[arg(long, value_delimiter = ',')]
    latents: Option<Vec<usize>>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Rows per crosscoder forward.
    #[arg(long, default_value_t = 4096, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Save the running sums every this many batches (the pass resumes from them).
    #[arg(long, default_value_t = 16, value_parser = stereo::cli::count)]
    checkpoint_every: usize,
    /// Ignore saved sums and start over.
    #[arg(long)]
    restart: bool,
    /// Robust chat-only: relative decoder norm at least this.
    #[arg(long, default_value_t = 0.9, value_parser = stereo::cli::non_negative)]
    min_relative_norm: f32,
    /// Robust chat-only: nu_error below this.
    #[arg(long, default_value_t = 0.2, value_parser = stereo::cli::positive)]
    max_nu_error: f32,
    /// Robust chat-only: nu_reconstruction below this.
    #[arg(long, default_value_t = 0.5, value_parser = stereo::cli::positive)]
    max_nu_reconstruction: f32,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Compute dtype of the crosscoder: f32, or bf16 (bf16 weights and product inputs, f32 sums;
    /// flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
}

/// Where the rows come from.
enum Rows {
    File { path: PathBuf, x: Array3<f32> },
    Store(Box<ActivationStore>),
}

impl Rows {
    fn open(args: &Args) -> Result<Self> {
        Ok(match (&args.activations, &args.store) {
            (Some(path), _) => Rows::File {
                x: encode_file::read_activations(path)?,
                path: path.clone(),
            },
            (None, Some(dir)) => Rows::Store(Box::new(
                ActivationStore::open(dir)
                    .with_context(|| format!("opening the store {}", dir.display()))?,
            )),
            (None, None) => bail!("give --activations or --store"),
        })
    }

    fn len(&self) -> u64 {
        match self {
            Rows::File { x, .. } => x.dim().0 as u64,
            Rows::Store(store) => store.n_tokens(),
        }
    }

    fn read(&self, start: u64, end: u64) -> Result<Array3<f32>> {
        Ok(match self {
            Rows::File { x, .. } => x.slice(s![start as usize..end as usize, .., ..]).to_owned(),
            Rows::Store(store) => store.read_rows(&(start..end).collect::<Vec<_>>())?,
        })
    }

    /// Runs rows `range` through the crosscoder into `pass`. A bf16 store's rows go to a bf16
    /// crosscoder as they are (`read_rows_bf16`, `add_batch_bf16`: no f32 copy of the batch).
    fn add_to(
        &self,
        pass: &mut LatentScaling,
        cc: &dyn Crosscoder,
        dtype: ComputeDtype,
        range: Range<u64>,
    ) -> Result<()> {
        match self {
            Rows::Store(store)
                if dtype == ComputeDtype::Bf16
                    && store.manifest().config().dtype == StoreDtype::Bf16 =>
            {
                let x = store.read_rows_bf16(&range.collect::<Vec<_>>())?;
                pass.add_batch_bf16(cc, x.view())?;
            }
            _ => pass.add_batch(cc, self.read(range.start, range.end)?.view())?,
        }
        Ok(())
    }

    /// What identifies the rows, for resuming.
    fn describe(&self) -> String {
        match self {
            Rows::File { path, x } => format!("file {} {:?}", path.display(), x.dim()),
            Rows::Store(store) => format!(
                "store {} ({} tokens, corpus {})",
                store.dir().display(),
                store.n_tokens(),
                store.manifest().config().corpus.fingerprint
            ),
        }
    }
}

/// The saved progress of a pass.
#[derive(Serialize, Deserialize)]
struct Saved {
    crosscoder: String,
    rows_source: String,
    state: LatentScalingState,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut loader = CrosscoderLoader::new(&args.crosscoder)
        .backend(args.backend)
        .dtype(args.dtype);
    if let Some(f) = &args.scaling_factors {
        loader = loader.scaling_factors(f.clone());
    }
    if let Some(r) = &args.revision {
        loader = loader.revision(r);
    }
    let cc = loader
        .offline(args.offline)
        .load()
        .with_context(|| format!("loading crosscoder `{}`", args.crosscoder))?;
    if cc.n_models() != 2 {
        bail!(
            "Latent Scaling compares two models; {} has {}",
            args.crosscoder,
            cc.n_models()
        );
    }
    let rows = Rows::open(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut pass = start_or_resume(&args, cc.as_ref(), &rows)?;

    let total = rows.len();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "latent scaling {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .expect("a valid template"),
    );
    bar.set_position(pass.rows());
    let mut batches = 0;
    while pass.rows() < total {
        let start = pass.rows();
        let end = (start + args.batch_size as u64).min(total);
        rows.add_to(&mut pass, cc.as_ref(), args.dtype, start..end)?;
        bar.set_position(pass.rows());
        batches += 1;
        if batches % args.checkpoint_every == 0 {
            save_state(&args, &rows, pass.state())?;
        }
    }
    save_state(&args, &rows, pass.state())?;
    bar.finish_and_clear();

    let result = pass.result();
    let thresholds = RobustThresholds {
        min_relative_norm: args.min_relative_norm,
        max_nu_error: args.max_nu_error,
        max_nu_reconstruction: args.max_nu_reconstruction,
    };
    write_outputs(&args, cc.as_ref(), &rows, &result, &thresholds)
}

/// A fresh pass, or the saved one if it was made with the same crosscoder, rows and latents.
fn start_or_resume(args: &Args, cc: &dyn Crosscoder, rows: &Rows) -> Result<LatentScaling> {
    let fresh = || LatentScaling::new(cc, args.latents.as_deref());
    let path = args.out.join(STATE_FILE);
    if args.restart || !path.exists() {
        return Ok(fresh()?);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Saved = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a saved Latent Scaling pass", path.display()))?;
    let wanted = fresh()?;
    let same_latents = saved.state.latents == wanted.state().latents;
    if saved.crosscoder != args.crosscoder || saved.rows_source != rows.describe() || !same_latents
    {
        bail!(
            "{} holds a pass over other inputs (crosscoder `{}`, rows {}); give --restart to start over",
            path.display(),
            saved.crosscoder,
            saved.rows_source
        );
    }
    eprintln!("resuming at row {} of {}", saved.state.rows, rows.len());
    Ok(LatentScaling::from_state(cc, saved.state)?)
}

fn save_state(args: &Args, rows: &Rows, state: &LatentScalingState) -> Result<()> {
    let saved = Saved {
        crosscoder: args.crosscoder.clone(),
        rows_source: rows.describe(),
        state: state.clone(),
    };
    let path = args.out.join(STATE_FILE);
    stereo::backend::atomic_file::write_atomic(&path, serde_json::to_string(&saved)?.as_bytes())?;
    Ok(())
}

fn write_outputs(
    args: &Args,
    cc: &dyn Crosscoder,
    rows: &Rows,
    result: &LatentScalingResult,
    thresholds: &RobustThresholds,
) -> Result<()> {
    let norms = relative_norms(cc.decoder_norms().view(), BASE, CHAT)?;
    let robust = result.robust_chat_only(&norms, thresholds);
    let column = |j: usize| result.latents.iter().position(|&l| l == j);
    let describe = |j: usize| {
        let i = column(j).expect("a latent of the pass");
        serde_json::json!({
            "latent": j,
            "relative_norm": norms[j],
            "nu_error": finite_or_null(result.nu_error[i]),
            "nu_reconstruction": finite_or_null(result.nu_reconstruction[i]),
            "beta_error": [finite_or_null(result.beta_error[[BASE, i]]), finite_or_null(result.beta_error[[CHAT, i]])],
            "beta_reconstruction": [finite_or_null(result.beta_reconstruction[[BASE, i]]), finite_or_null(result.beta_reconstruction[[CHAT, i]])],
        })
    };
    let chat_only_by_norm: Vec<usize> = result
        .latents
        .iter()
        .copied()
        .filter(|&j| norms[j] >= thresholds.min_relative_norm)
        .collect();
    let not_confirmed: Vec<usize> = chat_only_by_norm
        .iter()
        .copied()
        .filter(|j| !robust.contains(j))
        .collect();
    let never_fired = result.sum_f2.iter().filter(|v| **v == 0.0).count();
    let summary = serde_json::json!({
        "crosscoder": args.crosscoder,
        "rows_source": rows.describe(),
        "rows": result.rows,
        "latents": result.latents.len(),
        "never_fired": never_fired,
        "thresholds": thresholds,
        "chat_only_by_norm": chat_only_by_norm.len(),
        "robust_chat_only": robust.iter().map(|&j| describe(j)).collect::<Vec<_>>(),
        "chat_only_by_norm_not_robust": not_confirmed.iter().map(|&j| describe(j)).collect::<Vec<_>>(),
    });
    let tensors = args.out.join("latent_scaling.safetensors");
    result.write_safetensors(
        &tensors,
        stereo::backend::safetensors_file::metadata([
            ("crosscoder", args.crosscoder.clone()),
            ("rows", result.rows.to_string()),
        ]),
    )?;
    let json = args.out.join("latent_scaling.json");
    stereo::backend::atomic_file::write_atomic(
        &json,
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "{} rows, {} latents ({} never fired): {} chat-only by decoder norm, {} robust by Latent Scaling",
        result.rows,
        result.latents.len(),
        never_fired,
        chat_only_by_norm.len(),
        robust.len()
    );
    println!("wrote {} and {}", tensors.display(), json.display());
    Ok(())
}

/// JSON has no NaN: a number, or null where the latent never fired.
fn finite_or_null(x: f32) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}
