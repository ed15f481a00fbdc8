//! Reconstruction quality per model and latent activity over a stream of batches.
//!
//! Definitions (per model `m`, over all rows `b` and features `i` seen):
//!
//! - **MSE** `= mean_{b,i} (x[b,m,i] - x̂[b,m,i])^2`;
//! - **FVU** (fraction of variance unexplained) `= sum_{b,i} (x - x̂)^2 / sum_{b,i} (x[b,m,i] - mean_b x[b,m,i])^2`,
//!   the residual energy over the total variance around the per-feature mean of the rows seen;
//! - **FVE** (dictionary_learning's `frac_variance_explained`, one number over all models)
//!   `= 1 - sum_{m,i} var_b(x - x̂) / sum_{m,i} var_b(x)`: unlike `1 - FVU`, it subtracts the mean
//!   residual (a constant reconstruction bias costs nothing) and pools the models. Use it to compare
//!   with numbers from dictionary_learning's `evaluation.evaluate`;
//! - **L0** `= mean_b #{j : f[b,j] > 0}`;
//! - a latent is **dead** when it has not fired (`f > 0`) on any row seen.
//!
//! [`MetricsAccumulator`] gives exactly the single-batch numbers of [`reconstruction_metrics`] when fed the
//! same rows in any number of batches (sums are kept in f64).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{CrosscoderError, Result};
use crate::latents::SparseLatents;

/// Reconstruction metrics of a batch or a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionMetrics {
    /// Mean squared error per model, `[n_models]`.
    pub mse: Vec<f32>,
    /// Fraction of variance unexplained per model, `[n_models]`.
    pub fvu: Vec<f32>,
    /// dictionary_learning's fraction of variance explained, over all models (see the module docs).
    #[serde(default)]
    pub frac_variance_explained: f32,
    /// Mean number of active latents per row.
    pub l0: f32,
    /// Rows seen.
    pub rows: usize,
}

/// Metrics of one batch: activations `x [batch, n, d]`, reconstruction `x_hat [batch, n, d]`, latents
/// `f [batch, F]`.
///
/// # Errors
/// [`CrosscoderError::ActivationShape`] / [`CrosscoderError::LatentShape`] when the shapes disagree.
pub fn reconstruction_metrics(
    x: ArrayView3<'_, f32>,
    x_hat: ArrayView3<'_, f32>,
    f: ArrayView2<'_, f32>,
) -> Result<ReconstructionMetrics> {
    let (_, n, d) = x.dim();
    let mut acc = MetricsAccumulator::new(n, d);
    acc.update(x, x_hat, f)?;
    Ok(acc.finish())
}

/// Accumulates [`ReconstructionMetrics`] over batches.
#[derive(Debug, Clone)]
pub struct MetricsAccumulator {
    n_models: usize,
    d_model: usize,
    rows: usize,
    sse: Vec<f64>,
    /// Per-feature sums of the residual `x - x̂`, `[n_models, d]`.
    sum_residual: Array2<f64>,
    sum_x: Array2<f64>,
    sum_x2: Vec<f64>,
    active: f64,
}

impl MetricsAccumulator {
    /// An empty accumulator for `n_models` models of width `d_model`.
    pub fn new(n_models: usize, d_model: usize) -> Self {
        MetricsAccumulator {
            n_models,
            d_model,
            rows: 0,
            sse: vec![0.0; n_models],
            sum_residual: Array2::zeros((n_models, d_model)),
            sum_x: Array2::zeros((n_models, d_model)),
            sum_x2: vec![0.0; n_models],
            active: 0.0,
        }
    }

