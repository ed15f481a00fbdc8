//! Running statistics of stored activations: sufficient statistics (count, sums, sums of squares,
//! sum of norms) that merge exactly across shards, and the quantities derived from them.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

/// Sufficient statistics of a set of `d_model`-dimensional vectors.
///
/// Serialized with the derived `mean`, `variance` and `mean_norm` beside the sums for readers of
/// the JSON; on reading, only the sums count (the derived fields are recomputed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "MomentsJson", from = "MomentsJson")]
pub struct Moments {
    /// Number of vectors.
    pub count: u64,
    /// Per-dimension sum, `[d_model]`.
    pub sum: Vec<f64>,
    /// Per-dimension sum of squares, `[d_model]`.
    pub sum_sq: Vec<f64>,
    /// Sum of the vectors' L2 norms.
    pub sum_norm: f64,
}

impl Moments {
    /// Empty statistics of width `d_model`.
    pub fn new(d_model: usize) -> Self {
        Moments {
            count: 0,
            sum: vec![0.0; d_model],
            sum_sq: vec![0.0; d_model],
            sum_norm: 0.0,
        }
    }

    /// Adds one vector `[d_model]`.
    pub fn push(&mut self, x: ArrayView1<f32>) {
        let mut sq_norm = 0f64;
        for ((s, q), &v) in self
            .sum
            .iter_mut()
            .zip(self.sum_sq.iter_mut())
            .zip(x.iter())
        {
            let v = f64::from(v);
            *s += v;
            *q += v * v;
            sq_norm += v * v;
        }
        self.sum_norm += sq_norm.sqrt();
        self.count += 1;
    }

    /// Adds the statistics of another set of vectors of the same width.
    pub fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        self.sum
            .iter_mut()
            .zip(&other.sum)
            .for_each(|(a, b)| *a += b);
        self.sum_sq
            .iter_mut()
            .zip(&other.sum_sq)
            .for_each(|(a, b)| *a += b);
        self.sum_norm += other.sum_norm;
    }

    /// Per-dimension mean, `[d_model]` (zeros when empty).
    pub fn mean(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// Per-dimension population variance, `[d_model]` (zeros when empty).
    pub fn variance(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0))
            .collect()
    }

    /// Mean L2 norm, `mean ||x||` (0 when empty).
    pub fn mean_norm(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_norm / self.count as f64
        }
    }

    /// Whether two statistics agree up to a relative `tolerance` (JSON round trips may move an
    /// f64 by one ulp).
    pub fn approx_eq(&self, other: &Moments, tolerance: f64) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0);
        self.count == other.count
            && self.sum.len() == other.sum.len()
            && self.sum_sq.len() == other.sum_sq.len()
            && close(self.sum_norm, other.sum_norm)
            && self.sum.iter().zip(&other.sum).all(|(a, b)| close(*a, *b))
            && self
                .sum_sq
                .iter()
                .zip(&other.sum_sq)
                .all(|(a, b)| close(*a, *b))
    }
}

/// The JSON form of [`Moments`]: derived fields first, for people reading the manifest.
#[derive(Serialize, Deserialize)]
struct MomentsJson {
    count: u64,
    #[serde(default)]
    mean_norm: f64,
    #[serde(default)]
    mean: Vec<f64>,
    #[serde(default)]
    variance: Vec<f64>,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    sum_norm: f64,
}

impl From<Moments> for MomentsJson {
    fn from(m: Moments) -> Self {
        MomentsJson {
            count: m.count,
            mean_norm: m.mean_norm(),
            mean: m.mean(),
            variance: m.variance(),
            sum: m.sum,
            sum_sq: m.sum_sq,
            sum_norm: m.sum_norm,
        }
    }
}

impl From<MomentsJson> for Moments {
    fn from(j: MomentsJson) -> Self {
        Moments {
            count: j.count,
            sum: j.sum,
            sum_sq: j.sum_sq,
            sum_norm: j.sum_norm,
        }
    }
}

/// Statistics of one model's stored activations, over all tokens and over non-BOS tokens.
///
/// Padding rows never enter the statistics; chat-template tokens do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatistics {
    /// Every stored non-padding token, BOS included.
    pub all: Moments,
    /// Every stored non-padding token except `<bos>` (the attention sink, whose norm is far larger).
    pub without_bos: Moments,
}

impl ModelStatistics {
    /// Empty statistics of width `d_model`.
    pub fn new(d_model: usize) -> Self {
        ModelStatistics {
            all: Moments::new(d_model),
            without_bos: Moments::new(d_model),
        }
    }

    /// Adds one token's activation `[d_model]`.
    pub fn push(&mut self, x: ArrayView1<f32>, is_bos: bool) {
        self.all.push(x);
        if !is_bos {
            self.without_bos.push(x);
        }
    }

    /// Adds another set's statistics.
    pub fn merge(&mut self, other: &ModelStatistics) {
        self.all.merge(&other.all);
        self.without_bos.merge(&other.without_bos);
    }

    /// The statistics with or without BOS.
    pub fn select(&self, include_bos: bool) -> &Moments {
        if include_bos {
            &self.all
        } else {
            &self.without_bos
        }
    }

    /// The ckkissane normalisation factor `sqrt(d_model) / mean ||x||` (1 when there is no token).
    pub fn normalization_factor(&self, include_bos: bool) -> f32 {
        let moments = self.select(include_bos);
        let mean_norm = moments.mean_norm();
        if moments.count == 0 || mean_norm == 0.0 {
            1.0
        } else {
            ((moments.sum.len() as f64).sqrt() / mean_norm) as f32
        }
    }

    /// See [`Moments::approx_eq`].
    pub fn approx_eq(&self, other: &ModelStatistics, tolerance: f64) -> bool {
        self.all.approx_eq(&other.all, tolerance)
            && self.without_bos.approx_eq(&other.without_bos, tolerance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn moments_merge_equals_one_pass() {
        let xs = [arr1(&[1.0f32, -2.0]), arr1(&[3.0, 4.0]), arr1(&[0.5, 0.0])];
        let mut one = Moments::new(2);
        xs.iter().for_each(|x| one.push(x.view()));
        let (mut a, mut b) = (Moments::new(2), Moments::new(2));
        a.push(xs[0].view());
        xs[1..].iter().for_each(|x| b.push(x.view()));
        a.merge(&b);
        assert!(a.approx_eq(&one, 1e-12));
        assert_eq!(one.mean(), vec![1.5, 2.0 / 3.0]);
        let norms = 5f64.sqrt() + 5.0 + 0.5;
        assert!((one.mean_norm() - norms / 3.0).abs() < 1e-12);
        let var0 = (1.0 + 9.0 + 0.25) / 3.0 - 1.5 * 1.5;
        assert!((one.variance()[0] - var0).abs() < 1e-12);
    }

    #[test]
    fn json_round_trip_keeps_the_sums() {
        let mut m = Moments::new(3);
        m.push(arr1(&[0.1f32, 0.2, 0.3]).view());
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"mean_norm\""));
        let back: Moments = serde_json::from_str(&text).unwrap();
        assert!(back.approx_eq(&m, 1e-15));
    }
}
