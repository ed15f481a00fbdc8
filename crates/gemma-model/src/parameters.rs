//! Where a model's parameters come from: the [`ParameterSource`] trait, the safetensors checkpoint behind
//! it (with the crate's one renaming rule), and the tiled transpose that turns HF's `[out, in]` weights
//! into the `[in, out]` layout the forward pass multiplies by.

use crate::error::Result;
use crate::weights::WeightFiles;

/// Where a model's parameters come from.
pub(crate) trait ParameterSource {
    /// Reads parameter `key` (HF name without the `model.` prefix) of `shape` as row-major f32.
    fn read(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// [`read`](Self::read) as bf16: stored BF16 kept as it is, F32 and F16 rounded to the nearest
    /// bf16 (ties to even), without an f32 copy of the whole tensor where the source can avoid it.
    fn read_bf16(&mut self, key: &str, shape: &[usize]) -> Result<Vec<half::bf16>> {
        Ok(stereo_core::matmul::to_bf16(&self.read(key, shape)?))
    }
}

/// Parameters from safetensors files. The single renaming rule of this crate lives here:
/// `Gemma2ForCausalLM` checkpoints prefix the decoder with `model.`; `lm_head.weight` has no prefix.
pub(crate) struct CheckpointSource<'a> {
    pub files: &'a WeightFiles,
    pub prefix: &'static str,
}

impl<'a> CheckpointSource<'a> {
    pub fn new(files: &'a WeightFiles) -> Self {
        let prefix = if files.contains("model.embed_tokens.weight") {
            "model."
        } else {
            ""
        };
        CheckpointSource { files, prefix }
    }

    fn full_key(&self, key: &str) -> String {
        if key == "lm_head.weight" {
            key.to_string()
        } else {
            format!("{}{key}", self.prefix)
        }
    }
}

impl ParameterSource for CheckpointSource<'_> {
    fn read(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.files.read(&self.full_key(key), shape)
    }

    fn read_bf16(&mut self, key: &str, shape: &[usize]) -> Result<Vec<half::bf16>> {
        self.files.read_bf16(&self.full_key(key), shape)
    }
}

/// Row-major `[rows, cols]` -> row-major `[cols, rows]`, in cache-friendly tiles.
pub(crate) fn transpose<T: Copy + Default>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 64;
    let mut out = vec![T::default(); values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_is_a_transpose() {
        let v: Vec<f32> = (0..(70 * 130)).map(|x| x as f32).collect();
        let t = transpose::<f32>(&v, 70, 130);
        for r in 0..70 {
            for c in 0..130 {
                assert_eq!(t[c * 70 + r], v[r * 130 + c]);
            }
        }
    }
}
