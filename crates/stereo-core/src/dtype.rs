//! The precision models and crosscoders compute in, chosen with `--dtype f32|bf16`.

use std::fmt;
use std::str::FromStr;

/// Compute precision of a model or a crosscoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDtype {
    /// f32 everywhere (weights stored as BF16 are widened exactly).
    #[default]
    F32,
    /// bf16 weights (stored BF16 kept as they are, F32 and F16 rounded to the nearest bf16, ties
    /// to even, once at load) and bf16 inputs to every product with a weight matrix, with f32 sums.
    /// Everything else (a model's residual stream, RMSNorm, attention with its softmax and
    /// soft-caps, GeGLU; a crosscoder's biases, normaliser and activation) stays f32. burn-flex and
    /// CUDA; burn-ndarray has no bf16 tensors and refuses it.
    Bf16,
}

impl ComputeDtype {
    /// Both, in the order help texts list them.
    pub const ALL: [ComputeDtype; 2] = [ComputeDtype::F32, ComputeDtype::Bf16];

    /// The burn dtype weight matrices are held in.
    pub fn weight_dtype(self) -> burn::tensor::DType {
        match self {
            ComputeDtype::F32 => burn::tensor::DType::F32,
            ComputeDtype::Bf16 => burn::tensor::DType::BF16,
        }
    }

    /// Bytes of one weight.
    pub fn bytes_per_weight(self) -> usize {
        match self {
            ComputeDtype::F32 => 4,
            ComputeDtype::Bf16 => 2,
        }
    }

    /// The name on the command line: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            ComputeDtype::F32 => "f32",
            ComputeDtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dtype name that is neither `f32` nor `bf16`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype `{name}`: expected f32 or bf16")]
pub struct UnknownDtype {
    /// The name given.
    pub name: String,
}

impl FromStr for ComputeDtype {
    type Err = UnknownDtype;
    fn from_str(s: &str) -> Result<Self, UnknownDtype> {
        match s {
            "f32" | "float32" => Ok(ComputeDtype::F32),
            "bf16" | "bfloat16" => Ok(ComputeDtype::Bf16),
            _ => Err(UnknownDtype { name: s.into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_named() {
        for dtype in ComputeDtype::ALL {
            assert_eq!(dtype.name().parse::<ComputeDtype>(), Ok(dtype));
        }
        assert_eq!("bfloat16".parse::<ComputeDtype>(), Ok(ComputeDtype::Bf16));
        let err = "fp8".parse::<ComputeDtype>().unwrap_err();
        assert_eq!(err.to_string(), "unknown dtype `fp8`: expected f32 or bf16");
    }
}
