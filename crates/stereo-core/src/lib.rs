//! # stereo-core
//!
//! The vocabulary every crate of the workspace shares, at the bottom of the dependency graph:
//!
//! | module | what |
//! |---|---|
//! | (root) | [`BackendKind`] and [`dispatch`]: a burn backend chosen by name at run time; [`BASE`] and [`CHAT`] |
//! | [`hook`] | [`hook::HookPoint`]: TransformerLens hook names, parsed once, serialised by name |
//! | [`hub`] | the Hugging Face hub: [`hub::HubOptions`] (`HF_HOME`, `HF_TOKEN`, `HF_HUB_OFFLINE`), [`hub::HubRepo`] |
//! | [`atomic_file`] | files replaced atomically (write, flush, rename, flush the directory) |
//! | [`safetensors_file`] | the one safetensors writer, on the atomic file |
//! | [`host`] | host arrays to device tensors and back |
//! | [`rng`] | the one seeded random number generator (SplitMix64, frozen) |
//! | [`flex_bridge`] | the host buffers of burn-flex tensors, for fused kernels in backend-generic code |
//! | [`matmul`] | host matrix products with f32 or bf16 weights: the decoding step's one pass over the weights, the bf16 GEMM (`vdpbf16ps` or widening) |
//! | [`paired`] | paired statistics: summary, sign-flip permutation test, Student-t quantile |
//!
//! ## Backends by name
//!
//! Analysis code never names a backend type.
//!
//! Every model in the workspace is generic over `B: burn::tensor::backend::Backend` inside its crate and
//! is erased behind an object-safe trait at the crate boundary. The one place where a backend name
//! becomes a concrete type is [`dispatch`]: the caller hands it a [`BackendVisitor`] whose generic
//! `visit::<B>` builds the model for that backend.
//!
//! | name      | backend | notes |
//! |-----------|---------|-------|
//! | `ndarray` | [`NdArrayBackend`] | `burn-ndarray`, rayon + SIMD, f32 only |
//! | `flex`    | [`FlexBackend`] | `burn-flex` (the `gemm` crate), rayon + SIMD; the default CPU backend |
//! | `cuda`    | `CudaBackend` | behind the `cuda` cargo feature; checked with the driver before use |
//!
//! ```
//! use stereo_core::{dispatch, BackendKind, BackendVisitor};
//! use burn::tensor::{backend::Backend, Tensor};
//!
//! struct SumOnes;
//! impl BackendVisitor for SumOnes {
//!     type Output = f32;
//!     fn visit<B: Backend>(self, device: B::Device) -> f32 {
//!         Tensor::<B, 1>::ones([4], &device).sum().into_scalar().to_string().parse().unwrap()
//!     }
//! }
//! let kind: BackendKind = "ndarray".parse().unwrap();
//! assert_eq!(dispatch(kind, SumOnes).unwrap(), 4.0);
//! ```
//!
//! Cargo features: `cuda` compiles the CUDA backend (no CUDA toolkit is needed to build; the driver
//! library is loaded at run time).

pub mod allocator;
pub mod atomic_file;
mod cpu_gemm;
mod dtype;
pub mod flex_bridge;
pub mod hook;
pub mod host;
pub mod hub;
pub mod matmul;
pub mod paired;
pub mod rng;
pub mod safetensors_file;

pub use cpu_gemm::tune_cpu_gemm;
pub use dtype::{ComputeDtype, UnknownDtype};

/// Model index of the base model, in every crate, array and file (`[n_models, ...]` axes, store rows).
pub const BASE: usize = 0;
/// Model index of the chat model.
pub const CHAT: usize = 1;

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

/// `burn-ndarray` on f32.
pub type NdArrayBackend = burn::backend::NdArray<f32>;
/// `burn-flex` on f32.
pub type FlexBackend = burn::backend::Flex;
/// `burn-cuda` on f32 (feature `cuda`).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;

/// Errors of backend selection.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The name is not one of the known backends.
    #[error("unknown backend `{name}`: expected one of ndarray, flex, cuda")]
    Unknown {
        /// What the user asked for.
        name: String,
    },
    /// The backend exists but this binary was built without its cargo feature.
    #[error("backend `{name}` is not compiled in: rebuild with `--features {feature}`")]
    NotCompiled {
        /// Backend name.
        name: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// CUDA was requested but no usable driver or device is present.
    #[error("backend `cuda` is not available on this machine: {reason}")]
    CudaUnavailable {
        /// Why the driver check failed.
        reason: String,
    },
}

/// A compute backend, named as users type it on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// `burn-ndarray` (CPU).
    NdArray,
    /// `burn-flex` (CPU, `gemm` crate kernels).
    Flex,
    /// `burn-cuda` (NVIDIA GPU, feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// All backends, in the order they are listed in help texts.
    pub const ALL: [BackendKind; 3] = [BackendKind::NdArray, BackendKind::Flex, BackendKind::Cuda];

    /// The default CPU backend. `flex` was chosen by measurement (see `benches/README.md`):
    /// on the small-M matmuls of a transformer forward pass it is several times faster than `ndarray`.
    pub const DEFAULT_CPU: BackendKind = BackendKind::Flex;

    /// The name used on command lines and in files.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NdArray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this backend runs on the CPU.
    pub fn is_cpu(self) -> bool {
        !matches!(self, BackendKind::Cuda)
    }

    /// Checks that the backend is compiled in and usable here, without touching a device.
    pub fn ensure_available(self) -> Result<(), BackendError> {
        match self {
            BackendKind::NdArray | BackendKind::Flex => Ok(()),
            BackendKind::Cuda => cuda_check(),
        }
    }
}

