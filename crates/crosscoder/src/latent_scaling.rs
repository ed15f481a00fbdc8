//! Latent Scaling (Minder, Dumas et al. 2025, "Overcoming sparsity artifacts in crosscoders to interpret
//! chat-tuning"): is a "chat-only" latent really absent from the base model, or an artifact of the
//! crosscoder's sparsity objective?
//!
//! For latent `j` take its chat decoder vector `d = d_j^chat` and, for each model `m`, fit the scalar
//! `beta` that best explains a target `y^m` by `beta f_j d` over many rows (closed-form least squares):
//!
//! ```text
//! beta^m_j = d . (sum_n f_j(x_n) y^m_n) / (||d||^2 sum_n f_j(x_n)^2)
//! ```
//!
//! with three targets: the reconstruction `y = r^m` (`beta_reconstruction`), the error with the latent's
//! own contribution added back `y = eps^m + f_j d_j^m = h^m - r^m + f_j d_j^m` (`beta_error`), and the
//! activation itself `y = h^m` (`beta_activation`). The ratios `nu = beta^base / beta^chat` of the
//! reconstruction and error targets tell the cases apart: a latent the base model also carries has `nu`
//! near 1; a robust chat-only latent has both small (the paper: `nu_error < 0.2`, `nu_reconstruction < 0.5`,
//! with a relative decoder norm of at least 0.9). High `nu_error` flags complete shrinkage (the base
//! decoder was shrunk to zero although the base model has the direction), high `nu_reconstruction` latent
//! decoupling (another latent reconstructs it in the base model).
//!
//! Everything is in the models' raw units: the decoder directions are `decode(e_j) - decode(0)` (the
//! decoder rows divided by the normaliser's per-model divisor), so a crosscoder that normalises its inputs
//! (scaling factors, dictionary_learning's normaliser) is handled exactly, and `f` are the raw latents of [`Crosscoder::encode`] (what multiplies the decoder rows).
//!
//! The pass is streaming and exact: per row only the latents that fire contribute, and the error target
//! needs no per-latent copy of the data, since `d . sum_n f_j (h_n - r_n + f_j d_j^m) = d . sum_n f_j h_n -
//! d . sum_n f_j r_n + (d . d_j^m) sum_n f_j^2`. The sums are kept in f64; [`LatentScaling`] can be saved
//! and resumed ([`LatentScalingState`]).

use std::path::Path;

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stereo_core::matmul::WeightElement;
use stereo_core::safetensors_file::{self, Metadata, OwnedTensor};

use crate::error::{CrosscoderError, Result};
use crate::traits::Crosscoder;
use crate::{BASE, CHAT};

/// The paper's thresholds for a robust chat-only latent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RobustThresholds {
    /// Relative decoder norm `n_chat / (n_base + n_chat)` at least this.
    pub min_relative_norm: f32,
    /// `nu_error` below this.
    pub max_nu_error: f32,
    /// `nu_reconstruction` below this.
    pub max_nu_reconstruction: f32,
}

impl Default for RobustThresholds {
    fn default() -> Self {
        RobustThresholds {
            min_relative_norm: 0.9,
            max_nu_error: 0.2,
            max_nu_reconstruction: 0.5,
        }
    }
}

impl RobustThresholds {
    /// Whether a latent with these numbers is robustly chat-only (NaN is never robust).
    pub fn is_robust(&self, relative_norm: f32, nu_error: f32, nu_reconstruction: f32) -> bool {
        relative_norm >= self.min_relative_norm
            && nu_error < self.max_nu_error
            && nu_reconstruction < self.max_nu_reconstruction
    }
}

/// The running sums of one pass, per selected latent, in f64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    /// `sum_n f_j^2`.
    pub sum_f2: Vec<f64>,
    /// `d . sum_n f_j r^m_n`, `[model][latent]`.
    pub dot_reconstruction: [Vec<f64>; 2],
    /// `d . sum_n f_j h^m_n`, `[model][latent]`.
    pub dot_activation: [Vec<f64>; 2],
}

