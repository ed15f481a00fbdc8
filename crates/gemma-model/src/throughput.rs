//! Forward-pass and decoding benchmarks on any [`LanguageModel`]: deterministic token ids, repeated timed
//! runs, the pass's FLOPs, the weight bytes a decode step reads, the machine's read bandwidth and the
//! process's peak memory. Used by the `activations` and `generate` examples' benchmark modes, the
//! `gemma_forward` and `gemma_decode` criterion benches and the device check.
//!
//! ```
//! use gemma_model::throughput::{benchmark_batch, forward_flops, time_forward};
//! use gemma_model::{random_model, Gemma2Config, HookPoint, LoadOptions, RunRequest};
//!
//! let config = Gemma2Config::from_file(concat!(
//!     env!("CARGO_MANIFEST_DIR"),
//!     "/../../fixtures/gemma/tiny-window/config.json"
//! ))?;
//! let model = random_model(&config, &LoadOptions::default(), 0)?;
//! let batch = benchmark_batch(&config, 2, 8, 0)?;
//! let seconds = time_forward(model.as_ref(), &batch, &RunRequest::capture([HookPoint::ResidPost(1)]), 3)?;
//! assert_eq!(seconds.len(), 3);
//! assert!(forward_flops(&config, 2, 8) > 0.0);
//! # Ok::<(), gemma_model::GemmaError>(())
//! ```

use std::time::Instant;

use crate::batch::{PaddingSide, TokenBatch};
use crate::config::Gemma2Config;
use crate::error::Result;
use crate::generation::{argmax, StepPhase, TokenStepper};
use crate::hooks::{LogitPositions, RunRequest};
use crate::language_model::LanguageModel;

/// `batch` sequences of `seq_len` deterministic pseudo-random token ids (`<bos>` first), from `seed`.
///
/// # Errors
/// [`crate::GemmaError::InvalidInput`] for an empty batch or zero length.
pub fn benchmark_batch(
    config: &Gemma2Config,
    batch: usize,
    seq_len: usize,
    seed: u64,
) -> Result<TokenBatch> {
    let step = |s: u64| {
        s.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut state = step(seed);
    let sequences: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq_len)
                .map(|i| {
                    state = step(state);
                    if i == 0 {
                        config.bos_token_id
                    } else {
                        (state >> 33) as u32 % config.vocab_size as u32
                    }
                })
                .collect()
        })
        .collect();
    TokenBatch::new(&sequences, config.pad_token_id, PaddingSide::Right)
}

/// Runs `request` on `batch` once untimed (warm-up: kernel compilation, allocation), then `iters` times,
/// and returns the seconds of each timed run (each includes the copy of the results to the host).
///
/// # Errors
/// Whatever a run returns.
pub fn time_forward(
    model: &dyn LanguageModel,
    batch: &TokenBatch,
    request: &RunRequest,
    iters: usize,
) -> Result<Vec<f64>> {
    model.run(batch, request)?;
    let mut seconds = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        model.run(batch, request)?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    Ok(seconds)
}

/// Multiply-add FLOPs (2 per multiply-accumulate) of one sequence of `t` tokens through `n_layers` layers:
/// the projections and the MLP per token, the attention scores and weighted sum per pair of tokens.
pub fn forward_flops(c: &Gemma2Config, n_layers: usize, t: usize) -> f64 {
    let (d, q, kv, ff) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    let per_token = 2 * (d * q + 2 * d * kv + q * d + 3 * d * ff);
    let attention = 2 * 2 * c.num_attention_heads * c.head_dim * t * t;
    (n_layers * (per_token * t + attention)) as f64
}

/// The process's peak resident set size (`VmHWM`), on Linux; `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How long a generation took: the prefill of the prompts, then the decode steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeTiming {
    /// Rows decoded together.
    pub batch: usize,
    /// Prompt tokens per row.
    pub prompt_len: usize,
    /// New tokens per row (the first comes from the prefill).
    pub new_tokens: usize,
    /// Seconds of the prefill step.
    pub prefill_s: f64,
    /// Seconds of the `new_tokens - 1` decode steps.
    pub decode_s: f64,
}

impl DecodeTiming {
    /// Generated tokens per second over the decode steps, all rows together.
    pub fn decode_tokens_per_s(&self) -> f64 {
        (self.batch * self.new_tokens.saturating_sub(1)) as f64 / self.decode_s
    }

    /// Seconds per decode step.
    pub fn seconds_per_step(&self) -> f64 {
        self.decode_s / self.new_tokens.saturating_sub(1).max(1) as f64
    }
}

/// Greedy generation of exactly `new_tokens` tokens per row of `prompts` (no stop token) through
/// `stepper`, timed: the prefill, then every decode step.
///
/// # Errors
/// Whatever a step returns.
pub fn time_decode<S: TokenStepper + ?Sized>(
    stepper: &mut S,
    prompts: &TokenBatch,
    new_tokens: usize,
) -> std::result::Result<DecodeTiming, S::Error> {
    let greedy = |logits: &ndarray::Array3<f32>| -> Vec<Vec<u32>> {
        logits
            .outer_iter()
            .map(|row| vec![argmax(row.row(0).as_slice().unwrap_or(&[]))])
            .collect()
    };
    let start = Instant::now();
    let out = stepper.step(prompts, StepPhase::Prompt, LogitPositions::Last)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let mut next = greedy(&out.logits);
    let start = Instant::now();
    for index in 0..new_tokens.saturating_sub(1) {
        let tokens = TokenBatch::new(&next, 0, PaddingSide::Left)?;
        let out = stepper.step(
            &tokens,
            StepPhase::Generated { index },
            LogitPositions::Last,
        )?;
        next = greedy(&out.logits);
    }
    Ok(DecodeTiming {
        batch: prompts.batch_size(),
        prompt_len: prompts.seq_len(),
        new_tokens,
        prefill_s,
        decode_s: start.elapsed().as_secs_f64(),
    })
}

