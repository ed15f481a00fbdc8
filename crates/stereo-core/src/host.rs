//! Host arrays to device tensors and back: the two copies every crate with a burn model makes at its
//! boundary (host arrays in and out of the trait objects).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::{Array, Array2, Dimension};

/// A device tensor could not be read back to the host (a device failure, or data of another size).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading a device tensor back to the host failed: {reason}")]
pub struct DeviceReadError {
    /// What went wrong.
    pub reason: String,
}

/// Moves a host array into a device tensor of the given 2-D shape (same number of elements), without a
/// copy on the host when the array is already in standard layout.
pub fn upload<B: Backend, D: Dimension>(
    a: Array<f32, D>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(into_vec(a), shape), device)
}

/// [`upload`] holding the values in `dtype`: bf16 rounded to nearest, ties to even, on the host
/// ([`round_to_bf16`](crate::matmul::round_to_bf16)), never through a backend's cast (burn-flex
/// casts through f64 with `half`'s `from_f64`, which ignores the low 29 bits when it breaks ties and
/// so rounds some f32 values the wrong way).
pub fn upload_in<B: Backend, D: Dimension>(
    a: Array<f32, D>,
    shape: [usize; 2],
    dtype: crate::ComputeDtype,
    device: &B::Device,
) -> Tensor<B, 2> {
    match dtype {
        crate::ComputeDtype::F32 => upload(a, shape, device),
        crate::ComputeDtype::Bf16 => {
            let values = crate::matmul::to_bf16(&into_vec(a));
            Tensor::from_data(
                TensorData::new(values, shape),
                (device, dtype.weight_dtype()),
            )
        }
    }
}

/// The row-major elements of an array, without a copy when it is already standard-layout.
fn into_vec<D: Dimension>(a: Array<f32, D>) -> Vec<f32> {
    if a.is_standard_layout() {
        let len = a.len();
        let (v, offset) = a.into_raw_vec_and_offset();
        if offset.unwrap_or(0) == 0 && v.len() == len {
            return v;
        }
        return v.into_iter().skip(offset.unwrap_or(0)).take(len).collect();
    }
    a.iter().copied().collect()
}

/// Reads a 2-D device tensor back into a host array.
///
/// # Errors
/// [`DeviceReadError`] when the backend's data cannot be read as f32 of the tensor's size.
pub fn download2<B: Backend>(t: Tensor<B, 2>) -> Result<Array2<f32>, DeviceReadError> {
    let [rows, cols] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| DeviceReadError {
            reason: format!("{e:?}"),
        })?;
    Array2::from_shape_vec((rows, cols), v).map_err(|e| DeviceReadError {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NdArrayBackend;

    #[test]
    fn arrays_round_trip_in_any_layout() {
        let a = ndarray::Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32);
        let t = upload::<NdArrayBackend, _>(a.clone(), [6, 4], &Default::default());
        let back = download2(t).unwrap();
        assert_eq!(back.as_slice().unwrap(), a.as_slice().unwrap());
        // A transposed (non-standard) view is copied in logical order.
        let m = ndarray::Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f32);
        let t = upload::<NdArrayBackend, _>(m.t().to_owned(), [2, 3], &Default::default());
        assert_eq!(download2(t).unwrap(), m.t());
    }
}
