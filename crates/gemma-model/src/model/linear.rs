//! A projection `x @ W` (`W` stored `[in, out]`): a burn tensor, or, in bf16 on burn-flex on a CPU
//! with AVX512-BF16, the weights packed once for the `vdpbf16ps` kernel ([`PackedBf16`]).
//!
//! Packed weights send every product through `vdpbf16ps`, a decoding step's few rows included
//! (where a tensor's bf16 weights go through the one-pass kernel, which adds the same bf16
//! products in another order): the two agree to about 1e-6 relative, and with packed weights a
//! decoding step and a whole forward pass compute each projection the same way.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use half::bf16;
use stereo_core::flex_bridge;
use stereo_core::matmul::tensors::{packed_product, product};
use stereo_core::matmul::{PackedBf16, WeightLayout};

use super::Kernels;

/// `x @ W` with `W` stored `[in, out]`, in f32 or bf16 (see [`product`]).
#[derive(Debug, Clone)]
pub(super) struct Linear<B: Backend> {
    weight: Weight<B>,
}

/// Where a [`Linear`]'s weights live.
#[derive(Debug, Clone)]
enum Weight<B: Backend> {
    /// A tensor on the model's device, `[in, out]`.
    Tensor(Tensor<B, 2>),
    /// Packed for `vdpbf16ps` (bf16 with the host kernels, on a CPU with AVX512-BF16): the same
    /// bytes, and no packing on each product.
    Packed {
        weight: Arc<PackedBf16>,
        device: B::Device,
    },
}

impl<B: Backend> Linear<B> {
    /// The projection by `weight` (`[in, out]`) as it is.
    pub(super) fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Weight::Tensor(weight),
        }
    }

    /// The same projection held the fastest way for `kernels`: bf16 weights packed for
    /// `vdpbf16ps` with [`Kernels::Host`] where the CPU has AVX512-BF16, a tensor otherwise
    /// (packed weights unpacked for [`Kernels::BurnOps`], which reads tensors only).
    pub(super) fn held_for(self, kernels: Kernels) -> Self {
        let weight = match self.weight {
            Weight::Tensor(w)
                if kernels.host() && w.dtype() == DType::BF16 && PackedBf16::is_supported() =>
            {
                let [k, n] = w.dims();
                let device = w.device();
                match flex_bridge::host_as::<bf16, B, 2>(w.clone()) {
                    Some(values) => Weight::Packed {
                        weight: Arc::new(PackedBf16::new(
                            values.values(),
                            WeightLayout::InOut,
                            k,
                            n,
                        )),
                        device,
                    },
                    None => Weight::Tensor(w),
                }
            }
            Weight::Packed { .. } if !kernels.host() => Weight::Tensor(self.weight_tensor()),
            weight => weight,
        };
        Self { weight }
    }

    /// The weights as a `[in, out]` tensor (unpacked into a new one if they are packed).
    pub(super) fn weight_tensor(&self) -> Tensor<B, 2> {
        match &self.weight {
            Weight::Tensor(w) => w.clone(),
            Weight::Packed { weight, device } => {
                let data = TensorData::new(weight.to_in_out(), [weight.k(), weight.n()]);
                Tensor::from_data(data, (device, DType::BF16))
            }
        }
    }

    /// `[in, out]`.
    pub(super) fn dims(&self) -> [usize; 2] {
        match &self.weight {
            Weight::Tensor(w) => w.dims(),
            Weight::Packed { weight, .. } => [weight.k(), weight.n()],
        }
    }

    /// `x @ W` for `x` `[batch, pos, in]`.
    pub(super) fn forward(&self, x: Tensor<B, 3>, kernels: Kernels) -> Tensor<B, 3> {
        let [b, t, d_in] = x.dims();
        let d_out = self.dims()[1];
        let x = x.reshape([b * t, d_in]);
        let y = match &self.weight {
            Weight::Tensor(w) => product(x, w, WeightLayout::InOut, kernels.host()),
            Weight::Packed { weight, .. } => match packed_product(&x, weight) {
                Some(y) => y,
                None => product(x, &self.weight_tensor(), WeightLayout::InOut, true),
            },
        };
        y.reshape([b, t, d_out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, FloatDType};
    use stereo_core::FlexBackend;

    fn values<const D: usize>(x: Tensor<FlexBackend, D>) -> Vec<f32> {
        x.into_data().convert::<f32>().into_vec().unwrap()
    }

    /// Packed (on CPUs with AVX512-BF16) or not, a bf16 projection keeps its weights bit for bit,
    /// gives the product of the tensor it came from, and goes back to a tensor for the burn ops.
    #[test]
    fn packing_keeps_the_weights_and_the_product() {
        let device = Default::default();
        let w = Tensor::<FlexBackend, 2>::random([300, 70], Distribution::Default, &device)
            .cast(FloatDType::BF16);
        let x = Tensor::<FlexBackend, 3>::random([2, 9, 300], Distribution::Default, &device);
        let plain = Linear::new(w.clone());
        let held = plain.clone().held_for(Kernels::Host);
        assert_eq!(
            matches!(held.weight, Weight::Packed { .. }),
            PackedBf16::is_supported()
        );
        assert_eq!(held.dims(), [300, 70]);
        assert_eq!(values(held.weight_tensor()), values(w.clone()));
        let want = values(plain.forward(x.clone(), Kernels::Host));
        let got = values(held.forward(x.clone(), Kernels::Host));
        assert_eq!(got.len(), want.len());
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() <= 1e-4 * e.abs().max(1.0), "{g} vs {e}");
        }
        let unpacked = held.held_for(Kernels::BurnOps);
        assert!(matches!(unpacked.weight, Weight::Tensor(_)));
        assert_eq!(values(unpacked.weight_tensor()), values(w));
    }
}