/// Bytes of f32 weights one decode step reads: every projection and norm of `n_layers` layers, and
/// (with `unembedding`) the `vocab x d_model` unembedding (tied to the embedding in Gemma-2). The
/// embedding lookup of the new tokens is negligible and not counted.
pub fn weight_bytes_per_step(c: &Gemma2Config, n_layers: usize, unembedding: bool) -> u64 {
    weight_bytes_per_step_in(c, n_layers, unembedding, crate::ComputeDtype::F32)
}

/// [`weight_bytes_per_step`] with the weight matrices held in `dtype` (norm weights stay f32).
pub fn weight_bytes_per_step_in(
    c: &Gemma2Config,
    n_layers: usize,
    unembedding: bool,
    dtype: crate::ComputeDtype,
) -> u64 {
    let (d, q, kv, ff) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    let matrices = n_layers * (d * q + 2 * d * kv + q * d + 3 * d * ff)
        + if unembedding { c.vocab_size * d } else { 0 };
    let norms = n_layers * 4 * d + if unembedding { d } else { 0 };
    (dtype.bytes_per_weight() * matrices + 4 * norms) as u64
}

/// The read bandwidth of this machine in GB/s (1e9 bytes): the best of five multi-threaded passes over
/// a buffer of `bytes` (make it several times the last-level cache), on rayon's pool, the pool the CPU
/// backends use, in each of two access patterns: blocks of 256 KiB handed out to the threads as they
/// finish, and one contiguous share per thread (the pattern of a decoding step's products, see
/// `stereo_core::matmul::skinny`). Each pass sums sixteen independent lanes, compiled for AVX2 where the CPU has
/// it, so that the adds vectorise and the loads, not the adds, set the pace.
pub fn read_bandwidth_gb_per_s(bytes: usize) -> f64 {
    use rayon::prelude::*;
    let values = vec![1.0f32; (bytes / 4).max(1)];
    let per_thread = values.len().div_ceil(rayon::current_num_threads());
    let mut best = f64::INFINITY;
    let mut total = 0.0f32;
    for chunk in [1 << 16, per_thread] {
        for _ in 0..5 {
            let start = Instant::now();
            total += values.par_chunks(chunk).map(sum).sum::<f32>();
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(total);
    (values.len() * 4) as f64 / best / 1e9
}

/// The sum of `values`, compiled for AVX2 where the CPU has it.
fn sum(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `sum_avx2`.
        return unsafe { sum_avx2(values) };
    }
    sum_portable(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(values: &[f32]) -> f32 {
    sum_portable(values)
}

#[inline(always)]
fn sum_portable(values: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let blocks = values.chunks_exact(LANES);
    let tail: f32 = blocks.remainder().iter().sum();
    for block in blocks {
        for (lane, v) in lanes.iter_mut().zip(block) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bandwidth_pass_sums_every_value_for_every_tail_length() {
        for n in [0usize, 1, 15, 16, 17, 1000] {
            let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
            assert_eq!(sum(&values), (n * n.saturating_sub(1) / 2) as f32);
        }
        assert!(read_bandwidth_gb_per_s(1 << 20) > 0.0);
    }

    #[test]
    fn benchmark_batches_are_deterministic_and_start_with_bos() {
        let c = Gemma2Config::gemma_2_2b();
        let a = benchmark_batch(&c, 3, 5, 7).unwrap();
        assert_eq!(a, benchmark_batch(&c, 3, 5, 7).unwrap());
        assert_ne!(a, benchmark_batch(&c, 3, 5, 8).unwrap());
        assert!(a
            .ids_array()
            .column(0)
            .iter()
            .all(|id| *id == c.bos_token_id as i64));
        assert_eq!(a.n_real_tokens(), 15);
    }

    #[test]
    fn decode_reads_every_weight_once_per_step() {
        let c = Gemma2Config::gemma_2_2b();
        // 2,614,341,888 parameters in google/gemma-2-2b (tied embedding), f32.
        assert_eq!(weight_bytes_per_step(&c, 26, true), 4 * 2_614_341_888);
    }

    #[test]
    fn flops_count_the_projections_and_attention() {
        let c = Gemma2Config::gemma_2_2b();
        // Gemma-2-2b: 2 x (2304 x 2048 + 2 x 2304 x 1024 + 2048 x 2304 + 3 x 2304 x 9216) per token and layer.
        let per_token =
            2.0 * (2304.0 * 2048.0 * 2.0 + 2.0 * 2304.0 * 1024.0 + 3.0 * 2304.0 * 9216.0);
        let attention = 4.0 * 8.0 * 256.0 * 64.0 * 64.0;
        assert_eq!(forward_flops(&c, 1, 64), per_token * 64.0 + attention);
    }
}