impl Sums {
    fn zeros(l: usize) -> Self {
        Sums {
            sum_f2: vec![0.0; l],
            dot_reconstruction: [vec![0.0; l], vec![0.0; l]],
            dot_activation: [vec![0.0; l], vec![0.0; l]],
        }
    }

    fn len_is(&self, l: usize) -> bool {
        self.sum_f2.len() == l
            && self.dot_reconstruction.iter().all(|v| v.len() == l)
            && self.dot_activation.iter().all(|v| v.len() == l)
    }

    fn add(mut self, other: Sums) -> Sums {
        let add = |a: &mut Vec<f64>, b: &[f64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.sum_f2, &other.sum_f2);
        for m in 0..2 {
            add(
                &mut self.dot_reconstruction[m],
                &other.dot_reconstruction[m],
            );
            add(&mut self.dot_activation[m], &other.dot_activation[m]);
        }
        self
    }
}

/// Where a pass stands: the latents, the rows seen and the sums. Serialisable, so that a long pass can
/// be saved and resumed ([`LatentScaling::from_state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentScalingState {
    /// The latents, in the order of every per-latent vector.
    pub latents: Vec<usize>,
    /// Rows seen.
    pub rows: u64,
    /// The sums over those rows.
    pub sums: Sums,
}

/// The betas and ratios of a finished pass. Per-latent vectors follow [`Self::latents`]; rows of the
/// `[2, L]` arrays are the models (0 base, 1 chat). NaN where the latent never fired (or its chat decoder
/// vector is zero): there is nothing to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentScalingResult {
    /// The latents.
    pub latents: Vec<usize>,
    /// Rows the sums ran over.
    pub rows: u64,
    /// `sum_n f_j^2` over the rows, `[L]` (0 for a latent that never fired).
    pub sum_f2: Array1<f64>,
    /// `beta` for the reconstruction target, `[2, L]`.
    pub beta_reconstruction: Array2<f32>,
    /// `beta` for the error target (the latent's own contribution added back), `[2, L]`.
    pub beta_error: Array2<f32>,
    /// `beta` for the activation target, `[2, L]`.
    pub beta_activation: Array2<f32>,
    /// `beta_reconstruction[base] / beta_reconstruction[chat]`, `[L]`.
    pub nu_reconstruction: Array1<f32>,
    /// `beta_error[base] / beta_error[chat]`, `[L]`.
    pub nu_error: Array1<f32>,
}

impl LatentScalingResult {
    /// The result as safetensors tensors: `beta_reconstruction`, `beta_error`, `beta_activation` (f32
    /// `[2, L]`, row 0 base, row 1 chat), `nu_reconstruction`, `nu_error` (f32 `[L]`), `sum_f2` (f64
    /// `[L]`) and `latents` (i64 `[L]`, the latent of each column; `0..F` for a pass over all).
    pub fn to_tensors(&self) -> Vec<OwnedTensor> {
        let l = self.latents.len();
        let f32s =
            |name: &str, a: &Array2<f32>| OwnedTensor::f32(name, vec![2, l], a.iter().copied());
        vec![
            f32s("beta_reconstruction", &self.beta_reconstruction),
            f32s("beta_error", &self.beta_error),
            f32s("beta_activation", &self.beta_activation),
            OwnedTensor::f32(
                "nu_reconstruction",
                vec![l],
                self.nu_reconstruction.iter().copied(),
            ),
            OwnedTensor::f32("nu_error", vec![l], self.nu_error.iter().copied()),
            OwnedTensor::f64("sum_f2", vec![l], self.sum_f2.iter().copied()),
            OwnedTensor::i64("latents", vec![l], self.latents.iter().map(|&j| j as i64)),
        ]
    }

