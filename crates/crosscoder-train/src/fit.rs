//! The training loop: batches by step, metrics to JSONL, periodic atomic checkpoints, a progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array3;

use crate::{CrosscoderTrainer, StepMetrics};
use crosscoder::{CrosscoderError, Result};
use stereo_core::atomic_file::write_atomic;

/// How [`fit`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Run until this step index (default: the config's `total_steps`).
    pub until_step: Option<usize>,
    /// Where to write the trainer checkpoint (atomically replaced each time).
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint every this many steps (and always at the end); 0: only at the end.
    pub checkpoint_every: usize,
    /// One JSON object per step ([`StepMetrics`]). Lines from steps at or after the starting step (left by
    /// a run that crashed after its last checkpoint) are dropped first, so a resumed file has each step once.
    pub metrics: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            until_step: None,
            checkpoint: None,
            checkpoint_every: 1000,
            metrics: None,
            progress: true,
        }
    }
}

/// What [`fit`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSummary {
    /// Steps run by this call.
    pub steps_run: usize,
    /// Metrics of the last step, if any ran.
    pub last: Option<StepMetrics>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Runs `trainer` from its current step to `options.until_step`, asking `next_batch(step)` for each step's
/// batch. For a resumed run to equal an uninterrupted one, `next_batch` must be a function of the step
/// (e.g. `activation_cache`'s `StepBatches`).
///
/// # Errors
/// Whatever the batch source or a step returns; I/O errors writing metrics or checkpoints.
pub fn fit(
    trainer: &mut dyn CrosscoderTrainer,
    mut next_batch: impl FnMut(usize) -> Result<Array3<f32>>,
    options: &FitOptions,
) -> Result<FitSummary> {
    let start = trainer.step_index();
    let until = options.until_step.unwrap_or(trainer.config().total_steps);
    let started = Instant::now();
    let mut metrics_file = match &options.metrics {
        Some(path) => Some(open_metrics(path, start)?),
        None => None,
    };
    let bar = if options.progress {
        let bar = ProgressBar::new(until as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} train [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({eta}) {msg}",
            )
            .expect("static template"),
        );
        bar.set_position(start as u64);
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut last = None;
    for step in start..until {
        let batch = next_batch(step)?;
        let metrics = trainer.step(batch.view())?;
        if let (Some(file), Some(path)) = (metrics_file.as_mut(), options.metrics.as_ref()) {
            let line =
                serde_json::to_string(&metrics).map_err(|e| CrosscoderError::json(path, e))?;
            writeln!(file, "{line}").map_err(|e| CrosscoderError::io(path, e))?;
        }
        bar.set_message(format!(
            "loss {:.4} L0 {:.1} FVU {}",
            metrics.loss,
            metrics.l0,
            metrics
                .fvu
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join("/")
        ));
        bar.inc(1);
        let done = step + 1;
        if let Some(path) = &options.checkpoint {
            if (options.checkpoint_every > 0 && done % options.checkpoint_every == 0)
                || done == until
            {
                if let (Some(file), Some(mpath)) = (metrics_file.as_mut(), options.metrics.as_ref())
                {
                    // Metrics up to the checkpoint are on disk before the checkpoint says they happened.
                    file.sync_data()
                        .map_err(|e| CrosscoderError::io(mpath, e))?;
                }
                trainer.state()?.save(path)?;
            }
        }
        last = Some(metrics);
    }
    bar.finish_and_clear();
    Ok(FitSummary {
        steps_run: until.saturating_sub(start),
        last,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Opens the metrics JSONL for appending after dropping lines of steps `>= start`.
fn open_metrics(path: &Path, start: usize) -> Result<std::fs::File> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| CrosscoderError::io(path, e))?;
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| (s as usize) < start)
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        write_atomic(path, kept.as_bytes())?;
    } else if start > 0 {
        tracing::warn!(path = %path.display(), start, "resuming without the earlier metrics file");
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| CrosscoderError::io(path, e))
}
