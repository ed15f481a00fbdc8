//! Matrix products on the host with weights kept in bf16: half the memory of f32 weights and half
//! the bytes to read per product, with every sum accumulated in f32.
//!
//! [`bf16_matmul`] computes `x @ W` for f32 activations `x` (`[rows, k]`) and bf16 weights `W`
//! (`[k, n]`, or `[n, k]` for [`bf16_matmul_transposed`], the tied-embedding layout). The inputs of
//! the product are bf16, as in a PyTorch bf16 run: `x` is rounded to the nearest bf16 (ties to
//! even) first. The output is f32 and is not rounded.
//!
//! Three kernels compute it:
//!
//! | rows of `x` | kernel | how |
//! |---|---|---|
//! | at most [`MAX_SKINNY_ROWS`] (a decoding step), `[n, k]` weights, AVX512-BF16 | `transposed_dots` | one `vdpbf16ps` dot product per row of the weights |
//! | at most [`MAX_SKINNY_ROWS`], otherwise | [`skinny`] | one pass over the weights, widened to f32 in the registers |
//! | more, CPU with AVX512-BF16 | [`Bf16Kernel::DotProduct`] | `vdpbf16ps` on panels of the weights packed in pairs of rows |
//! | more, any other CPU | [`Bf16Kernel::Widening`] | blocks of the weights widened to f32, then the `gemm` crate's f32 kernel |
//!
//! The kernel is chosen at run time ([`Bf16Kernel::fastest`]); [`bf16_matmul_with`] forces one, for
//! tests and benchmarks. A model's weights, multiplied again and again, are better packed once:
//! [`PackedBf16`] holds them in `vdpbf16ps`'s panels (same bytes) and multiplies any number of rows,
//! a decoding step's one included, without packing again. All three agree with a naive f32 product of the rounded inputs to the
//! rounding of f32 sums (tested on odd shapes and tails).

mod dot_product;
mod packed;
pub mod skinny;
pub mod tensors;
#[cfg(test)]
mod test_support;
mod transposed_dots;
mod widening;

use half::bf16;

pub use packed::PackedBf16;
pub use skinny::{skinny_matmul, skinny_matmul_transposed, MAX_ROWS as MAX_SKINNY_ROWS};

/// A weight element the host products can read: f32, or bf16 widened to f32 on load.
pub trait WeightElement: Copy + Send + Sync + 'static {
    /// The value as f32 (exact for both types).
    fn widen(self) -> f32;
}

impl WeightElement for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl WeightElement for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: a shift, which vectorises (unlike a call).
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// The activations `x` of a bf16 product: f32 values, rounded to bf16 first, or bf16 values (rows of
/// a bf16 activation store, say), read as they are. Both give the same product for the same bf16
/// numbers.
pub trait Bf16Input: Copy + Send + Sync + 'static {
    /// The values as bf16 numbers held in f32 (what the kernels with f32 arithmetic read).
    fn rounded_f32(values: &[Self]) -> Vec<f32>;
    /// The value as bf16 (rounded to nearest, ties to even, if it is f32).
    fn to_bf16(self) -> bf16;
}

impl Bf16Input for f32 {
    fn rounded_f32(values: &[f32]) -> Vec<f32> {
        rounded_through_bf16(values)
    }

    #[inline(always)]
    fn to_bf16(self) -> bf16 {
        round_to_bf16(self)
    }
}

impl Bf16Input for bf16 {
    fn rounded_f32(values: &[bf16]) -> Vec<f32> {
        values.iter().map(|v| v.widen()).collect()
    }

    #[inline(always)]
    fn to_bf16(self) -> bf16 {
        self
    }
}

/// `value` rounded to the nearest bf16, ties to even (NaN stays NaN): what PyTorch's
/// `tensor.to(torch.bfloat16)` does.
pub fn round_to_bf16(value: f32) -> bf16 {
    // `half`'s conversion, without its branches (so that loops of it vectorise): add just under
    // half a bf16 step, plus one if the kept part is odd, and keep the top 16 bits. A NaN (where
    // that sum may wrap) keeps its sign and top payload instead, made quiet. Tested bit for bit.
    let bits = value.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    bf16::from_bits(if value.is_nan() { quiet_nan } else { rounded } as u16)
}

/// `values` rounded to bf16 ([`round_to_bf16`]).
pub fn to_bf16(values: &[f32]) -> Vec<bf16> {
    values.iter().map(|&v| round_to_bf16(v)).collect()
}

