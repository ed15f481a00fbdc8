//! [`product`]: the product of f32 activations with a weight matrix held as a burn tensor (f32 or
//! bf16), on any backend, through this module's host kernels where burn-flex allows.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

use super::{
    bf16_matmul_with, skinny_matmul, skinny_matmul_transposed, Bf16Kernel, PackedBf16,
    WeightLayout, MAX_SKINNY_ROWS,
};
use crate::flex_bridge;

/// `x @ w` (`w` stored [`WeightLayout::InOut`]) or `x @ w^T` ([`WeightLayout::OutIn`], the tied
/// embedding) for `x` `[rows, k]` in f32 (or in bf16, with bf16 weights: read as they are); the
/// result is f32.
///
/// `host_kernels` (burn-flex only; ignored elsewhere) picks this module's host products: with bf16
/// weights [`bf16_matmul_with`] on the [fastest](Bf16Kernel::fastest) kernel, with f32 weights the
/// one pass over the weights of [`skinny_matmul`] for a decoding step (at most
/// [`MAX_SKINNY_ROWS`] rows, where the `gemm` crate is 1.5-2x slower, `benches/README.md`). Anything
/// else is burn's matmul: with bf16 weights, of `x` cast to bf16 (burn's own bf16 kernels, CUDA's
/// included), the result cast back to f32.
pub fn product<B: Backend>(
    x: Tensor<B, 2>,
    w: &Tensor<B, 2>,
    layout: WeightLayout,
    host_kernels: bool,
) -> Tensor<B, 2> {
    let [rows, _] = x.dims();
    let n = match layout {
        WeightLayout::InOut => w.dims()[1],
        WeightLayout::OutIn => w.dims()[0],
    };
    if let Some(values) = host_product(&x, w, layout, host_kernels) {
        if let Some(y) = flex_bridge::from_host(values, [rows, n]) {
            return y;
        }
    }
    let w = match layout {
        WeightLayout::InOut => w.clone(),
        WeightLayout::OutIn => w.clone().transpose(),
    };
    if w.dtype() == DType::BF16 {
        x.cast(FloatDType::BF16).matmul(w).cast(FloatDType::F32)
    } else {
        x.cast(FloatDType::F32).matmul(w)
    }
}

/// The values of [`product`] on the host kernels' path; `None` where burn's matmul should run
/// (`host_kernels` false, a backend other than burn-flex, or an f32 product of many rows).
pub fn host_product<B: Backend>(
    x: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    layout: WeightLayout,
    host_kernels: bool,
) -> Option<Vec<f32>> {
    let [rows, k] = x.dims();
    let bf16 = w.dtype() == DType::BF16;
    if !host_kernels || (!bf16 && rows > MAX_SKINNY_ROWS) {
        return None;
    }
    let n = w.dims().iter().product::<usize>() / k.max(1);
    if bf16 {
        let w = flex_bridge::host_as::<half::bf16, B, 2>(w.clone())?;
        let (kernel, shape) = (Bf16Kernel::fastest(), (rows, k, n));
        return Some(if x.dtype() == DType::BF16 {
            let x = flex_bridge::host_as::<half::bf16, B, 2>(x.clone())?;
            bf16_matmul_with(kernel, x.values(), w.values(), layout, shape)
        } else {
            let x = flex_bridge::host(x.clone())?;
            bf16_matmul_with(kernel, x.values(), w.values(), layout, shape)
        });
    }
    let x = flex_bridge::host(x.clone())?;
    let w = flex_bridge::host(w.clone())?;
    Some(match layout {
        WeightLayout::InOut => skinny_matmul(x.values(), w.values(), rows, k, n),
        WeightLayout::OutIn => skinny_matmul_transposed(x.values(), w.values(), rows, k, n),
    })
}

/// `x @ W` for `x` `[rows, k]` (f32, or bf16 read as it is) and weights packed once
/// ([`PackedBf16`]); `None` where `x` is not a burn-flex tensor, or the CPU lacks AVX512-BF16.
pub fn packed_product<B: Backend>(x: &Tensor<B, 2>, w: &PackedBf16) -> Option<Tensor<B, 2>> {
    let [rows, k] = x.dims();
    if k != w.k() || !PackedBf16::is_supported() {
        return None;
    }
    let values = if x.dtype() == DType::BF16 {
        w.matmul(
            flex_bridge::host_as::<half::bf16, B, 2>(x.clone())?.values(),
            rows,
        )
    } else {
        w.matmul(flex_bridge::host(x.clone())?.values(), rows)
    };
    flex_bridge::from_host(values, [rows, w.n()])
}
