//! Sparse latents: the top-k active latents of each row, for dictionaries too large to keep dense
//! (73,728 latents x 4,096 rows is 1.2 GB as dense f32, about 3 MB as top-100).

use ndarray::{Array2, ArrayView2};

use crate::error::{CrosscoderError, Result};

/// The `k` largest latents of each row, as indices and values, largest first.
///
/// Rows with fewer than `k` active (positive) latents are padded with index [`SparseLatents::PAD`] and
/// value `0.0`; [`SparseLatents::row`] skips the padding.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLatents {
    /// Latent indices `[batch, k]`, by decreasing value; [`SparseLatents::PAD`] marks padding.
    pub indices: Array2<u32>,
    /// Latent values `[batch, k]` (raw `f`), decreasing; `0.0` on padding.
    pub values: Array2<f32>,
    /// Dictionary size `F`.
    pub dict_size: usize,
}

impl SparseLatents {
    /// Index used for padding slots.
    pub const PAD: u32 = u32::MAX;

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.indices.nrows()
    }

    /// Slots per row (`k`).
    pub fn k(&self) -> usize {
        self.indices.ncols()
    }

    /// The active `(latent, value)` pairs of row `i`, largest first, without padding.
    ///
    /// # Panics
    /// If `i >= n_rows()`.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.indices
            .row(i)
            .into_iter()
            .zip(self.values.row(i))
            .filter(|(j, _)| **j != Self::PAD)
            .map(|(j, v)| (*j as usize, *v))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The dense `[batch, F]` matrix (zeros outside the kept latents).
    pub fn to_dense(&self) -> Array2<f32> {
        let mut dense = Array2::zeros((self.n_rows(), self.dict_size));
        for i in 0..self.n_rows() {
            for (j, v) in self.row(i) {
                dense[[i, j]] = v;
            }
        }
        dense
    }

    /// Keeps the `k` largest positive values of each row of a dense `[batch, F]` matrix.
    pub fn from_dense(dense: ArrayView2<'_, f32>, k: usize) -> Self {
        let (rows, f) = dense.dim();
        let mut indices = Array2::from_elem((rows, k), Self::PAD);
        let mut values = Array2::zeros((rows, k));
        let mut active: Vec<(f32, u32)> = Vec::new();
        for (i, row) in dense.outer_iter().enumerate() {
            active.clear();
            active.extend(
                row.iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(j, v)| (*v, j as u32)),
            );
            let by_value_desc =
                |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            if active.len() > k && k > 0 {
                active.select_nth_unstable_by(k - 1, by_value_desc);
                active.truncate(k);
            }
            active.truncate(k);
            active.sort_unstable_by(by_value_desc);
            for (slot, (v, j)) in active.iter().enumerate() {
                indices[[i, slot]] = *j;
                values[[i, slot]] = *v;
            }
        }
        SparseLatents {
            indices,
            values,
            dict_size: f,
        }
    }

    /// Appends the rows of `other`.
    ///
    /// # Errors
    /// `other` has another `k` or dictionary size.
    pub(crate) fn append(&mut self, other: SparseLatents) -> Result<()> {
        if other.k() != self.k() || other.dict_size != self.dict_size {
            return Err(CrosscoderError::InvalidOption(format!(
                "cannot append sparse latents with k = {}, F = {} to k = {}, F = {}",
                other.k(),
                other.dict_size,
                self.k(),
                self.dict_size
            )));
        }
        let k = self.k();
        let rows = self.n_rows() + other.n_rows();
        let indices: Vec<u32> = self.indices.iter().chain(&other.indices).copied().collect();
        let values: Vec<f32> = self.values.iter().chain(&other.values).copied().collect();
        // Both have `k` columns, so `rows * k` values fill the shape exactly.
        self.indices = Array2::from_shape_vec((rows, k), indices).map_err(shape_error)?;
        self.values = Array2::from_shape_vec((rows, k), values).map_err(shape_error)?;
        Ok(())
    }
}

fn shape_error(e: ndarray::ShapeError) -> CrosscoderError {
    CrosscoderError::InvalidOption(format!("sparse latents: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn keeps_the_largest_positive_values_in_order() {
        let dense = array![[0.0f32, 3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.5, 0.0, 0.0]];
        let s = SparseLatents::from_dense(dense.view(), 2);
        assert_eq!(s.row(0).collect::<Vec<_>>(), vec![(1, 3.0), (3, 2.0)]);
        assert_eq!(s.row(1).collect::<Vec<_>>(), vec![(2, 0.5)]);
        assert_eq!(s.indices[[1, 1]], SparseLatents::PAD);
        let back = s.to_dense();
        assert_eq!(back[[0, 1]], 3.0);
        assert_eq!(back[[0, 2]], 0.0, "dropped by top-2");
    }

    #[test]
    fn k_larger_than_f_keeps_everything() {
        let dense = array![[1.0f32, 2.0]];
        let s = SparseLatents::from_dense(dense.view(), 5);
        assert_eq!(s.to_dense(), dense);
        assert_eq!(s.k(), 5);
    }

    #[test]
    fn appending_chunks_equals_encoding_all_rows_at_once() {
        let dense = array![
            [0.0f32, 3.0, 1.0, 2.0, 0.0],
            [0.0, 0.0, 0.5, 0.0, 0.0],
            [4.0, 0.0, 0.0, 0.0, 1.5]
        ];
        let whole = SparseLatents::from_dense(dense.view(), 2);
        let mut chunked = SparseLatents::from_dense(dense.slice(ndarray::s![..0, ..]), 2);
        for rows in dense.axis_chunks_iter(ndarray::Axis(0), 2) {
            chunked.append(SparseLatents::from_dense(rows, 2)).unwrap();
        }
        assert_eq!(chunked, whole);
        let other_k = SparseLatents::from_dense(dense.view(), 3);
        assert!(chunked.append(other_k).is_err());
        assert_eq!(chunked, whole, "a refused append changes nothing");
    }
}
