//! The object-safe face of a crosscoder for the rest of the workspace: host arrays in and out, no burn
//! type in sight, built for a backend chosen at run time.

use half::bf16;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3};
use stereo_core::matmul::WeightElement;
use stereo_core::BackendKind;

use crate::checkpoint::CrosscoderCheckpoint;
use crate::config::{CrosscoderConfig, InputNormalizer};
use crate::error::Result;
use crate::latents::SparseLatents;
use crate::metrics::{reconstruction_metrics, ReconstructionMetrics};

/// Latents and reconstruction of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardOutput {
    /// Raw latents `f`, `[batch, F]`.
    pub latents: Array2<f32>,
    /// Reconstruction `[batch, n_models, d]`, in the caller's activation space (normalisation undone).
    pub reconstruction: Array3<f32>,
}

/// A crosscoder over `n_models` models (0 = base, 1 = chat), ready to run.
///
/// **Which latents?** [`Crosscoder::encode`] returns the raw latents `f` (what multiplies the decoder
/// rows: `x̂_m = sum_j f_j W_dec[m, j] + b_dec[m]`). dictionary_learning's `forward(x, output_features=True)`
/// and `get_activations(x)` return `f * w_j` instead, where `w_j` is the code normalisation (for the
/// default CROSSCODER normalisation `w_j = sum_m ||W_dec[m, j]||`); [`Crosscoder::encode_scaled`] returns
/// that. The two agree only for unit-norm decoders.
///
/// Every method checks shapes before any compute: activations must be `[batch, n_models, d]`, latents
/// `[batch, F]`, otherwise a typed error is returned.
pub trait Crosscoder: Send + Sync {
    /// Sizes, activation, code normalisation and metadata (models, hook, layer, source).
    fn config(&self) -> &CrosscoderConfig;

    /// The input normaliser applied on encode and undone on decode.
    fn normalizer(&self) -> &InputNormalizer;

    /// The backend the weights live on.
    fn backend(&self) -> BackendKind;

    /// Number of models `n`.
    fn n_models(&self) -> usize {
        self.config().n_models
    }

    /// Activation width `d`.
    fn d_model(&self) -> usize {
        self.config().d_model
    }

    /// Number of latents `F`.
    fn dict_size(&self) -> usize {
        self.config().dict_size
    }

    /// Raw latents `f [batch, F]` of activations `x [batch, n_models, d]`:
    /// `f = act(sum_m norm(x)_m @ W_enc[m] + b_enc)`.
    fn encode(&self, x: ArrayView3<'_, f32>) -> Result<Array2<f32>>;

    /// [`Crosscoder::encode`] of bf16 activations (rows of a bf16 activation store, read as they are):
    /// equal to `encode` of their f32 values, bit for bit. A crosscoder held in bf16 without an
    /// input normaliser hands the rows to its products as they are (no f32 copy of the batch);
    /// otherwise they are widened once (exactly).
    fn encode_bf16(&self, x: ArrayView3<'_, bf16>) -> Result<Array2<f32>> {
        self.encode(widen(x).view())
    }

    /// Scaled latents `f * w_j [batch, F]`: what dictionary_learning's `get_activations` and
    /// `forward(output_features=True)` return.
    fn encode_scaled(&self, x: ArrayView3<'_, f32>) -> Result<Array2<f32>>;

    /// The `k` largest raw latents of each row, `[batch, k]` indices and values, computed in row chunks so
    /// that the dense `[batch, F]` matrix never exists at once.
    fn encode_top_k(&self, x: ArrayView3<'_, f32>, k: usize) -> Result<SparseLatents>;

    /// Reconstruction `[batch, n_models, d]` of raw latents `f [batch, F]`, in the caller's activation space.
    fn decode(&self, f: ArrayView2<'_, f32>) -> Result<Array3<f32>>;

    /// Encode and decode in one pass (the latents stay on the device between the two).
    fn forward(&self, x: ArrayView3<'_, f32>) -> Result<ForwardOutput>;

    /// [`Crosscoder::forward`] of bf16 activations, equal to `forward` of their f32 values (see
    /// [`Crosscoder::encode_bf16`]).
    fn forward_bf16(&self, x: ArrayView3<'_, bf16>) -> Result<ForwardOutput> {
        self.forward(widen(x).view())
    }

    /// Per-model decoder norms `||W_dec[m, j]||`, `[n_models, F]`.
    fn decoder_norms(&self) -> &Array2<f32>;

    /// The code normalisation `w_j`, `[F]`.
    fn code_normalization_weights(&self) -> &Array1<f32>;

    /// Cosine similarity of the decoder vectors of models `a` and `b` for every latent, `[F]`
    /// (NaN where a vector is zero).
    fn decoder_cosine_similarity(&self, a: usize, b: usize) -> Result<Array1<f32>>;

    /// Decoder vectors of the chosen latents, `[latents.len(), n_models, d]` (`W_dec[m, j]` at `[i, m]`).
    fn decoder_vectors(&self, latents: &[usize]) -> Result<Array3<f32>>;

    /// Encoder vectors of the chosen latents, `[latents.len(), n_models, d]` (`W_enc[m, :, j]` at `[i, m]`).
    fn encoder_vectors(&self, latents: &[usize]) -> Result<Array3<f32>>;

    /// Decoder bias `b_dec`, `[n_models, d]` (in the normalised space).
    fn decoder_bias(&self) -> Array2<f32>;

    /// The pre-activation of each chosen latent as an affine function of the raw activations (the
    /// input normaliser folded in): weights `[latents.len(), n_models, d]` and biases `[latents.len()]`
    /// with `pre_j(x) = sum_m x_m . W[j, m] + b[j]` exactly, the activation function not applied.
    /// Linear in the residual, so it splits over whatever sums to the residual (circuit attribution).
    fn pre_activation_affine(&self, latents: &[usize]) -> Result<(Array3<f32>, Array1<f32>)>;

    /// Copies the weights back to the host as a checkpoint (to save it, or to move it to another backend).
    fn to_checkpoint(&self) -> Result<CrosscoderCheckpoint>;

    /// MSE, fraction of variance unexplained (per model) and L0 of one batch `[batch, n_models, d]`.
    fn evaluate(&self, x: ArrayView3<'_, f32>) -> Result<ReconstructionMetrics> {
        let out = self.forward(x)?;
        reconstruction_metrics(x, out.reconstruction.view(), out.latents.view())
    }
}

/// `x` as f32 (exact).
pub(crate) fn widen(x: ArrayView3<'_, bf16>) -> Array3<f32> {
    x.mapv(WeightElement::widen)
}