impl Default for BackendKind {
    fn default() -> Self {
        BackendKind::DEFAULT_CPU
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ndarray" => Ok(BackendKind::NdArray),
            "flex" => Ok(BackendKind::Flex),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(BackendError::Unknown {
                name: s.to_string(),
            }),
        }
    }
}

/// Code that is generic over the backend and is run for the backend chosen at run time.
pub trait BackendVisitor {
    /// What the visit produces (typically a boxed trait object).
    type Output;
    /// Runs with the concrete backend `B` on its default device.
    fn visit<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `visitor` with the backend named by `kind`, after checking that it is available.
///
/// For the CPU backends it first applies the process-wide settings they run best with:
/// [`tune_cpu_gemm`] and [`allocator::keep_freed_memory`].
///
/// Asking for CUDA where the feature is off, or where no driver/device is present, is an error,
/// never a panic.
pub fn dispatch<V: BackendVisitor>(
    kind: BackendKind,
    visitor: V,
) -> Result<V::Output, BackendError> {
    kind.ensure_available()?;
    if kind.is_cpu() {
        tune_cpu_gemm();
        allocator::keep_freed_memory();
    }
    match kind {
        BackendKind::NdArray => Ok(visitor.visit::<NdArrayBackend>(Default::default())),
        BackendKind::Flex => Ok(visitor.visit::<FlexBackend>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(visitor.visit::<CudaBackend>(Default::default())),
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => unreachable_without_cuda(),
    }
}

/// Like [`dispatch`], on device `index` of the backend: the `index`-th GPU for CUDA; the CPU backends
/// have one device, which every index names (data-parallel replicas then share the CPU's cores).
pub fn dispatch_on<V: BackendVisitor>(
    kind: BackendKind,
    index: usize,
    visitor: V,
) -> Result<V::Output, BackendError> {
    match kind {
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            kind.ensure_available()?;
            Ok(visitor.visit::<CudaBackend>(burn::backend::cuda::CudaDevice::new(index)))
        }
        _ => {
            let _ = index;
            dispatch(kind, visitor)
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn unreachable_without_cuda<T>() -> Result<T, BackendError> {
    Err(BackendError::NotCompiled {
        name: "cuda",
        feature: "cuda",
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_check() -> Result<(), BackendError> {
    Err(BackendError::NotCompiled {
        name: "cuda",
        feature: "cuda",
    })
}

/// Loads the CUDA driver library and asks it for a device, the way cudarc will later.
/// burn-cuda panics on a background thread when no device exists, so this runs first.
#[cfg(feature = "cuda")]
fn cuda_check() -> Result<(), BackendError> {
    use libloading::{Library, Symbol};
    let unavailable = |reason: String| BackendError::CudaUnavailable { reason };
    // SAFETY: loading the system CUDA driver library; its initialisers are the vendor's.
    let lib = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
        .iter()
        .find_map(|name| unsafe { Library::new(name) }.ok())
        .ok_or_else(|| {
            unavailable("the CUDA driver library (libcuda.so.1) was not found".into())
        })?;
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
    // SAFETY: symbol signatures are those of the CUDA driver API (cuInit, cuDeviceGetCount).
    unsafe {
        let init: Symbol<CuInit> = lib
            .get(b"cuInit\0")
            .map_err(|e| unavailable(format!("cuInit not found: {e}")))?;
        let status = init(0);
        if status != 0 {
            return Err(unavailable(format!(
                "cuInit failed with CUDA error {status}"
            )));
        }
        let count_fn: Symbol<CuDeviceGetCount> = lib
            .get(b"cuDeviceGetCount\0")
            .map_err(|e| unavailable(format!("cuDeviceGetCount not found: {e}")))?;
        let mut count = 0i32;
        let status = count_fn(&mut count);
        if status != 0 {
            return Err(unavailable(format!(
                "cuDeviceGetCount failed with CUDA error {status}"
            )));
        }
        if count == 0 {
            return Err(unavailable("the driver reports no CUDA device".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
    }

    #[test]
    fn unknown_backend_is_an_error_naming_it() {
        let err = "tpu".parse::<BackendKind>().unwrap_err();
        assert!(err.to_string().contains("`tpu`"), "{err}");
    }

    #[test]
    fn cuda_without_a_device_is_an_error_not_a_panic() {
        // On CI (no GPU, usually no feature) this must be an error; on a GPU machine it may succeed.
        if let Err(err) = BackendKind::Cuda.ensure_available() {
            assert!(err.to_string().contains("cuda"), "{err}");
        }
    }
}