    /// Adds one batch.
    ///
    /// # Errors
    /// [`CrosscoderError::ActivationShape`] when `x` or `x_hat` is not `[batch, n_models, d]`,
    /// [`CrosscoderError::LatentShape`] when `f` has a different number of rows.
    pub fn update(
        &mut self,
        x: ArrayView3<'_, f32>,
        x_hat: ArrayView3<'_, f32>,
        f: ArrayView2<'_, f32>,
    ) -> Result<()> {
        let expected = |a: &ArrayView3<'_, f32>| {
            let (_, n, d) = a.dim();
            if n == self.n_models && d == self.d_model && a.dim().0 == x.dim().0 {
                Ok(())
            } else {
                Err(CrosscoderError::ActivationShape {
                    n_models: self.n_models,
                    d_model: self.d_model,
                    actual: a.shape().to_vec(),
                })
            }
        };
        expected(&x)?;
        expected(&x_hat)?;
        if f.nrows() != x.dim().0 {
            return Err(CrosscoderError::LatentShape {
                dict_size: f.ncols(),
                actual: f.shape().to_vec(),
            });
        }
        for m in 0..self.n_models {
            let xm = x.index_axis(Axis(1), m);
            let hm = x_hat.index_axis(Axis(1), m);
            self.sse[m] += xm
                .iter()
                .zip(hm.iter())
                .map(|(a, b)| {
                    let e = f64::from(*a) - f64::from(*b);
                    e * e
                })
                .sum::<f64>();
            self.sum_x2[m] += xm
                .iter()
                .map(|a| f64::from(*a) * f64::from(*a))
                .sum::<f64>();
            let mut sx = self.sum_x.row_mut(m);
            for row in xm.rows() {
                sx.zip_mut_with(&row, |s, v| *s += f64::from(*v));
            }
            let mut sr = self.sum_residual.row_mut(m);
            for (row, row_hat) in xm.rows().into_iter().zip(hm.rows()) {
                for ((s, a), b) in sr.iter_mut().zip(row).zip(row_hat) {
                    *s += f64::from(*a) - f64::from(*b);
                }
            }
        }
        self.active += f.iter().filter(|v| **v > 0.0).count() as f64;
        self.rows += x.dim().0;
        Ok(())
    }

    /// The metrics of everything seen so far (NaN where nothing was seen).
    pub fn finish(&self) -> ReconstructionMetrics {
        let rows = self.rows as f64;
        let elems = rows * self.d_model as f64;
        let mse = self.sse.iter().map(|s| (s / elems) as f32).collect();
        // `sum (v - mean v)^2 = sum v^2 - (sum v)^2 / rows`, per feature; the `1 / (rows - 1)` of
        // the unbiased variance cancels in the FVE ratio.
        let centred = |sum_sq: f64, sums: ArrayView1<'_, f64>| {
            sum_sq - sums.iter().map(|s| s * s).sum::<f64>() / rows
        };
        let total: Vec<f64> = (0..self.n_models)
            .map(|m| centred(self.sum_x2[m], self.sum_x.row(m)))
            .collect();
        let fvu = (0..self.n_models)
            .map(|m| (self.sse[m] / total[m]) as f32)
            .collect();
        let residual_variance: f64 = (0..self.n_models)
            .map(|m| centred(self.sse[m], self.sum_residual.row(m)))
            .sum();
        let frac_variance_explained = (1.0 - residual_variance / total.iter().sum::<f64>()) as f32;
        ReconstructionMetrics {
            mse,
            fvu,
            frac_variance_explained,
            l0: (self.active / rows) as f32,
            rows: self.rows,
        }
    }
}

/// Tracks which latents fire over a stream of batches (dead / alive latents, firing frequencies).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentActivity {
    fired: Array1<u64>,
    rows: u64,
}

impl LatentActivity {
    /// No rows seen yet, for a dictionary of `dict_size` latents.
    pub fn new(dict_size: usize) -> Self {
        LatentActivity {
            fired: Array1::zeros(dict_size),
            rows: 0,
        }
    }

    /// Adds a dense batch of latents `[batch, F]`.
    ///
    /// # Errors
    /// [`CrosscoderError::LatentShape`] when the width is not `F`.
    pub fn update(&mut self, f: ArrayView2<'_, f32>) -> Result<()> {
        if f.ncols() != self.fired.len() {
            return Err(CrosscoderError::LatentShape {
                dict_size: self.fired.len(),
                actual: f.shape().to_vec(),
            });
        }
        for row in f.rows() {
            self.fired
                .zip_mut_with(&row, |c, v| *c += u64::from(*v > 0.0));
        }
        self.rows += f.nrows() as u64;
        Ok(())
    }

    /// Adds a batch of top-k latents. Note that latents below the top k of a row are not seen.
    ///
    /// # Errors
    /// [`CrosscoderError::LatentShape`] when the dictionary size differs.
    pub fn update_sparse(&mut self, s: &SparseLatents) -> Result<()> {
        if s.dict_size != self.fired.len() {
            return Err(CrosscoderError::LatentShape {
                dict_size: self.fired.len(),
                actual: vec![s.n_rows(), s.dict_size],
            });
        }
        for i in 0..s.n_rows() {
            for (j, v) in s.row(i) {
                if v > 0.0 {
                    self.fired[j] += 1;
                }
            }
        }
        self.rows += s.n_rows() as u64;
        Ok(())
    }

