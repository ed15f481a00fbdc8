//! The crosscoder on a burn backend `B`: the only place that names tensors.
//!
//! Layout, chosen once at build time so that every batch is one GEMM:
//!
//! | tensor | shape | from |
//! |---|---|---|
//! | `w_enc` | `[n_models * d, F]` | `W_enc [n, d, F]` flattened (already row-major in that order) |
//! | `b_enc` | `[1, F]` | `b_enc` |
//! | `w_dec` | `[F, n_models * d]` | `W_dec [n, F, d]` permuted to `[F, n, d]` |
//! | `b_dec` | `[1, n_models * d]` | `b_dec` flattened |
//! | `code_norm` | `[1, F]` | `w_j`, for BatchTopK's threshold and the scaled latents |
//!
//! encode: `f = act((x - shift) * scale @ w_enc + b_enc)` with `x [batch, n * d]`;
//! decode: `x̂ = (f @ w_dec + b_dec) / divisor + shift`.

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use half::bf16;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis};
use stereo_core::host::{upload, upload_in};
use stereo_core::matmul::tensors::product;
use stereo_core::matmul::WeightLayout;
use stereo_core::{BackendKind, BackendVisitor, ComputeDtype};

use crate::checkpoint::{CrosscoderCheckpoint, CrosscoderWeights};
use crate::config::{Activation, CrosscoderConfig, InputNormalizer};
use crate::error::{CrosscoderError, Result};
use crate::latents::SparseLatents;
use crate::traits::{widen, Crosscoder, ForwardOutput};

/// Rows per chunk in [`Crosscoder::encode_top_k`] are chosen so that a chunk's dense latents hold at most
/// this many values (64 Mi f32 = 256 MiB).
const TOP_K_CHUNK_VALUES: usize = 1 << 26;

/// Builds a [`CrosscoderModel`] for the backend chosen by [`stereo_core::dispatch`].
pub(crate) struct BuildVisitor {
    pub checkpoint: CrosscoderCheckpoint,
    pub kind: BackendKind,
    pub dtype: ComputeDtype,
}

impl BackendVisitor for BuildVisitor {
    type Output = Box<dyn Crosscoder>;

    fn visit<B: Backend>(self, device: B::Device) -> Box<dyn Crosscoder> {
        Box::new(CrosscoderModel::<B>::new(
            self.checkpoint,
            (self.kind, self.dtype),
            device,
        ))
    }
}

/// The device side of the input normaliser, expanded to `[1, n * d]`.
struct DeviceNormalizer<B: Backend> {
    shift: Tensor<B, 2>,
    scale: Tensor<B, 2>,
    divisor: Tensor<B, 2>,
}

/// A crosscoder whose weights live on backend `B`.
pub(crate) struct CrosscoderModel<B: Backend> {
    config: CrosscoderConfig,
    normalizer: InputNormalizer,
    origin: std::path::PathBuf,
    kind: BackendKind,
    device: B::Device,
    w_enc: Tensor<B, 2>,
    b_enc: Tensor<B, 2>,
    w_dec: Tensor<B, 2>,
    b_dec: Tensor<B, 2>,
    code_norm: Tensor<B, 2>,
    norm: Option<DeviceNormalizer<B>>,
    decoder_norms: Array2<f32>,
    code_norm_host: Array1<f32>,
    cosines: Array3<f32>,
    b_dec_host: Array2<f32>,
}

