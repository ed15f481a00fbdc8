//! Encode throughput measured where the work happens: on the device, with the activations already there.
//!
//! [`Crosscoder::encode`](crate::Crosscoder::encode) is the user path (host array in, host array out); on a
//! GPU its time at large batches is mostly the copy of the dense `[N, F]` latents back to the host. To compare
//! the kernels themselves with PyTorch (whose `relu(x @ W_enc + b_enc)` stays on the card), [`device_encode`]
//! times the same device encode the trait runs, on activations uploaded once, and [`device_gemm`] times the
//! backend's plain product `[N, n * d] @ [n * d, F]` beside it. Both wait for the device
//! (`Backend::sync`) after every repetition.
//!
//! ```
//! use crosscoder::throughput::{device_encode, random_checkpoint};
//! use crosscoder::BackendKind;
//!
//! let checkpoint = random_checkpoint(2, 16, 64, 1).unwrap();
//! let timings = device_encode(checkpoint, BackendKind::NdArray, &[32, 64], 2).unwrap();
//! assert_eq!(timings[1].rows, 64);
//! assert_eq!(timings[0].seconds.len(), 2);
//! assert!(timings[0].tokens_per_second() > 0.0);
//! ```

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use ndarray::{Array1, Array2, Array3};
use serde::Serialize;
use stereo_core::{dispatch, BackendKind, BackendVisitor, ComputeDtype};

use crate::checkpoint::{CrosscoderCheckpoint, CrosscoderWeights};
use crate::config::{CrosscoderConfig, InputNormalizer};
use crate::error::{CrosscoderError, Result};
use crate::model::CrosscoderModel;

/// Wall-clock times of repeated device work of one shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceTiming {
    /// What was timed (`encode` or `gemm`).
    pub what: String,
    /// The backend.
    pub backend: String,
    /// Rows per batch `N`.
    pub rows: usize,
    /// Inner dimension `n_models * d`.
    pub inner: usize,
    /// Latents `F`.
    pub dict_size: usize,
    /// Seconds of each timed repetition (after one untimed warm-up).
    pub seconds: Vec<f64>,
}

impl DeviceTiming {
    /// The median repetition, in seconds.
    pub fn median_seconds(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
        }
    }

    /// Rows per second at the median repetition.
    pub fn tokens_per_second(&self) -> f64 {
        self.rows as f64 / self.median_seconds()
    }

    /// GFLOP/s of the product at the median repetition (`2 N (n d) F`; bias and activation not counted).
    pub fn gflops(&self) -> f64 {
        2.0 * (self.rows * self.inner * self.dict_size) as f64 / self.median_seconds() / 1e9
    }
}

/// A ReLU crosscoder with deterministic uniform weights (`W_enc`, `W_dec` in `±1/sqrt(n d)`), for
/// benchmarks at real shapes without a checkpoint file.
///
/// # Errors
/// [`CrosscoderError::ShapeMismatch`] only if the sizes overflow what an array can hold.
pub fn random_checkpoint(
    n_models: usize,
    d_model: usize,
    dict_size: usize,
    seed: u64,
) -> Result<CrosscoderCheckpoint> {
    let (n, d, f) = (n_models, d_model, dict_size);
    let scale = 1.0 / ((n * d) as f32).sqrt();
    let shape_error = |e: ndarray::ShapeError| CrosscoderError::Device(e.to_string());
    let weights = CrosscoderWeights {
        w_enc: Array3::from_shape_vec((n, d, f), uniform(n * d * f, seed, scale))
            .map_err(shape_error)?,
        b_enc: Array1::from_vec(uniform(f, seed + 1, 0.05)),
        w_dec: Array3::from_shape_vec((n, f, d), uniform(n * d * f, seed + 2, scale))
            .map_err(shape_error)?,
        b_dec: Array2::zeros((n, d)),
    };
    CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(n, d, f),
        weights,
        InputNormalizer::Identity,
    )
}