/// `values` rounded to bf16 and widened back: the f32 numbers a bf16 product reads.
pub fn rounded_through_bf16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| round_to_bf16(v).widen()).collect()
}

/// The kernel of a bf16 product with more than [`MAX_SKINNY_ROWS`] rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AVX512-BF16's `vdpbf16ps` (two bf16 products summed into each f32 lane per instruction).
    DotProduct,
    /// The weights widened to f32 block by block, then multiplied by the `gemm` crate: every CPU.
    Widening,
}

impl Bf16Kernel {
    /// The fastest kernel this CPU runs.
    pub fn fastest() -> Self {
        if Self::DotProduct.is_available() {
            Self::DotProduct
        } else {
            Self::Widening
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Bf16Kernel::Widening => true,
            Bf16Kernel::DotProduct => dot_product::is_available(),
        }
    }

    /// The kernel's name, for benchmarks and logs.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::DotProduct => "avx512-bf16",
            Bf16Kernel::Widening => "widening",
        }
    }
}

/// How a weight matrix is laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[k, n]`, row-major: the product is `x @ w`.
    InOut,
    /// `[n, k]`, row-major (a tied embedding): the product is `x @ w^T`.
    OutIn,
}

/// `x @ w` with `x` `[rows, k]` f32 and `w` `[k, n]` bf16, both row-major; returns `[rows, n]` f32.
/// `x` is rounded to bf16 first (see the module documentation).
///
/// # Panics
/// If `x` is not `rows * k` long or `w` not `k * n`.
pub fn bf16_matmul(x: &[f32], w: &[bf16], rows: usize, k: usize, n: usize) -> Vec<f32> {
    bf16_matmul_with(
        Bf16Kernel::fastest(),
        x,
        w,
        WeightLayout::InOut,
        (rows, k, n),
    )
}

/// `x @ w_t^T` with `x` `[rows, k]` f32 and `w_t` `[n, k]` bf16; returns `[rows, n]` f32.
///
/// # Panics
/// If `x` is not `rows * k` long or `w_t` not `n * k`.
pub fn bf16_matmul_transposed(
    x: &[f32],
    w_t: &[bf16],
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    bf16_matmul_with(
        Bf16Kernel::fastest(),
        x,
        w_t,
        WeightLayout::OutIn,
        (rows, k, n),
    )
}