impl<B: Backend> CrosscoderModel<B> {
    /// The model of `checkpoint` on `device`; with [`ComputeDtype::Bf16`] the encoder and decoder
    /// matrices are held in bf16 (rounded to nearest, ties to even) and multiplied with bf16 inputs
    /// and f32 sums; biases, normaliser and activation stay f32.
    pub(crate) fn new(
        checkpoint: CrosscoderCheckpoint,
        (kind, dtype): (BackendKind, ComputeDtype),
        device: B::Device,
    ) -> Self {
        let decoder_norms = checkpoint.decoder_norms();
        let code_norm_host = checkpoint
            .config()
            .code_normalization
            .weights(&decoder_norms);
        let cosines = checkpoint.decoder_cosines();
        let w_dec_fnd = checkpoint.decoder_fnd();
        let origin = checkpoint.origin().to_path_buf();
        let (config, weights, normalizer) = checkpoint.into_parts();
        let (n, d, f) = (config.n_models, config.d_model, config.dict_size);
        let CrosscoderWeights {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        } = weights;
        drop(w_dec);
        let b_dec_host = b_dec.clone();

        let w_enc = upload_in::<B, _>(w_enc, [n * d, f], dtype, &device);
        let w_dec = upload_in::<B, _>(w_dec_fnd, [f, n * d], dtype, &device);
        let b_enc = upload::<B, _>(b_enc, [1, f], &device);
        let b_dec = upload::<B, _>(b_dec, [1, n * d], &device);
        let code_norm = upload::<B, _>(code_norm_host.clone(), [1, f], &device);
        let norm = normalizer.affine(n, d).map(|(shift, scale, divisor)| {
            let per_feature = |v: &[f32]| -> Array1<f32> {
                v.iter().flat_map(|s| std::iter::repeat_n(*s, d)).collect()
            };
            DeviceNormalizer {
                shift: upload::<B, _>(shift, [1, n * d], &device),
                scale: upload::<B, _>(per_feature(&scale), [1, n * d], &device),
                divisor: upload::<B, _>(per_feature(&divisor), [1, n * d], &device),
            }
        });
        tracing::debug!(backend = %kind, n, d, f, activation = config.activation.name(), "crosscoder built");
        CrosscoderModel {
            config,
            normalizer,
            origin,
            kind,
            device,
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            code_norm,
            norm,
            decoder_norms,
            code_norm_host,
            cosines,
            b_dec_host,
        }
    }

    fn check_activations<T>(&self, x: &ArrayView3<'_, T>) -> Result<()> {
        let (_, m, d) = x.dim();
        if m != self.config.n_models || d != self.config.d_model {
            return Err(CrosscoderError::ActivationShape {
                n_models: self.config.n_models,
                d_model: self.config.d_model,
                actual: x.shape().to_vec(),
            });
        }
        Ok(())
    }

    fn check_latents(&self, f: &ArrayView2<'_, f32>) -> Result<()> {
        if f.ncols() != self.config.dict_size {
            return Err(CrosscoderError::LatentShape {
                dict_size: self.config.dict_size,
                actual: f.shape().to_vec(),
            });
        }
        Ok(())
    }

    fn check_latent_indices(&self, latents: &[usize]) -> Result<Tensor<B, 1, Int>> {
        let f = self.config.dict_size;
        if let Some(&index) = latents.iter().find(|&&j| j >= f) {
            return Err(CrosscoderError::LatentIndex {
                index,
                dict_size: f,
            });
        }
        let idx: Vec<i64> = latents.iter().map(|&j| j as i64).collect();
        Ok(Tensor::from_data(
            TensorData::new(idx, [latents.len()]),
            &self.device,
        ))
    }

    /// `[batch, n, d]` host activations to a `[batch, n * d]` device tensor.
    fn upload_activations(&self, x: ArrayView3<'_, f32>) -> Tensor<B, 2> {
        let (rows, n, d) = x.dim();
        let data = match x.as_slice() {
            Some(s) => s.to_vec(),
            None => x.iter().copied().collect(),
        };
        Tensor::from_data(TensorData::new(data, [rows, n * d]), &self.device)
    }

    /// `[batch, n, d]` bf16 host activations to a `[batch, n * d]` bf16 device tensor, when the
    /// encoder takes them as they are: bf16 weights and no input normaliser (`None` otherwise).
    fn upload_bf16_activations(&self, x: ArrayView3<'_, bf16>) -> Option<Tensor<B, 2>> {
        if self.w_enc.dtype() != DType::BF16 || self.norm.is_some() {
            return None;
        }
        let (rows, n, d) = x.dim();
        let data = match x.as_slice() {
            Some(s) => s.to_vec(),
            None => x.iter().copied().collect(),
        };
        let data = TensorData::new(data, [rows, n * d]);
        Some(Tensor::from_data(data, (&self.device, DType::BF16)))
    }

    /// `f = act(norm(x) @ w_enc + b_enc)`, `[batch, F]`.
    pub(crate) fn encode_device(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = match &self.norm {
            Some(n) => (x - n.shift.clone()) * n.scale.clone(),
            None => x,
        };
        let f = relu(self.weight_product(x, &self.w_enc) + self.b_enc.clone());
        match self.config.activation {
            Activation::Relu => f,
            Activation::BatchTopK { threshold, .. } => {
                // Reference: f = relu(pre) * (relu(pre) * w_j > threshold).
                let dropped = (f.clone() * self.code_norm.clone()).lower_equal_elem(threshold);
                f.mask_fill(dropped, 0.0)
            }
        }
    }