    /// Rows seen.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// How many rows each latent fired on, `[F]`.
    pub fn fire_counts(&self) -> &Array1<u64> {
        &self.fired
    }

    /// Firing frequency of each latent (fired rows / rows seen), `[F]`.
    pub fn frequencies(&self) -> Array1<f32> {
        let rows = self.rows.max(1) as f64;
        self.fired.mapv(|c| (c as f64 / rows) as f32)
    }

    /// Latents that never fired.
    pub fn dead(&self) -> Vec<usize> {
        self.fired
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == 0)
            .map(|(j, _)| j)
            .collect()
    }

    /// Number of latents that fired at least once.
    pub fn alive_count(&self) -> usize {
        self.fired.iter().filter(|c| **c > 0).count()
    }

    /// Fraction of latents that fired at least once.
    pub fn alive_fraction(&self) -> f32 {
        self.alive_count() as f32 / self.fired.len().max(1) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, s, Array3};

    #[test]
    fn streaming_equals_one_batch() {
        let x = Array3::from_shape_fn((6, 2, 3), |(b, m, i)| {
            (b * 7 + m * 3 + i) as f32 * 0.37 - 2.0
        });
        let x_hat = x.mapv(|v| v * 0.9 + 0.1);
        let f = Array2::from_shape_fn((6, 4), |(b, j)| if (b + j) % 3 == 0 { 1.0 } else { 0.0 });
        let whole = reconstruction_metrics(x.view(), x_hat.view(), f.view()).unwrap();
        let mut acc = MetricsAccumulator::new(2, 3);
        acc.update(
            x.slice(s![..2, .., ..]),
            x_hat.slice(s![..2, .., ..]),
            f.slice(s![..2, ..]),
        )
        .unwrap();
        acc.update(
            x.slice(s![2.., .., ..]),
            x_hat.slice(s![2.., .., ..]),
            f.slice(s![2.., ..]),
        )
        .unwrap();
        let parts = acc.finish();
        for m in 0..2 {
            assert!((whole.mse[m] - parts.mse[m]).abs() <= 1e-6 * whole.mse[m]);
            assert!((whole.fvu[m] - parts.fvu[m]).abs() <= 1e-5 * whole.fvu[m]);
        }
        assert!(
            (whole.frac_variance_explained - parts.frac_variance_explained).abs() <= 1e-5,
            "{} vs {}",
            whole.frac_variance_explained,
            parts.frac_variance_explained
        );
        assert_eq!(whole.l0, parts.l0);
        assert_eq!(parts.rows, 6);
    }

    #[test]
    fn perfect_reconstruction_has_zero_fvu() {
        let x = Array3::from_shape_fn((4, 1, 2), |(b, _, i)| (b + i) as f32);
        let m = reconstruction_metrics(x.view(), x.view(), Array2::<f32>::zeros((4, 3)).view())
            .unwrap();
        assert_eq!(m.mse, vec![0.0]);
        assert_eq!(m.fvu, vec![0.0]);
        assert_eq!(m.frac_variance_explained, 1.0);
        assert_eq!(m.l0, 0.0);
    }

    #[test]
    fn dead_latents_over_a_stream() {
        let mut a = LatentActivity::new(4);
        a.update(array![[1.0f32, 0.0, 0.0, 0.0]].view()).unwrap();
        a.update(array![[0.0f32, 0.0, 2.0, 0.0], [0.5, 0.0, 0.0, 0.0]].view())
            .unwrap();
        assert_eq!(a.dead(), vec![1, 3]);
        assert_eq!(a.alive_count(), 2);
        assert_eq!(a.rows(), 3);
        assert_eq!(a.fire_counts()[0], 2);
        assert!(a.update(array![[1.0f32]].view()).is_err());
    }

    #[test]
    fn sparse_updates_count_like_dense_ones() {
        let f = array![[1.0f32, 0.0, 3.0, 0.0], [0.0, 0.0, 2.0, 0.5], [0.0; 4]];
        let mut dense = LatentActivity::new(4);
        dense.update(f.view()).unwrap();
        let mut sparse = LatentActivity::new(4);
        sparse
            .update_sparse(&SparseLatents::from_dense(f.view(), 3))
            .unwrap();
        assert_eq!(sparse.fire_counts(), dense.fire_counts());
        assert_eq!(sparse.rows(), 3);
        let wrong_f = SparseLatents::from_dense(array![[1.0f32, 0.0]].view(), 1);
        assert!(sparse.update_sparse(&wrong_f).is_err());
    }
}