/// [`bf16_matmul`] (or the transposed form) on `kernel` for products of more than
/// [`MAX_SKINNY_ROWS`] rows; `(rows, k, n)` as there. `x` is f32 (rounded to bf16 first) or
/// already bf16 ([`Bf16Input`]): `vdpbf16ps` then packs it as it is.
///
/// # Panics
/// If the lengths do not match the shape, or `kernel` is not available on this CPU.
pub fn bf16_matmul_with<X: Bf16Input>(
    kernel: Bf16Kernel,
    x: &[X],
    w: &[bf16],
    layout: WeightLayout,
    (rows, k, n): (usize, usize, usize),
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x");
    assert_eq!(w.len(), k * n, "w");
    assert!(kernel.is_available(), "{} is not available", kernel.name());
    if rows <= MAX_SKINNY_ROWS {
        if layout == WeightLayout::OutIn
            && kernel == Bf16Kernel::DotProduct
            && transposed_dots::is_available()
        {
            return transposed_dots::matmul(x, w, (rows, k, n));
        }
        let x = X::rounded_f32(x);
        return match layout {
            WeightLayout::InOut => skinny_matmul(&x, w, rows, k, n),
            WeightLayout::OutIn => skinny_matmul_transposed(&x, w, rows, k, n),
        };
    }
    match kernel {
        Bf16Kernel::Widening => widening::matmul(&X::rounded_f32(x), w, layout, (rows, k, n)),
        Bf16Kernel::DotProduct => dot_product::matmul(x, w, layout, (rows, k, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{assert_within, naive, transposed};
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn check(kernel: Bf16Kernel, layout: WeightLayout, rows: usize, k: usize, n: usize) {
        let x = values(rows * k, (rows * 131 + k * 7 + n) as u64);
        let w = to_bf16(&values(k * n, (n * 17 + k) as u64));
        let given: Vec<bf16> = match layout {
            WeightLayout::InOut => w.clone(),
            WeightLayout::OutIn => transposed(&w, k, n),
        };
        let got = bf16_matmul_with(kernel, &x, &given, layout, (rows, k, n));
        assert_within(
            &got,
            &naive(&x, &w, rows, k, n),
            2e-6 * (k as f64).max(1.0),
            &format!("{} {layout:?} rows {rows} k {k} n {n}", kernel.name()),
        );
    }

    /// Odd shapes: tails of every kernel's blocking (k odd for the pairs of `vdpbf16ps`, n not a
    /// multiple of the panels, rows not a multiple of the micro-tile), and the skinny sizes (one row
    /// of bf16 weights sweeps eight weight rows at a time: k = 37 leaves a tail of five), and an odd
    /// `k` past one block of `vdpbf16ps`'s sums (2304 pairs).
    const SHAPES: [(usize, usize, usize); 13] = [
        (1, 1, 1),
        (1, 37, 300),
        (2, 37, 300),
        (3, 5, 7),
        (12, 64, 33),
        (13, 17, 31),
        (14, 1, 65),
        (29, 33, 100),
        (40, 257, 300),
        (67, 300, 129),
        (130, 96, 1031),
        (8, 2304, 40),
        (11, 4611, 35),
    ];

    #[test]
    fn the_widening_kernel_equals_a_naive_product_on_odd_shapes() {
        for (rows, k, n) in SHAPES {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                check(Bf16Kernel::Widening, layout, rows, k, n);
            }
        }
    }

    #[test]
    fn the_dot_product_kernel_equals_a_naive_product_on_odd_shapes() {
        if !Bf16Kernel::DotProduct.is_available() {
            eprintln!("skipped: this CPU has no AVX512-BF16 (the packing is tested on its own)");
            return;
        }
        for (rows, k, n) in SHAPES {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                check(Bf16Kernel::DotProduct, layout, rows, k, n);
            }
        }
    }

    #[test]
    fn the_default_kernel_is_the_fastest_available() {
        let fastest = Bf16Kernel::fastest();
        assert!(fastest.is_available());
        assert_eq!(
            fastest == Bf16Kernel::DotProduct,
            Bf16Kernel::DotProduct.is_available()
        );
        check(fastest, WeightLayout::InOut, 20, 50, 70);
        let x = values(40, 1);
        let w = to_bf16(&values(40, 2));
        assert_eq!(
            bf16_matmul(&x, &w, 2, 20, 2),
            bf16_matmul_with(fastest, &x, &w, WeightLayout::InOut, (2, 20, 2))
        );
        assert_eq!(
            bf16_matmul_transposed(&x, &w, 2, 20, 2),
            bf16_matmul_with(fastest, &x, &w, WeightLayout::OutIn, (2, 20, 2))
        );
    }

    #[test]
    fn bf16_activations_give_the_product_of_their_f32_values() {
        for kernel in [Bf16Kernel::Widening, Bf16Kernel::fastest()] {
            for (rows, k, n) in [(3, 37, 300), (40, 257, 300)] {
                for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                    let x = to_bf16(&values(rows * k, 3));
                    let widened: Vec<f32> = x.iter().map(|v| v.widen()).collect();
                    let w = to_bf16(&values(k * n, 4));
                    assert_eq!(
                        bf16_matmul_with(kernel, &x, &w, layout, (rows, k, n)),
                        bf16_matmul_with(kernel, &widened, &w, layout, (rows, k, n)),
                        "{} {layout:?} {rows} x {k} x {n}",
                        kernel.name()
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_equals_halfs_conversion_bit_for_bit() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let special = [
            0u32,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0001,
            0xFF81_2345,
            0x7F7F_FFFF,
            0x0000_0001,
            0x8000_8000,
            0x3F80_8000,
            0x3F81_8000,
            0x7F7F_8000,
        ];
        let random = (0..200_000).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        });
        for bits in special.into_iter().chain(random) {
            let value = f32::from_bits(bits);
            assert_eq!(
                round_to_bf16(value).to_bits(),
                bf16::from_f32(value).to_bits(),
                "{bits:#x}"
            );
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
        assert_eq!(round_to_bf16(1.0 + 1.0 / 256.0).widen(), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
        assert_eq!(round_to_bf16(1.0 + 3.0 / 256.0).widen(), 1.0 + 1.0 / 64.0);
        assert_eq!(round_to_bf16(1.0 + 1.5 / 256.0).widen(), 1.0 + 1.0 / 128.0);
        assert!(round_to_bf16(f32::NAN).widen().is_nan());
        assert_eq!(round_to_bf16(-0.0).widen().to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    #[should_panic(expected = "w")]
    fn refuses_weights_of_the_wrong_length() {
        bf16_matmul(&[1.0; 40], &[bf16::ONE; 5], 20, 2, 3);
    }
}