    /// `x̂ = denorm(f @ w_dec + b_dec)`, `[batch, n * d]`.
    fn decode_device(&self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.weight_product(f, &self.w_dec) + self.b_dec.clone();
        match &self.norm {
            Some(n) => x / n.divisor.clone() + n.shift.clone(),
            None => x,
        }
    }

    /// `x @ w`: bf16 weights through `stereo_core`'s host bf16 kernels on burn-flex (burn's bf16
    /// matmul elsewhere), f32 weights through the backend's matmul as ever.
    fn weight_product(&self, x: Tensor<B, 2>, w: &Tensor<B, 2>) -> Tensor<B, 2> {
        let bf16 = w.dtype() == DType::BF16;
        product(x, w, WeightLayout::InOut, bf16)
    }

    /// Latents and reconstruction of `x`, `[batch, n * d]` on the device.
    fn forward_device(&self, x: Tensor<B, 2>) -> Result<ForwardOutput> {
        let f = self.encode_device(x);
        let reconstruction = self.to_rows3(self.decode_device(f.clone()))?;
        Ok(ForwardOutput {
            latents: download2(f)?,
            reconstruction,
        })
    }

    fn encode_chunk(&self, x: ArrayView3<'_, f32>) -> Result<Array2<f32>> {
        download2(self.encode_device(self.upload_activations(x)))
    }

    fn to_rows3(&self, t: Tensor<B, 2>) -> Result<Array3<f32>> {
        let (n, d) = (self.config.n_models, self.config.d_model);
        let a = download2(t)?;
        let rows = a.nrows();
        a.into_shape_with_order((rows, n, d))
            .map_err(|e| CrosscoderError::Device(e.to_string()))
    }
}

impl<B: Backend> Crosscoder for CrosscoderModel<B> {
    fn config(&self) -> &CrosscoderConfig {
        &self.config
    }

    fn normalizer(&self) -> &InputNormalizer {
        &self.normalizer
    }

    fn backend(&self) -> BackendKind {
        self.kind
    }

    fn encode(&self, x: ArrayView3<'_, f32>) -> Result<Array2<f32>> {
        self.check_activations(&x)?;
        if x.is_empty() {
            return Ok(Array2::zeros((x.dim().0, self.config.dict_size)));
        }
        self.encode_chunk(x)
    }

    fn encode_bf16(&self, x: ArrayView3<'_, bf16>) -> Result<Array2<f32>> {
        self.check_activations(&x)?;
        match self.upload_bf16_activations(x) {
            Some(x) if x.dims()[0] > 0 => download2(self.encode_device(x)),
            _ => self.encode(widen(x).view()),
        }
    }

    fn forward_bf16(&self, x: ArrayView3<'_, bf16>) -> Result<ForwardOutput> {
        self.check_activations(&x)?;
        match self.upload_bf16_activations(x) {
            Some(x) if x.dims()[0] > 0 => self.forward_device(x),
            _ => self.forward(widen(x).view()),
        }
    }

    fn encode_scaled(&self, x: ArrayView3<'_, f32>) -> Result<Array2<f32>> {
        let mut f = self.encode(x)?;
        f *= &self.code_norm_host;
        Ok(f)
    }

    fn encode_top_k(&self, x: ArrayView3<'_, f32>, k: usize) -> Result<SparseLatents> {
        self.check_activations(&x)?;
        let f = self.config.dict_size;
        let chunk = (TOP_K_CHUNK_VALUES / f.max(1)).max(1);
        let mut out = SparseLatents::from_dense(Array2::zeros((0, f)).view(), k);
        for rows in x.axis_chunks_iter(Axis(0), chunk) {
            let dense = self.encode_chunk(rows)?;
            out.append(SparseLatents::from_dense(dense.view(), k))?;
        }
        Ok(out)
    }

    fn decode(&self, f: ArrayView2<'_, f32>) -> Result<Array3<f32>> {
        self.check_latents(&f)?;
        let rows = f.nrows();
        if rows == 0 {
            return Ok(Array3::zeros((
                0,
                self.config.n_models,
                self.config.d_model,
            )));
        }
        let data = match f.as_slice() {
            Some(s) => s.to_vec(),
            None => f.iter().copied().collect(),
        };
        let t = Tensor::from_data(
            TensorData::new(data, [rows, self.config.dict_size]),
            &self.device,
        );
        self.to_rows3(self.decode_device(t))
    }

