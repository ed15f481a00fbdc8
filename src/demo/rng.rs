//! A small, portable random number generator for the demo fixtures.
//!
//! The committed fixture must regenerate byte for byte on every machine, so nothing here depends on a
//! crate's sampling algorithm (which may change between versions) or on the platform's `libm`
//! (`ln`, `cos`, ... may differ in the last bit between C libraries). The generator is SplitMix64
//! (Steele, Lea and Flood, 2014); normals are Irwin-Hall sums of uniforms, which need only additions.

use stereo_core::rng::{fnv1a_64, SplitMix64};

/// SplitMix64 ([`stereo_core::rng::SplitMix64`]) started from a seed and a stream label.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    inner: SplitMix64,
}

impl Rng {
    /// A generator for `seed`, with a `stream` label so that independent parts of the fixture
    /// (embeddings, layer 2, the corpus, ...) draw from independent sequences.
    pub fn new(seed: u64, stream: &str) -> Self {
        // FNV-1a over the label, mixed with the seed; the first draw is discarded.
        let h = fnv1a_64(stream.bytes());
        let mut rng = Rng {
            inner: SplitMix64::new(seed ^ h.rotate_left(17)),
        };
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.inner.uniform()
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Approximately standard normal: the sum of 12 uniforms minus 6 (mean 0, variance 1, tails
    /// cut at 6 sigma). Exact and portable: additions only.
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }

    /// A uniformly chosen index below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.below(n)
    }

    /// A uniformly chosen element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(6, "x");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(6, "x");
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(6, "y");
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(1, "normal");
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
        assert!(r.below(7) < 7);
    }
}
