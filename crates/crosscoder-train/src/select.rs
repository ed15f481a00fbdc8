//! Host-side selections of the BatchTopK objective (which entries are kept, which dead latents the AuxK
//! loss uses) and the geometric median that initialises the decoder bias. Selections only decide masks: the
//! values and their gradients stay on the device.

use ndarray::{Array2, ArrayView3, Axis};

/// What batch top-k kept: every entry whose scaled activation is `>= cutoff` (and positive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TopKCut {
    /// Keep entries with scaled activation `>= cutoff`; `f32::INFINITY` when nothing is positive.
    pub cutoff: f32,
    /// The smallest kept scaled activation (the threshold EMA's input), 0 when nothing is kept.
    pub min_kept: f32,
}

/// The cut that keeps the `count` largest positive values of `scaled` (the reference's
/// `topk(k * batch)` over the flattened batch; zeros it would also pick contribute nothing). With fewer
/// than `count` positive values, all of them are kept. Exact ties at the cut are kept together (measure
/// zero for real activations).
pub(crate) fn batch_top_k_cut(scaled: &[f32], count: usize) -> TopKCut {
    let mut positive: Vec<f32> = scaled.iter().copied().filter(|v| *v > 0.0).collect();
    if positive.is_empty() || count == 0 {
        return TopKCut {
            cutoff: f32::INFINITY,
            min_kept: 0.0,
        };
    }
    let cutoff = if positive.len() <= count {
        positive.iter().copied().fold(f32::INFINITY, f32::min)
    } else {
        let (_, nth, _) = positive.select_nth_unstable_by(count - 1, |a, b| b.total_cmp(a));
        *nth
    };
    TopKCut {
        cutoff,
        min_kept: cutoff,
    }
}

/// For each row of `scaled [rows, F]`, marks (1.0) the `k_aux` largest entries among the `dead` latents;
/// everything else is 0. The mask selects which `relu(pre)` values the AuxK reconstruction uses.
pub(crate) fn aux_k_mask(
    scaled: &[f32],
    rows: usize,
    dict_size: usize,
    dead: &[usize],
    k_aux: usize,
) -> Vec<f32> {
    let mut mask = vec![0.0f32; rows * dict_size];
    if dead.is_empty() || k_aux == 0 {
        return mask;
    }
    let k_aux = k_aux.min(dead.len());
    let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(dead.len());
    for r in 0..rows {
        let row = &scaled[r * dict_size..(r + 1) * dict_size];
        candidates.clear();
        candidates.extend(dead.iter().map(|&j| (row[j], j)));
        if k_aux < candidates.len() {
            candidates.select_nth_unstable_by(k_aux - 1, |a, b| b.0.total_cmp(&a.0));
        }
        for &(_, j) in &candidates[..k_aux] {
            mask[r * dict_size + j] = 1.0;
        }
    }
    mask
}

/// The per-model geometric median of `points [rows, n_models, d]` by Weiszfeld's iteration, started at
/// the mean, as dictionary_learning's BatchTopK trainer computes it (at most `max_iter` iterations, stop
/// when every model's estimate moved less than `tol`). Computed in f64.
pub(crate) fn geometric_median(
    points: ArrayView3<'_, f32>,
    max_iter: usize,
    tol: f64,
) -> Array2<f32> {
    let (rows, n, d) = points.dim();
    let p = points.mapv(f64::from);
    let mut guess = p
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array2::zeros((n, d)));
    for _ in 0..max_iter {
        let prev = guess.clone();
        let mut next = Array2::<f64>::zeros((n, d));
        for m in 0..n {
            let g = prev.row(m);
            let mut weights = Vec::with_capacity(rows);
            for r in 0..rows {
                let dist = p
                    .slice(ndarray::s![r, m, ..])
                    .iter()
                    .zip(g.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt();
                weights.push(1.0 / dist.max(1e-300));
            }
            let total: f64 = weights.iter().sum();
            let mut row = next.row_mut(m);
            for (r, w) in weights.iter().enumerate() {
                row.scaled_add(w / total, &p.slice(ndarray::s![r, m, ..]));
            }
        }
        guess = next;
        let converged = (0..n).all(|m| {
            let moved = (&guess.row(m) - &prev.row(m)).mapv(|v| v * v).sum().sqrt();
            moved < tol
        });
        if converged {
            break;
        }
    }
    guess.mapv(|v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn cut_keeps_exactly_the_largest_positive_values() {
        let scaled = [0.0, 3.0, 1.0, 0.5, 2.0, 0.0, 4.0];
        let cut = batch_top_k_cut(&scaled, 3);
        assert_eq!(cut.cutoff, 2.0);
        assert_eq!(scaled.iter().filter(|v| **v >= cut.cutoff).count(), 3);
        // More requested than positive: every positive value is kept.
        let cut = batch_top_k_cut(&scaled, 10);
        assert_eq!(cut.cutoff, 0.5);
        assert_eq!(batch_top_k_cut(&[0.0, 0.0], 1).cutoff, f32::INFINITY);
    }

    #[test]
    fn aux_mask_picks_the_top_dead_latents_per_row() {
        // 2 rows, 5 latents, dead = {0, 2, 4}, k_aux = 2.
        let scaled = [5.0, 9.0, 1.0, 9.0, 3.0, 0.0, 0.0, 7.0, 8.0, 2.0];
        let mask = aux_k_mask(&scaled, 2, 5, &[0, 2, 4], 2);
        assert_eq!(mask, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn geometric_median_resists_an_outlier() {
        // Five points near the origin and one far away, per model.
        let mut x = Array3::<f32>::zeros((6, 2, 2));
        for (r, (a, b)) in [
            (0.1, 0.0),
            (-0.1, 0.0),
            (0.0, 0.1),
            (0.0, -0.1),
            (0.0, 0.0),
            (100.0, 100.0),
        ]
        .into_iter()
        .enumerate()
        {
            x[[r, 0, 0]] = a;
            x[[r, 0, 1]] = b;
            x[[r, 1, 0]] = a + 1.0;
            x[[r, 1, 1]] = b;
        }
        let median = geometric_median(x.view(), 100, 1e-5);
        assert!(
            median[[0, 0]].abs() < 0.05 && median[[0, 1]].abs() < 0.05,
            "{median}"
        );
        assert!((median[[1, 0]] - 1.0).abs() < 0.05, "{median}");
    }
}