    fn forward(&self, x: ArrayView3<'_, f32>) -> Result<ForwardOutput> {
        self.check_activations(&x)?;
        let rows = x.dim().0;
        if rows == 0 {
            return Ok(ForwardOutput {
                latents: Array2::zeros((0, self.config.dict_size)),
                reconstruction: Array3::zeros((0, self.config.n_models, self.config.d_model)),
            });
        }
        self.forward_device(self.upload_activations(x))
    }

    fn decoder_norms(&self) -> &Array2<f32> {
        &self.decoder_norms
    }

    fn code_normalization_weights(&self) -> &Array1<f32> {
        &self.code_norm_host
    }

    fn decoder_cosine_similarity(&self, a: usize, b: usize) -> Result<Array1<f32>> {
        let n = self.config.n_models;
        for index in [a, b] {
            if index >= n {
                return Err(CrosscoderError::ModelIndex { index, n_models: n });
            }
        }
        Ok(self
            .cosines
            .index_axis(Axis(0), a)
            .index_axis(Axis(0), b)
            .to_owned())
    }

    fn decoder_vectors(&self, latents: &[usize]) -> Result<Array3<f32>> {
        let idx = self.check_latent_indices(latents)?;
        if latents.is_empty() {
            return Ok(Array3::zeros((
                0,
                self.config.n_models,
                self.config.d_model,
            )));
        }
        self.to_rows3(self.w_dec.clone().select(0, idx))
    }

    fn encoder_vectors(&self, latents: &[usize]) -> Result<Array3<f32>> {
        let idx = self.check_latent_indices(latents)?;
        if latents.is_empty() {
            return Ok(Array3::zeros((
                0,
                self.config.n_models,
                self.config.d_model,
            )));
        }
        self.to_rows3(self.w_enc.clone().select(1, idx).transpose())
    }

    fn decoder_bias(&self) -> Array2<f32> {
        self.b_dec_host.clone()
    }

    fn pre_activation_affine(&self, latents: &[usize]) -> Result<(Array3<f32>, Array1<f32>)> {
        let (n, d) = (self.config.n_models, self.config.d_model);
        let mut weights = self.encoder_vectors(latents)?;
        let mut bias: Array1<f32> = if latents.is_empty() {
            Array1::zeros(0)
        } else {
            let idx = self.check_latent_indices(latents)?;
            download2(self.b_enc.clone().select(1, idx))?
                .row(0)
                .to_owned()
        };
        // norm(x)_m = (x_m - shift_m) * scale_m: the scale goes into the weights, the shift into the bias.
        if let Some((shift, scale, _)) = self.normalizer.affine(n, d) {
            for (mut w, b) in weights.outer_iter_mut().zip(bias.iter_mut()) {
                for (m, factor) in scale.iter().enumerate() {
                    let mut row = w.row_mut(m);
                    row.mapv_inplace(|v| v * factor);
                    *b -= row.dot(&shift.row(m));
                }
            }
        }
        Ok((weights, bias))
    }

    fn to_checkpoint(&self) -> Result<CrosscoderCheckpoint> {
        let (n, d, f) = (
            self.config.n_models,
            self.config.d_model,
            self.config.dict_size,
        );
        let reshape = |a: Array2<f32>, shape: (usize, usize, usize)| {
            a.into_shape_with_order(shape)
                .map_err(|e| CrosscoderError::Device(e.to_string()))
        };
        let w_enc = reshape(download2(self.w_enc.clone())?, (n, d, f))?;
        let w_dec_fnd = reshape(download2(self.w_dec.clone())?, (f, n, d))?;
        let w_dec = w_dec_fnd
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned();
        let b_enc = download2(self.b_enc.clone())?
            .into_shape_with_order(f)
            .map_err(|e| CrosscoderError::Device(e.to_string()))?;
        let weights = CrosscoderWeights {
            w_enc,
            b_enc,
            w_dec,
            b_dec: self.b_dec_host.clone(),
        };
        CrosscoderCheckpoint::with_origin(
            self.config.clone(),
            weights,
            self.normalizer.clone(),
            self.origin.clone(),
        )
    }
}

/// Reads a 2-D device tensor back into a host array ([`stereo_core::host::download2`]).
pub(crate) fn download2<B: Backend>(t: Tensor<B, 2>) -> Result<Array2<f32>> {
    stereo_core::host::download2(t).map_err(|e| CrosscoderError::Device(e.to_string()))
}
