//! [`PackedBf16`]: a bf16 weight matrix packed once, when a model is loaded, in the panels the
//! `vdpbf16ps` kernel reads, so that no product packs it again.
//!
//! Packing on every product costs a sweep over the weights that the tiles then wait for: on a
//! Gemma-2-2b forward of 64 tokens it was 37% of the time (the weights come from memory, not from
//! the caches, and are read in runs of 256 bytes 18 KB apart). Packed once, each task reads its
//! panels in place, one long run per panel, and each tile asks for a share of the next panel while
//! it works on the current one. The packed matrix has the bytes of the bf16 one (padding aside:
//! `n` to a multiple of 32 and `k` to even), so it replaces it.

use half::bf16;

use super::{dot_product, Bf16Input, WeightLayout};

/// A `[k, n]` bf16 weight packed for the `vdpbf16ps` kernel (CPUs with AVX512-BF16); the products
/// are `x @ W` with f32 sums, for any number of rows of `x` (a decoding step's one included).
#[derive(Clone, PartialEq)]
pub struct PackedBf16 {
    panels: Vec<u32>,
    k: usize,
    n: usize,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBf16 {{ k: {}, n: {} }}", self.k, self.n)
    }
}

impl PackedBf16 {
    /// Whether this CPU multiplies by packed weights (it has AVX512-BF16).
    pub fn is_supported() -> bool {
        dot_product::is_available()
    }

    /// Packs the `[k, n]` operand `w` stored in `layout` (`[k, n]` for [`WeightLayout::InOut`],
    /// `[n, k]` for [`WeightLayout::OutIn`], the layout of Hugging Face checkpoints).
    ///
    /// # Panics
    /// If `w` is not `k * n` long.
    pub fn new(w: &[bf16], layout: WeightLayout, k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "w");
        Self {
            panels: dot_product::pack_all(w, layout, k, n),
            k,
            n,
        }
    }

    /// The inner dimension, `k`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The output dimension, `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.panels.len() * 4
    }

    /// `x @ W` for `x` `[rows, k]` in f32 (rounded to bf16 first) or bf16; `[rows, n]` f32.
    ///
    /// # Panics
    /// If `x` is not `rows * k` long, or the CPU lacks AVX512-BF16 ([`Self::is_supported`]).
    pub fn matmul<X: Bf16Input>(&self, x: &[X], rows: usize) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.k, "x");
        dot_product::matmul_packed(x, &self.panels, (rows, self.k, self.n))
    }

    /// The weights as `[k, n]`, row-major.
    pub fn to_in_out(&self) -> Vec<bf16> {
        dot_product::unpack_all(&self.panels, self.k, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::test_support::{assert_within, transposed};
    use crate::matmul::{bf16_matmul, to_bf16};

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u64 * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    #[test]
    fn keeps_the_weights_and_their_shape() {
        let (k, n) = (37, 70);
        let w = to_bf16(&values(k * n, 1));
        let w_t = transposed(&w, k, n);
        let packed = PackedBf16::new(&w, WeightLayout::InOut, k, n);
        assert_eq!((packed.k(), packed.n()), (k, n));
        assert_eq!(packed.to_in_out(), w);
        assert_eq!(PackedBf16::new(&w_t, WeightLayout::OutIn, k, n), packed);
        assert_eq!(format!("{packed:?}"), "PackedBf16 { k: 37, n: 70 }");
    }

    /// On CPUs with AVX512-BF16: the same numbers as the kernels that pack on every product, for
    /// every tile height (1 to 8 rows and past), odd shapes and `k` over two blocks of sums.
    #[test]
    fn gives_the_product_of_the_unpacked_weights() {
        if !PackedBf16::is_supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16 (the layout is tested on its own)");
            return;
        }
        for (rows, k, n) in [
            (1, 2304, 300),
            (2, 37, 33),
            (5, 64, 1000),
            (8, 9, 32),
            (13, 4611, 70),
            (64, 300, 129),
        ] {
            let x = values(rows * k, 2);
            let w = to_bf16(&values(k * n, 3));
            let packed = PackedBf16::new(&w, WeightLayout::InOut, k, n);
            let want: Vec<f64> = bf16_matmul(&x, &w, rows, k, n)
                .into_iter()
                .map(f64::from)
                .collect();
            let got = packed.matmul(&x, rows);
            assert_within(&got, &want, 2e-6 * k as f64, &format!("{rows}x{k}x{n}"));
        }
    }

    #[test]
    #[should_panic(expected = "w")]
    fn refuses_weights_of_the_wrong_length() {
        PackedBf16::new(&[bf16::ONE; 5], WeightLayout::InOut, 2, 3);
    }
}