    /// Writes [`Self::to_tensors`] to `path` atomically, with `metadata` in the header.
    pub fn write_safetensors(&self, path: &Path, metadata: Metadata) -> Result<()> {
        safetensors_file::write(path, &self.to_tensors(), metadata).map_err(|e| {
            CrosscoderError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    /// The latents (with their column) that pass `thresholds`, given every latent's relative decoder
    /// norm `n_chat / (n_base + n_chat)` (`[F]`).
    pub fn robust_chat_only(
        &self,
        relative_norms: &Array1<f32>,
        thresholds: &RobustThresholds,
    ) -> Vec<usize> {
        self.latents
            .iter()
            .enumerate()
            .filter(|(i, &j)| {
                thresholds.is_robust(
                    relative_norms[j],
                    self.nu_error[*i],
                    self.nu_reconstruction[*i],
                )
            })
            .map(|(_, &j)| j)
            .collect()
    }
}

/// A streaming Latent Scaling pass over paired activations `[rows, 2, d]` in raw units.
pub struct LatentScaling {
    /// Raw decoder directions `decode(e_j) - decode(0)` of the selected latents, `[L, 2, d]`.
    directions: Array3<f32>,
    /// `||d_j^chat||^2`, `[L]`.
    chat_norm2: Vec<f64>,
    /// `d_j^chat . d_j^m`, `[2][L]`.
    chat_dot_model: [Vec<f64>; 2],
    /// Position of each latent in the selection (`usize::MAX` if not selected), `[F]`.
    slot: Vec<usize>,
    state: LatentScalingState,
}

impl LatentScaling {
    /// A pass over every latent of `crosscoder` (`latents = None`) or the chosen ones (each once, in
    /// the order given). The crosscoder must span two models (base and chat).
    pub fn new(crosscoder: &dyn Crosscoder, latents: Option<&[usize]>) -> Result<Self> {
        let f_dim = crosscoder.dict_size();
        let latents: Vec<usize> = match latents {
            None => (0..f_dim).collect(),
            Some(list) => {
                let mut seen = vec![false; f_dim];
                let mut kept = Vec::with_capacity(list.len());
                for &j in list {
                    if j >= f_dim {
                        return Err(CrosscoderError::LatentIndex {
                            index: j,
                            dict_size: f_dim,
                        });
                    }
                    if !std::mem::replace(&mut seen[j], true) {
                        kept.push(j);
                    }
                }
                kept
            }
        };
        let state = LatentScalingState {
            sums: Sums::zeros(latents.len()),
            rows: 0,
            latents,
        };
        Self::from_state(crosscoder, state)
    }

    /// Continues a pass from a saved `state` (see [`Self::state`]).
    pub fn from_state(crosscoder: &dyn Crosscoder, state: LatentScalingState) -> Result<Self> {
        let latents = &state.latents;
        if !state.sums.len_is(latents.len()) {
            return Err(CrosscoderError::InvalidOption(format!(
                "a Latent Scaling state for {} latents has sums of other lengths",
                latents.len()
            )));
        }
        if crosscoder.n_models() != 2 {
            return Err(CrosscoderError::ModelIndex {
                index: CHAT,
                n_models: crosscoder.n_models(),
            });
        }
        let f_dim = crosscoder.dict_size();
        if let Some(&j) = latents.iter().find(|&&j| j >= f_dim) {
            return Err(CrosscoderError::LatentIndex {
                index: j,
                dict_size: f_dim,
            });
        }
        let directions = raw_directions(crosscoder, latents)?;
        let dot = |a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>| -> f64 {
            a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
        };
        let chat_norm2 = directions
            .outer_iter()
            .map(|v| dot(v.row(CHAT), v.row(CHAT)))
            .collect();
        let chat_dot_model = [BASE, CHAT].map(|m| {
            directions
                .outer_iter()
                .map(|v| dot(v.row(CHAT), v.row(m)))
                .collect()
        });
        let mut slot = vec![usize::MAX; f_dim];
        for (l, &j) in latents.iter().enumerate() {
            slot[j] = l;
        }
        Ok(LatentScaling {
            directions,
            chat_norm2,
            chat_dot_model,
            slot,
            state,
        })
    }

    /// The running sums (save them to resume a long pass with [`Self::from_state`]).
    pub fn state(&self) -> &LatentScalingState {
        &self.state
    }

    /// Rows seen so far.
    pub fn rows(&self) -> u64 {
        self.state.rows
    }

    /// Encodes and reconstructs `x` (`[rows, 2, d]`, raw units) with `crosscoder` and adds the rows.
    pub fn add_batch(&mut self, crosscoder: &dyn Crosscoder, x: ArrayView3<'_, f32>) -> Result<()> {
        let out = crosscoder.forward(x)?;
        self.add_forward(x, out.latents.view(), out.reconstruction.view())
    }

    /// [`Self::add_batch`] of bf16 rows (a bf16 activation store's, as they are): the crosscoder
    /// reads them through [`Crosscoder::forward_bf16`] and the sums widen each value as they read it,
    /// so the batch is never copied to f32. Equal to `add_batch` of the rows' f32 values.
    pub fn add_batch_bf16(
        &mut self,
        crosscoder: &dyn Crosscoder,
        x: ArrayView3<'_, half::bf16>,
    ) -> Result<()> {
        let out = crosscoder.forward_bf16(x)?;
        self.add_forward(x, out.latents.view(), out.reconstruction.view())
    }

    /// Adds rows `x` (f32 or bf16) whose raw latents `f` (`[rows, F]`) and reconstruction `r`
    /// (`[rows, 2, d]`) are already known (for example from a hunt that ran the crosscoder anyway).
    pub fn add_forward<X: WeightElement>(
        &mut self,
        x: ArrayView3<'_, X>,
        f: ArrayView2<'_, f32>,
        r: ArrayView3<'_, f32>,
    ) -> Result<()> {
        let (rows, n_models, d) = x.dim();
        let expected = [rows, 2, self.directions.dim().2];
        if [rows, n_models, d] != expected {
            return Err(CrosscoderError::ActivationShape {
                n_models: 2,
                d_model: expected[2],
                actual: vec![rows, n_models, d],
            });
        }
        if r.dim() != (rows, 2, d) {
            return Err(CrosscoderError::ActivationShape {
                n_models: 2,
                d_model: d,
                actual: r.shape().to_vec(),
            });
        }
        if f.dim() != (rows, self.slot.len()) {
            return Err(CrosscoderError::LatentShape {
                dict_size: self.slot.len(),
                actual: f.shape().to_vec(),
            });
        }
        let l = self.state.latents.len();
        let batch = (0..rows)
            .into_par_iter()
            .with_min_len(64)
            .fold(
                || Sums::zeros(l),
                |mut acc, n| {
                    self.accumulate_row(&mut acc, x, f, r, n);
                    acc
                },
            )
            .reduce(|| Sums::zeros(l), Sums::add);
        let sums = std::mem::replace(&mut self.state.sums, Sums::zeros(0));
        self.state.sums = sums.add(batch);
        self.state.rows += rows as u64;
        Ok(())
    }

    /// Adds row `n`'s firing selected latents to `acc`.
    fn accumulate_row<X: WeightElement>(
        &self,
        acc: &mut Sums,
        x: ArrayView3<'_, X>,
        f: ArrayView2<'_, f32>,
        r: ArrayView3<'_, f32>,
        n: usize,
    ) {
        for (j, &fj) in f.row(n).iter().enumerate() {
            let l = self.slot[j];
            if fj == 0.0 || l == usize::MAX {
                continue;
            }
            let fj = fj as f64;
            let d = self.directions.index_axis(Axis(0), l);
            let d = d.row(CHAT);
            acc.sum_f2[l] += fj * fj;
            for m in [BASE, CHAT] {
                acc.dot_reconstruction[m][l] += fj * dot(d, r.slice(ndarray::s![n, m, ..]));
                acc.dot_activation[m][l] += fj * dot(d, x.slice(ndarray::s![n, m, ..]));
            }
        }
    }

    /// The betas and ratios of the rows seen so far.
    pub fn result(&self) -> LatentScalingResult {
        let (state, s) = (&self.state, &self.state.sums);
        let l = state.latents.len();
        let mut beta_reconstruction = Array2::from_elem((2, l), f32::NAN);
        let mut beta_error = Array2::from_elem((2, l), f32::NAN);
        let mut beta_activation = Array2::from_elem((2, l), f32::NAN);
        for i in 0..l {
            let denominator = self.chat_norm2[i] * s.sum_f2[i];
            if denominator <= 0.0 || !denominator.is_finite() {
                continue;
            }
            for m in [BASE, CHAT] {
                let (dr, dh) = (s.dot_reconstruction[m][i], s.dot_activation[m][i]);
                beta_reconstruction[[m, i]] = (dr / denominator) as f32;
                beta_activation[[m, i]] = (dh / denominator) as f32;
                beta_error[[m, i]] = ((dh - dr) / denominator
                    + self.chat_dot_model[m][i] / self.chat_norm2[i])
                    as f32;
            }
        }
        let ratio = |b: &Array2<f32>| Array1::from_shape_fn(l, |i| b[[BASE, i]] / b[[CHAT, i]]);
        LatentScalingResult {
            latents: state.latents.clone(),
            rows: state.rows,
            sum_f2: Array1::from_vec(s.sum_f2.clone()),
            nu_reconstruction: ratio(&beta_reconstruction),
            nu_error: ratio(&beta_error),
            beta_reconstruction,
            beta_error,
            beta_activation,
        }
    }
}

/// `a . b` in f64 over f32 values (`b` f32 or bf16, widened as read), eight lanes at a time.
fn dot<X: WeightElement>(a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<X>) -> f64 {
    match (a.as_slice(), b.as_slice()) {
        (Some(a), Some(b)) => {
            let mut lanes = [0f64; 8];
            let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
            let tail: f64 = ca
                .remainder()
                .iter()
                .zip(cb.remainder())
                .map(|(x, y)| *x as f64 * y.widen() as f64)
                .sum();
            for (xa, xb) in ca.zip(cb) {
                for k in 0..8 {
                    lanes[k] += xa[k] as f64 * xb[k].widen() as f64;
                }
            }
            lanes.iter().sum::<f64>() + tail
        }
        _ => a
            .iter()
            .zip(b)
            .map(|(x, y)| *x as f64 * y.widen() as f64)
            .sum(),
    }
}

/// `decode(e_j) - decode(0)` for each latent, `[L, n_models, d]`: the decoder rows in the models' raw
/// units. Decoding is affine, `x = (f W_dec + b_dec) / divisor_m + shift_m` for every normaliser, so this is
/// `W_dec[m, j] / divisor_m` (read once, not decoded: one-hot decodes would cost `O(F^2 d)`).
pub fn raw_directions(crosscoder: &dyn Crosscoder, latents: &[usize]) -> Result<Array3<f32>> {
    let (n, d) = (crosscoder.n_models(), crosscoder.d_model());
    let mut directions = crosscoder.decoder_vectors(latents)?;
    if let Some((_, _, divisor)) = crosscoder.normalizer().affine(n, d) {
        for (m, divisor) in divisor.iter().enumerate() {
            directions
                .index_axis_mut(Axis(1), m)
                .mapv_inplace(|v| v / divisor);
        }
    }
    Ok(directions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throughput::uniform;
    use crate::{CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights, InputNormalizer};
    use stereo_core::BackendKind;

    const D: usize = 6;
    const F: usize = 9;

    fn crosscoder(normalizer: InputNormalizer) -> Box<dyn Crosscoder> {
        let mut w_dec = Array3::from_shape_vec((2, F, D), uniform(2 * F * D, 3, 1.0)).unwrap();
        // Latent 8 never fires (its bias is very negative); latent 7 is chat-only by its decoder.
        w_dec.slice_mut(ndarray::s![BASE, 7, ..]).fill(0.0);
        let mut b_enc = Array1::from_vec(uniform(F, 2, 0.1));
        b_enc[8] = -1e6;
        let weights = CrosscoderWeights {
            w_enc: Array3::from_shape_vec((2, D, F), uniform(2 * D * F, 1, 0.6)).unwrap(),
            b_enc,
            w_dec,
            b_dec: Array2::from_shape_vec((2, D), uniform(2 * D, 4, 0.3)).unwrap(),
        };
        CrosscoderCheckpoint::new(CrosscoderConfig::relu(2, D, F), weights, normalizer)
            .unwrap()
            .build(BackendKind::Flex)
            .unwrap()
    }

    fn activations(rows: usize, seed: u64) -> Array3<f32> {
        Array3::from_shape_vec((rows, 2, D), uniform(rows * 2 * D, seed, 2.0)).unwrap()
    }

    /// The definition, one latent at a time, with the error target built explicitly.
    fn direct(cc: &dyn Crosscoder, x: &Array3<f32>) -> [Array2<f64>; 3] {
        let out = cc.forward(x.view()).unwrap();
        let zero = cc.decode(Array2::zeros((1, F)).view()).unwrap();
        let mut betas = [(); 3].map(|_| Array2::from_elem((2, F), f64::NAN));
        for j in 0..F {
            let mut e = Array2::zeros((1, F));
            e[[0, j]] = 1.0;
            let dirs = cc.decode(e.view()).unwrap() - &zero;
            let d = dirs.slice(ndarray::s![0, CHAT, ..]).mapv(|v| v as f64);
            let f: Vec<f64> = out.latents.column(j).iter().map(|v| *v as f64).collect();
            let sum_f2: f64 = f.iter().map(|v| v * v).sum();
            if sum_f2 == 0.0 {
                continue;
            }
            for m in [BASE, CHAT] {
                let dm = dirs.slice(ndarray::s![0, m, ..]).mapv(|v| v as f64);
                let mut sums = [Array1::<f64>::zeros(D), Array1::zeros(D), Array1::zeros(D)];
                for (n, fj) in f.iter().enumerate() {
                    let h = x.slice(ndarray::s![n, m, ..]).mapv(|v| v as f64);
                    let r = out
                        .reconstruction
                        .slice(ndarray::s![n, m, ..])
                        .mapv(|v| v as f64);
                    let eps = &h - &r + &dm * *fj;
                    sums[0] = &sums[0] + &(&r * *fj);
                    sums[1] = &sums[1] + &(&eps * *fj);
                    sums[2] = &sums[2] + &(&h * *fj);
                }
                for (t, sum) in sums.iter().enumerate() {
                    let dd: f64 = d.iter().map(|v| v * v).sum();
                    let ds: f64 = d.iter().zip(sum.iter()).map(|(a, b)| a * b).sum();
                    betas[t][[m, j]] = ds / (dd * sum_f2);
                }
            }
        }
        betas
    }

    fn assert_close(got: &Array2<f32>, want: &Array2<f64>, what: &str) {
        for ((idx, g), w) in got.indexed_iter().zip(want.iter()) {
            if w.is_nan() {
                assert!(g.is_nan(), "{what} {idx:?}: {g} where nothing fired");
            } else {
                let err = (*g as f64 - w).abs() / w.abs().max(1e-3);
                assert!(err < 1e-4, "{what} {idx:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn streaming_betas_equal_the_definition_in_raw_units() {
        let normalizers = [
            InputNormalizer::Identity,
            InputNormalizer::ScalingFactors(vec![2.0, 0.25]),
            InputNormalizer::mean_std(
                Array2::from_shape_vec((2, D), uniform(2 * D, 11, 0.5)).unwrap(),
                Array2::from_shape_vec((2, D), uniform(2 * D, 12, 0.5))
                    .unwrap()
                    .mapv(|v| v.abs() + 0.5),
                2.5,
            ),
        ];
        for normalizer in normalizers {
            let cc = crosscoder(normalizer.clone());
            let x = activations(300, 9);
            let mut pass = LatentScaling::new(cc.as_ref(), None).unwrap();
            // Three batches of uneven size stream to the same sums as one.
            for rows in [(0, 70), (70, 71), (71, 300)] {
                pass.add_batch(cc.as_ref(), x.slice(ndarray::s![rows.0..rows.1, .., ..]))
                    .unwrap();
            }
            assert_eq!(pass.rows(), 300);
            let result = pass.result();
            let [r, e, a] = direct(cc.as_ref(), &x);
            assert_close(&result.beta_reconstruction, &r, "reconstruction");
            assert_close(&result.beta_error, &e, "error");
            assert_close(&result.beta_activation, &a, "activation");
            // The never-firing latent is NaN throughout.
            assert!(result.nu_error[8].is_nan() && result.sum_f2[8] == 0.0);
            for i in 0..F {
                let nu = result.beta_error[[BASE, i]] / result.beta_error[[CHAT, i]];
                assert!(nu.to_bits() == result.nu_error[i].to_bits() || nu.is_nan());
            }
        }
    }

    #[test]
    fn a_subset_and_a_resumed_pass_give_the_same_numbers_as_one_pass_over_all() {
        let cc = crosscoder(InputNormalizer::Identity);
        let x = activations(120, 5);
        let mut all = LatentScaling::new(cc.as_ref(), None).unwrap();
        all.add_batch(cc.as_ref(), x.view()).unwrap();
        let all = all.result();

        let subset = [5, 2, 5, 7];
        let mut first = LatentScaling::new(cc.as_ref(), Some(&subset)).unwrap();
        first
            .add_batch(cc.as_ref(), x.slice(ndarray::s![..50, .., ..]))
            .unwrap();
        let saved = serde_json::to_string(first.state()).unwrap();
        let state: LatentScalingState = serde_json::from_str(&saved).unwrap();
        let mut resumed = LatentScaling::from_state(cc.as_ref(), state).unwrap();
        resumed
            .add_batch(cc.as_ref(), x.slice(ndarray::s![50.., .., ..]))
            .unwrap();
        let part = resumed.result();
        assert_eq!(part.latents, vec![5, 2, 7]);
        for (i, &j) in part.latents.iter().enumerate() {
            for m in [BASE, CHAT] {
                let (a, b) = (part.beta_error[[m, i]], all.beta_error[[m, j]]);
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{j}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_latents_shapes_and_states_are_errors() {
        let cc = crosscoder(InputNormalizer::Identity);
        assert!(matches!(
            LatentScaling::new(cc.as_ref(), Some(&[F])),
            Err(CrosscoderError::LatentIndex { index: F, .. })
        ));
        let mut pass = LatentScaling::new(cc.as_ref(), None).unwrap();
        let wrong = Array3::<f32>::zeros((4, 2, D + 1));
        assert!(pass.add_batch(cc.as_ref(), wrong.view()).is_err());
        let mut state = pass.state().clone();
        state.sums.sum_f2.pop();
        assert!(LatentScaling::from_state(cc.as_ref(), state).is_err());
    }

    #[test]
    fn robustness_needs_all_three_thresholds() {
        let t = RobustThresholds::default();
        assert!(t.is_robust(0.95, 0.1, 0.3));
        assert!(!t.is_robust(0.85, 0.1, 0.3));
        assert!(!t.is_robust(0.95, 0.25, 0.3));
        assert!(!t.is_robust(0.95, 0.1, 0.6));
        assert!(!t.is_robust(0.95, f32::NAN, 0.3));
    }
}