/// Deterministic uniform values in `[-scale, scale)` (xorshift64), the same on every platform.
pub fn uniform(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Times `repeats` device encodes of each batch size in `rows` (random activations, uniform in `[-1, 1)`,
/// uploaded once per size) with `checkpoint` built once on `backend`; one untimed encode first at each size
/// (kernel compilation, autotuning).
///
/// # Errors
/// [`CrosscoderError::Backend`] when the backend is not usable here; [`CrosscoderError::Device`] when the
/// device fails to finish.
pub fn device_encode(
    checkpoint: CrosscoderCheckpoint,
    backend: BackendKind,
    rows: &[usize],
    repeats: usize,
) -> Result<Vec<DeviceTiming>> {
    device_encode_in(checkpoint, (backend, ComputeDtype::F32), rows, repeats)
}

/// [`device_encode`] with the crosscoder computing in `dtype` (see
/// [`CrosscoderCheckpoint::build_in`]); the timings' `what` is `encode` in f32, `encode_bf16` in bf16.
///
/// # Errors
/// As [`device_encode`], plus [`CrosscoderError::DtypeOnBackend`].
pub fn device_encode_in(
    checkpoint: CrosscoderCheckpoint,
    (backend, dtype): (BackendKind, ComputeDtype),
    rows: &[usize],
    repeats: usize,
) -> Result<Vec<DeviceTiming>> {
    if dtype == ComputeDtype::Bf16 && backend == BackendKind::NdArray {
        return Err(CrosscoderError::DtypeOnBackend {
            dtype: dtype.to_string(),
            backend: backend.to_string(),
        });
    }
    struct Encode<'a> {
        checkpoint: CrosscoderCheckpoint,
        kind: BackendKind,
        dtype: ComputeDtype,
        rows: &'a [usize],
        repeats: usize,
    }
    impl BackendVisitor for Encode<'_> {
        type Output = Result<Vec<DeviceTiming>>;
        fn visit<B: Backend>(self, device: B::Device) -> Self::Output {
            let config = self.checkpoint.config().clone();
            let inner = config.n_models * config.d_model;
            let model =
                CrosscoderModel::<B>::new(self.checkpoint, (self.kind, self.dtype), device.clone());
            let mut timings = Vec::with_capacity(self.rows.len());
            for &rows in self.rows {
                let x = Tensor::<B, 2>::random(
                    [rows, inner],
                    Distribution::Uniform(-1.0, 1.0),
                    &device,
                );
                let seconds = time_repeats::<B>(&device, self.repeats, || {
                    drop(model.encode_device(x.clone()))
                })?;
                timings.push(DeviceTiming {
                    what: match self.dtype {
                        ComputeDtype::F32 => "encode".into(),
                        ComputeDtype::Bf16 => "encode_bf16".into(),
                    },
                    backend: self.kind.to_string(),
                    rows,
                    inner,
                    dict_size: config.dict_size,
                    seconds,
                });
            }
            Ok(timings)
        }
    }
    dispatch(
        backend,
        Encode {
            checkpoint,
            kind: backend,
            dtype,
            rows,
            repeats,
        },
    )?
}

/// Times `repeats` plain products `[rows, inner] @ [inner, dict_size]` of random device tensors on
/// `backend` (the ceiling an encode can reach on it); one untimed product first.
///
/// # Errors
/// As [`device_encode`].
pub fn device_gemm(
    backend: BackendKind,
    rows: usize,
    inner: usize,
    dict_size: usize,
    repeats: usize,
) -> Result<DeviceTiming> {
    struct Gemm {
        kind: BackendKind,
        shape: [usize; 3],
        repeats: usize,
    }
    impl BackendVisitor for Gemm {
        type Output = Result<DeviceTiming>;
        fn visit<B: Backend>(self, device: B::Device) -> Self::Output {
            let [rows, inner, dict_size] = self.shape;
            let uniform = Distribution::Uniform(-1.0, 1.0);
            let a = Tensor::<B, 2>::random([rows, inner], uniform, &device);
            let w = Tensor::<B, 2>::random([inner, dict_size], uniform, &device);
            let seconds =
                time_repeats::<B>(&device, self.repeats, || drop(a.clone().matmul(w.clone())))?;
            Ok(DeviceTiming {
                what: "gemm".into(),
                backend: self.kind.to_string(),
                rows,
                inner,
                dict_size,
                seconds,
            })
        }
    }
    dispatch(
        backend,
        Gemm {
            kind: backend,
            shape: [rows, inner, dict_size],
            repeats,
        },
    )?
}

/// One untimed call, then `repeats` timed calls, each followed by a wait for the device.
fn time_repeats<B: Backend>(
    device: &B::Device,
    repeats: usize,
    mut work: impl FnMut(),
) -> Result<Vec<f64>> {
    let sync = |device: &B::Device| {
        B::sync(device).map_err(|e| CrosscoderError::Device(format!("device sync failed: {e:?}")))
    };
    work();
    sync(device)?;
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        work();
        sync(device)?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let mut t = DeviceTiming {
            what: "encode".into(),
            backend: "flex".into(),
            rows: 10,
            inner: 4,
            dict_size: 8,
            seconds: vec![3.0, 1.0, 2.0],
        };
        assert_eq!(t.median_seconds(), 2.0);
        assert_eq!(t.tokens_per_second(), 5.0);
        assert_eq!(t.gflops(), 2.0 * 10.0 * 4.0 * 8.0 / 2.0 / 1e9);
        t.seconds = vec![4.0, 1.0, 2.0, 3.0];
        assert_eq!(t.median_seconds(), 2.5);
    }

    #[test]
    fn random_checkpoint_is_deterministic_and_encodes() {
        let a = random_checkpoint(2, 8, 16, 3).unwrap();
        let b = random_checkpoint(2, 8, 16, 3).unwrap();
        assert_eq!(a.weights().w_enc, b.weights().w_enc);
        let cc = a.build(BackendKind::Flex).unwrap();
        let x = Array3::from_shape_vec((4, 2, 8), uniform(64, 9, 1.0)).unwrap();
        assert_eq!(cc.encode(x.view()).unwrap().dim(), (4, 16));
    }

    #[test]
    fn device_timings_run_on_a_cpu_backend() {
        let enc = device_encode(
            random_checkpoint(2, 8, 16, 1).unwrap(),
            BackendKind::Flex,
            &[8],
            3,
        )
        .unwrap()
        .remove(0);
        assert_eq!((enc.rows, enc.inner, enc.dict_size), (8, 16, 16));
        assert_eq!(enc.seconds.len(), 3);
        let gemm = device_gemm(BackendKind::NdArray, 8, 16, 32, 2).unwrap();
        assert_eq!(gemm.what, "gemm");
        assert!(gemm.gflops() > 0.0);
    }
}
