//! Zero-copy access to burn-flex tensors from code that is generic over the backend, so that models
//! can hand them to fused host kernels (Gemma-2's `host_kernels`, the [`matmul`](crate::matmul)
//! products).
//!
//! Whether `B` is burn-flex is decided at run time by the type of its float tensors; no `unsafe`
//! is involved (the tensors are moved through `Box<dyn Any>`).

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{Element, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

/// Whether `B` keeps its float tensors as burn-flex host buffers.
pub fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<FlexTensor>()
}

/// The values of a burn-flex tensor of element type `T` (f32, or bf16 for weights), row-major.
pub struct HostTensor<T: Element + bytemuck::Pod = f32>(FlexTensor, std::marker::PhantomData<T>);

impl<T: Element + bytemuck::Pod> HostTensor<T> {
    /// The values (the tensor's own buffer).
    pub fn values(&self) -> &[T] {
        // Contiguous `T` by construction (`host_as`).
        self.0.as_slice::<T>().unwrap_or_default()
    }
}

/// `x`'s values when `B` is burn-flex and `x` is f32: a view of its buffer, copied only when `x`
/// is a strided view. `None` on any other backend or dtype.
pub fn host<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<HostTensor> {
    host_as(x)
}

/// [`host`] for tensors of element type `T` (`None` when `x` holds another type).
pub fn host_as<T: Element + bytemuck::Pod, B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Option<HostTensor<T>> {
    let primitive: Box<dyn Any> = Box::new(x.into_primitive().tensor());
    let flex = *primitive.downcast::<FlexTensor>().ok()?;
    if flex.dtype() != T::dtype() {
        return None;
    }
    let flex = if flex.as_slice::<T>().is_some() {
        flex
    } else {
        flex.to_contiguous()
    };
    Some(HostTensor(flex, std::marker::PhantomData))
}

/// A burn-flex tensor of `shape` that takes ownership of `values`; `None` when `B` is not
/// burn-flex.
pub fn from_host<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> Option<Tensor<B, D>> {
    let flex: Box<dyn Any> = Box::new(FlexTensor::from_data(TensorData::new(values, shape)));
    let primitive = *flex.downcast::<B::FloatTensorPrimitive>().ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlexBackend, NdArrayBackend};

    #[test]
    fn flex_tensors_round_trip_without_a_copy_of_the_values() {
        assert!(is_flex::<FlexBackend>());
        let device = Default::default();
        let x = Tensor::<FlexBackend, 2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]),
            &device,
        );
        let host_x = host(x.clone()).expect("flex");
        assert_eq!(host_x.values(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // A transposed view is made contiguous.
        let host_t = host(x.transpose()).expect("flex");
        assert_eq!(host_t.values(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let back = from_host::<FlexBackend, 2>(vec![7.0, 8.0], [1, 2]).expect("flex");
        assert_eq!(back.into_data().to_vec::<f32>().unwrap(), vec![7.0, 8.0]);
    }

    #[test]
    fn bf16_tensors_are_read_as_bf16_only() {
        let device = Default::default();
        let values = vec![half::bf16::from_f32(1.5), half::bf16::from_f32(-2.0)];
        let x = Tensor::<FlexBackend, 1>::from_data(
            TensorData::new(values.clone(), [2]),
            (&device, burn::tensor::DType::BF16),
        );
        assert!(host(x.clone()).is_none());
        assert_eq!(
            host_as::<half::bf16, _, 1>(x).expect("bf16").values(),
            &values[..]
        );
    }

    #[test]
    fn other_backends_are_refused() {
        assert!(!is_flex::<NdArrayBackend>());
        let x = Tensor::<NdArrayBackend, 1>::from_data([1.0f32, 2.0], &Default::default());
        assert!(host(x).is_none());
        assert!(from_host::<NdArrayBackend, 1>(vec![1.0], [1]).is_none());
    }
}
