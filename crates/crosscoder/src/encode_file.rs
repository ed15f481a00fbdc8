//! The file contract of the `encode` example, as a library: read paired activations from a
//! safetensors file, encode them in chunks, write the results under stable names.
//!
//! | tensor | shape | meaning |
//! |---|---|---|
//! | `activations` (input) | `[N, n_models, d]` f32 | model 0 = base, 1 = chat |
//! | `latents` | `[N, F]` | raw `f` (not multiplied by the code normalisation) |
//! | `reconstruction` | `[N, n_models, d]` | in the input's space (normalisers undone) |
//! | `decoder_norms` | `[n_models, F]` | `‖W_dec[m, j]‖` |
//!
//! ```no_run
//! use crosscoder::{encode_file, CrosscoderLoader};
//! # fn main() -> crosscoder::Result<()> {
//! let cc = CrosscoderLoader::new("fixtures/demo/crosscoder").load()?;
//! let x = encode_file::read_activations("acts.safetensors".as_ref())?;
//! let encoded = encode_file::encode_in_chunks(cc.as_ref(), x.view(), 1024, |_| {})?;
//! encode_file::write_encoded("latents.safetensors".as_ref(), &encoded, cc.decoder_norms())?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;

use ndarray::{s, Array2, Array3, ArrayView3, Ix3};

use crate::error::{CrosscoderError, Result};
use crate::metrics::{LatentActivity, MetricsAccumulator, ReconstructionMetrics};
use crate::tensors::{f32_entry, read_safetensors, serialize_f32};
use crate::traits::Crosscoder;

/// Name of the input tensor, `[N, n_models, d]`.
pub const ACTIVATIONS: &str = "activations";
/// Name of the raw latents, `[N, F]`.
pub const LATENTS: &str = "latents";
/// Name of the reconstruction, `[N, n_models, d]`.
pub const RECONSTRUCTION: &str = "reconstruction";
/// Name of the per-model decoder norms, `[n_models, F]`.
pub const DECODER_NORMS: &str = "decoder_norms";

/// Everything one pass over the activations produces.
#[derive(Debug, Clone)]
pub struct EncodedActivations {
    /// Raw latents `f`, `[N, F]`.
    pub latents: Array2<f32>,
    /// Reconstructions in the input's space, `[N, n_models, d]`.
    pub reconstruction: Array3<f32>,
    /// MSE and FVU per model and the mean L0, over all rows.
    pub metrics: ReconstructionMetrics,
    /// How often each latent fired over all rows.
    pub activity: LatentActivity,
}

/// Reads the f32 tensor `activations` `[N, n_models, d]` of a safetensors file.
///
/// # Errors
/// The file cannot be read or parsed, has no `activations`, holds it with another rank or dtype, or
/// holds a NaN or an infinity ([`CrosscoderError::NonFiniteActivation`], naming the row, model and
/// dimension): each error names the file (and the tensor).
pub fn read_activations(path: &Path) -> Result<Array3<f32>> {
    let (mut tensors, _) = read_safetensors(path)?;
    let x = tensors.take_array::<Ix3>(ACTIVATIONS, "[N, n_models, d]")?;
    if let Some(((row, model, dim), value)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(CrosscoderError::NonFiniteActivation {
            path: path.to_path_buf(),
            row,
            model,
            dim,
            value: *value,
        });
    }
    Ok(x)
}

/// Encodes and decodes `x` `[N, n_models, d]`, `chunk_rows` rows per call (which bounds the memory
/// of the intermediate results); `progress` gets the number of rows done after each chunk.
///
/// # Errors
/// `chunk_rows == 0`, or `x` does not match the crosscoder's `n_models` and `d` (checked before any
/// compute).
pub fn encode_in_chunks(
    cc: &dyn Crosscoder,
    x: ArrayView3<'_, f32>,
    chunk_rows: usize,
    mut progress: impl FnMut(usize),
) -> Result<EncodedActivations> {
    if chunk_rows == 0 {
        return Err(CrosscoderError::InvalidOption(
            "the chunk size must be at least one row".into(),
        ));
    }
    let (rows, n, d) = x.dim();
    if n != cc.n_models() || d != cc.d_model() {
        return Err(CrosscoderError::ActivationShape {
            n_models: cc.n_models(),
            d_model: cc.d_model(),
            actual: vec![rows, n, d],
        });
    }
    let mut latents = Array2::<f32>::zeros((rows, cc.dict_size()));
    let mut reconstruction = Array3::<f32>::zeros((rows, n, d));
    let mut metrics = MetricsAccumulator::new(n, d);
    let mut activity = LatentActivity::new(cc.dict_size());
    for start in (0..rows).step_by(chunk_rows) {
        let end = (start + chunk_rows).min(rows);
        let chunk = x.slice(s![start..end, .., ..]);
        let out = cc.forward(chunk)?;
        metrics.update(chunk, out.reconstruction.view(), out.latents.view())?;
        activity.update(out.latents.view())?;
        latents.slice_mut(s![start..end, ..]).assign(&out.latents);
        reconstruction
            .slice_mut(s![start..end, .., ..])
            .assign(&out.reconstruction);
        progress(end);
    }
    Ok(EncodedActivations {
        latents,
        reconstruction,
        metrics: metrics.finish(),
        activity,
    })
}

/// Writes `latents`, `reconstruction` and `decoder_norms` to `path` (atomically: a reader never sees
/// half a file).
///
/// # Errors
/// The file cannot be written.
pub fn write_encoded(
    path: &Path,
    encoded: &EncodedActivations,
    decoder_norms: &Array2<f32>,
) -> Result<()> {
    let entries = [
        f32_entry(
            LATENTS.into(),
            encoded.latents.shape(),
            encoded.latents.iter(),
        ),
        f32_entry(
            RECONSTRUCTION.into(),
            encoded.reconstruction.shape(),
            encoded.reconstruction.iter(),
        ),
        f32_entry(
            DECODER_NORMS.into(),
            decoder_norms.shape(),
            decoder_norms.iter(),
        ),
    ];
    let bytes = serialize_f32(&entries, HashMap::new(), path)?;
    stereo_core::atomic_file::write_atomic(path, &bytes)?;
    Ok(())
}
