//! One training step on a burn backend `B`, differentiated by burn's `Autodiff<B>`: the only training code
//! that names tensors. Parameters use the fused layout of the inference model (`w_enc [n*d, F]`,
//! `w_dec [F, n*d]`) so every product is one GEMM; the host state converts to the reference layouts.

use burn::backend::Autodiff;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::{Array3, ArrayView3};
use stereo_core::hook::HookPoint;
use stereo_core::{BackendKind, BackendVisitor};

use crate::config::{BatchTopKObjective, DecoderBiasInit, Objective, Reconstruction, TrainConfig};
use crate::data_parallel::{self, Replica};
use crate::select::{aux_k_mask, batch_top_k_cut, geometric_median};
use crate::state::TrainerState;
use crate::{CrosscoderTrainer, StepMetrics};
use burn_collective::ReduceOperation;
use crosscoder::CodeNormalization;
use crosscoder::CrosscoderWeights;
use crosscoder::{CrosscoderError, Result};
use stereo_core::host::upload;

/// Reads a 2-D device tensor back to the host ([`stereo_core::host::download2`]).
fn download2<B: Backend>(t: Tensor<B, 2>) -> Result<ndarray::Array2<f32>> {
    stereo_core::host::download2(t).map_err(|e| CrosscoderError::Device(e.to_string()))
}

/// L1 runs count a latent as dead once it has not fired for this many tokens (BatchTopK uses its
/// objective's `dead_tokens`).
pub const L1_DEAD_WINDOW_TOKENS: u64 = 1_000_000;

/// Builds a [`DeviceTrainer`] for the backend chosen by [`stereo_core::dispatch`].
pub(crate) struct BuildTrainer {
    pub state: TrainerState,
    pub kind: BackendKind,
}

impl BackendVisitor for BuildTrainer {
    type Output = Box<dyn CrosscoderTrainer>;

    fn visit<B: Backend>(self, device: B::Device) -> Box<dyn CrosscoderTrainer> {
        Box::new(DeviceTrainer::<B>::new(self.state, self.kind, device))
    }
}

/// The four parameters (or their Adam moments) in the fused device layout.
#[derive(Clone)]
struct Params<B: Backend> {
    w_enc: Tensor<B, 2>,
    b_enc: Tensor<B, 2>,
    w_dec: Tensor<B, 2>,
    b_dec: Tensor<B, 2>,
}

impl<B: Backend> Params<B> {
    fn upload(w: &CrosscoderWeights, device: &B::Device) -> Self {
        let (n, d, f) = w.dims();
        let w_dec_fnd = w
            .w_dec
            .view()
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned();
        Params {
            w_enc: upload::<B, _>(w.w_enc.clone(), [n * d, f], device),
            b_enc: upload::<B, _>(w.b_enc.clone(), [1, f], device),
            w_dec: upload::<B, _>(w_dec_fnd, [f, n * d], device),
            b_dec: upload::<B, _>(w.b_dec.clone(), [1, n * d], device),
        }
    }

    fn download(&self, n: usize, d: usize) -> Result<CrosscoderWeights> {
        let f = self.b_enc.dims()[1];
        let shape_err = |e: ndarray::ShapeError| CrosscoderError::Device(e.to_string());
        let w_enc = download2(self.w_enc.clone())?
            .into_shape_with_order((n, d, f))
            .map_err(shape_err)?;
        let b_enc = download2(self.b_enc.clone())?
            .into_shape_with_order(f)
            .map_err(shape_err)?;
        let w_dec = download2(self.w_dec.clone())?
            .into_shape_with_order((f, n, d))
            .map_err(shape_err)?
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned();
        let b_dec = download2(self.b_dec.clone())?
            .into_shape_with_order((n, d))
            .map_err(shape_err)?;
        Ok(CrosscoderWeights {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        })
    }

    /// Moves the tensors out, leaving 1 x 1 placeholders.
    fn take(&mut self, device: &B::Device) -> Self {
        let placeholder = || Tensor::<B, 2>::zeros([1, 1], device);
        std::mem::replace(
            self,
            Params::from_array([placeholder(), placeholder(), placeholder(), placeholder()]),
        )
    }

    fn into_array(self) -> [Tensor<B, 2>; 4] {
        [self.w_enc, self.b_enc, self.w_dec, self.b_dec]
    }

    fn from_array([w_enc, b_enc, w_dec, b_dec]: [Tensor<B, 2>; 4]) -> Self {
        Params {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        }
    }
}

/// A training run whose parameters and optimiser state live on backend `B`.
pub(crate) struct DeviceTrainer<B: Backend> {
    config: TrainConfig,
    kind: BackendKind,
    device: B::Device,
    step: usize,
    adam_step: usize,
    params: Params<B>,
    adam_m: Params<B>,
    adam_v: Params<B>,
    tokens_since_fired: Vec<u64>,
    threshold: f32,
    input_scaling: Option<Vec<f32>>,
    models: Vec<String>,
    hook: Option<HookPoint>,
    /// The data-parallel group this replica belongs to, if any.
    replica: Option<Replica>,
}

/// The latents one step keeps, and what the step records about them.
struct Selection<B: Backend> {
    /// The activations that reach the decoder `[rows, F]`.
    latents: Tensor<Autodiff<B>, 2>,
    /// Whether each latent fired on any row of the batch.
    fired: Vec<bool>,
    /// Mean number of kept latents per row.
    l0: f32,
    /// BatchTopK's `k` at this step.
    k_used: Option<usize>,
    /// The running threshold after this step (unchanged for L1).
    threshold: f32,
    /// The threshold reported in the metrics (BatchTopK only).
    threshold_metric: Option<f32>,
    /// BatchTopK's scaled activations `relu(pre) * w_j` on the host, for the AuxK selection.
    scaled_host: Option<ndarray::Array2<f32>>,
}

/// What a selection leaves once the autodiff graph is gone.
struct SelectionRecord {
    fired: Vec<bool>,
    l0: f32,
    k_used: Option<usize>,
    threshold: f32,
    threshold_metric: Option<f32>,
}

impl<B: Backend> Selection<B> {
    fn into_record(self) -> SelectionRecord {
        SelectionRecord {
            fired: self.fired,
            l0: self.l0,
            k_used: self.k_used,
            threshold: self.threshold,
            threshold_metric: self.threshold_metric,
        }
    }
}

/// The outcome of one forward and backward pass, with the graph already dropped.
struct ForwardBackward<B: Backend> {
    gradients: Params<B>,
    host: HostScalars,
    fvu: Vec<f32>,
    /// The dead-latent counters after this step.
    counters: Vec<u64>,
    selection: SelectionRecord,
    lambda: f32,
}

/// Quantities of one forward pass that the host needs.
struct HostScalars {
    loss: f32,
    l2: f32,
    mse: f32,
    sparsity: Option<f32>,
    auxk: Option<f32>,
}

impl<B: Backend> DeviceTrainer<B> {
    pub(crate) fn new(state: TrainerState, kind: BackendKind, device: B::Device) -> Self {
        DeviceTrainer {
            params: Params::upload(&state.weights, &device),
            adam_m: Params::upload(&state.adam_m, &device),
            adam_v: Params::upload(&state.adam_v, &device),
            config: state.config,
            kind,
            device,
            step: state.step,
            adam_step: state.adam_step,
            tokens_since_fired: state.tokens_since_fired,
            threshold: state.threshold,
            input_scaling: state.input_scaling,
            models: state.models,
            hook: state.hook,
            replica: None,
        }
    }

    /// Checks the batch and returns it scaled by the input factors, as a row-major `[rows, n, d]` array.
    fn prepare_batch(&self, batch: ArrayView3<'_, f32>) -> Result<Array3<f32>> {
        let (rows, n, d) = batch.dim();
        if n != self.config.n_models || d != self.config.d_model || rows == 0 {
            return Err(CrosscoderError::TrainingData {
                step: self.step,
                reason: format!(
                    "batch has shape {:?}, expected [rows > 0, n_models={}, d={}]",
                    batch.shape(),
                    self.config.n_models,
                    self.config.d_model
                ),
            });
        }
        if let Some((index, value)) = batch.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(CrosscoderError::TrainingData {
                step: self.step,
                reason: format!("activation {index:?} is {value}"),
            });
        }
        let mut x = batch.as_standard_layout().into_owned();
        if let Some(factors) = &self.input_scaling {
            for (m, factor) in factors.iter().enumerate() {
                x.slice_mut(ndarray::s![.., m, ..])
                    .mapv_inplace(|v| v * factor);
            }
        }
        Ok(x)
    }

    /// `w_j` of every latent as `[1, F]`, differentiable through `w_dec`.
    fn code_norm(&self, w_dec: Tensor<Autodiff<B>, 2>) -> Tensor<Autodiff<B>, 2> {
        let (n, d, f) = (
            self.config.n_models,
            self.config.d_model,
            self.config.dict_size,
        );
        let squared = (w_dec.clone() * w_dec)
            .reshape([f, n, d])
            .sum_dim(2)
            .reshape([f, n]);
        let per_model = || squared.clone().sqrt();
        let sae = || squared.clone().sum_dim(1).sqrt();
        let w = match self.config.code_normalization {
            CodeNormalization::Crosscoder => per_model().sum_dim(1),
            CodeNormalization::Sae => sae(),
            CodeNormalization::Mixed {
                alpha_sae,
                alpha_cc,
            } => sae() * alpha_sae + per_model().sum_dim(1) * alpha_cc,
            CodeNormalization::None => Tensor::ones([f, 1], &self.device),
        };
        w.reshape([1, f])
    }

    /// One optimiser step on `batch`: forward, loss, backward, clipping and Adam, in that order. Nothing in
    /// `self` changes unless the step succeeds. With `keep_gradients` the (unclipped) gradients come back in
    /// the reference layout.
    fn run_step(
        &mut self,
        batch: ArrayView3<'_, f32>,
        keep_gradients: bool,
    ) -> Result<(StepMetrics, Option<CrosscoderWeights>)> {
        let step = self.step;
        let prepared = self.prepare_batch(batch).and_then(|x_host| {
            let b_dec_start = self.decoder_bias_at_start(&x_host);
            let rows = x_host.dim().0;
            let pass = self.forward_backward(x_host, &b_dec_start)?;
            Ok((pass, b_dec_start, rows))
        });
        let (pass, b_dec_start) = match self.replica {
            Some(replica) => self.reduce_over_replicas(prepared, replica)?,
            None => prepared.map(|(pass, b_dec_start, _)| (pass, b_dec_start))?,
        };
        let recorded = if keep_gradients {
            let (n, d) = (self.config.n_models, self.config.d_model);
            Some(pass.gradients.download(n, d)?)
        } else {
            None
        };
        let (gradients, grad_norm, clipped) = self.clip_gradients(pass.gradients)?;

        let lr = self.config.lr_at(step);
        self.params.b_dec = b_dec_start;
        self.threshold = pass.selection.threshold;
        self.tokens_since_fired = pass.counters;
        self.adam_step += 1;
        self.adam_update(gradients, lr, self.adam_step);
        self.step += 1;

        let dead_window = match &self.config.objective {
            Objective::BatchTopK(o) => o.dead_tokens,
            Objective::L1 { .. } => L1_DEAD_WINDOW_TOKENS,
        };
        let is_l1 = matches!(self.config.objective, Objective::L1 { .. });
        let metrics = StepMetrics {
            step,
            lr,
            loss: pass.host.loss,
            l2_loss: pass.host.l2,
            mse_loss: pass.host.mse,
            sparsity_loss: pass.host.sparsity,
            lambda: is_l1.then_some(pass.lambda),
            auxk_loss: pass.host.auxk,
            k: pass.selection.k_used,
            threshold: pass.selection.threshold_metric,
            l0: pass.selection.l0,
            fvu: pass.fvu,
            dead_latents: self
                .tokens_since_fired
                .iter()
                .filter(|c| **c >= dead_window)
                .count(),
            grad_norm,
            clipped,
        };
        Ok((metrics, recorded))
    }

    /// A replica's pass made the group's: gradients averaged over the replicas, the fired latents
    /// merged and the dead counters advanced by the group's rows.
    /// Every replica takes part even when its own pass failed (so no replica waits forever): the
    /// failures are counted first, and if any replica failed, all of them return an error.
    fn reduce_over_replicas(
        &self,
        prepared: Result<(ForwardBackward<B>, Tensor<B, 2>, usize)>,
        replica: Replica,
    ) -> Result<(ForwardBackward<B>, Tensor<B, 2>)> {
        let failed = f32::from(u8::from(prepared.is_err()));
        let status = Tensor::<B, 1>::from_floats([failed], &self.device).reshape([1, 1]);
        let failures =
            scalar(data_parallel::reduce(replica, status, ReduceOperation::Sum)?.reshape([1]))?;
        let (mut pass, b_dec_start, rows) = prepared?;
        if failures > 0.0 {
            return Err(CrosscoderError::Diverged {
                step: self.step,
                what: format!(
                    "{} {failures} other replica(s)",
                    data_parallel::OTHER_REPLICAS
                ),
            });
        }
        let [w_enc, b_enc, w_dec, b_dec] = pass.gradients.into_array();
        let mean = |t| data_parallel::reduce(replica, t, ReduceOperation::Mean);
        pass.gradients =
            Params::from_array([mean(w_enc)?, mean(b_enc)?, mean(w_dec)?, mean(b_dec)?]);
        let fired = data_parallel::merge_fired::<B>(replica, &pass.selection.fired, &self.device)?;
        pass.counters = self.dead_counters(&fired, rows * replica.replicas);
        Ok((pass, b_dec_start))
    }

    /// The decoder bias this step starts from: the batch's geometric median on step 0 when the config asks
    /// for it, the current bias otherwise.
    fn decoder_bias_at_start(&self, x_host: &Array3<f32>) -> Tensor<B, 2> {
        let (n, d) = (self.config.n_models, self.config.d_model);
        if self.step == 0 && self.config.decoder_bias_init == DecoderBiasInit::GeometricMedian {
            let median = geometric_median(x_host.view(), 100, 1e-5);
            upload::<B, _>(median, [1, n * d], &self.device)
        } else {
            self.params.b_dec.clone()
        }
    }

    /// The forward pass, the loss and its gradients. The autodiff graph lives in this call only: once it
    /// returns, the parameters' buffers are held by `self` alone, so the optimiser updates them in place.
    fn forward_backward(
        &self,
        x_host: Array3<f32>,
        b_dec_start: &Tensor<B, 2>,
    ) -> Result<ForwardBackward<B>> {
        let step = self.step;
        let (n, d) = (self.config.n_models, self.config.d_model);
        let rows = x_host.dim().0;
        let x: Tensor<B, 2> = upload::<B, _>(x_host, [rows, n * d], &self.device);
        let x_ad = Tensor::<Autodiff<B>, 2>::from_inner(x.clone());
        let leaf =
            |t: &Tensor<B, 2>| Tensor::<Autodiff<B>, 2>::from_inner(t.clone()).require_grad();
        let (w_enc, b_enc, w_dec, b_dec) = (
            leaf(&self.params.w_enc),
            leaf(&self.params.b_enc),
            leaf(&self.params.w_dec),
            leaf(b_dec_start),
        );

        let post = relu(x_ad.clone().matmul(w_enc.clone()) + b_enc.clone());
        let code_norm = self.code_norm(w_dec.clone());
        let selection = self.select_latents(post.clone(), code_norm.clone(), rows)?;
        let counters = self.dead_counters(&selection.fired, rows);

        let x_hat = selection.latents.clone().matmul(w_dec.clone()) + b_dec.clone();
        let error = x_ad - x_hat;
        let squared = (error.clone() * error.clone())
            .reshape([rows, n, d])
            .sum_dim(2)
            .reshape([rows, n]);
        let mse = squared.clone().mean();
        let l2 = squared.clone().sqrt().mean();

        let lambda = self.config.lambda_at(step);
        let (loss, sparsity, auxk) = match &self.config.objective {
            Objective::L1 { reconstruction, .. } => {
                let recon = match reconstruction {
                    Reconstruction::SquaredSum => squared.clone().sum_dim(1).mean(),
                    Reconstruction::Mse => mse.clone(),
                    Reconstruction::L2 => l2.clone(),
                };
                let sparsity = (selection.latents.clone() * code_norm).sum_dim(1).mean();
                (recon + sparsity.clone() * lambda, Some(sparsity), None)
            }
            Objective::BatchTopK(o) => {
                let auxk = self.aux_k_loss(o, &counters, &selection, post, error, w_dec.clone())?;
                let loss = match &auxk {
                    Some(a) => l2.clone() + a.clone() * o.auxk_alpha,
                    None => l2.clone(),
                };
                (loss, None, Some(auxk))
            }
        };

        let host = HostScalars {
            loss: scalar(loss.clone().inner())?,
            l2: scalar(l2.inner())?,
            mse: scalar(mse.inner())?,
            sparsity: sparsity.map(|s| scalar(s.inner())).transpose()?,
            auxk: match auxk {
                Some(Some(a)) => Some(scalar(a.inner())?),
                Some(None) => Some(0.0),
                None => None,
            },
        };
        if !host.loss.is_finite() {
            return Err(CrosscoderError::Diverged {
                step,
                what: "the loss".into(),
            });
        }
        let fvu = self.fraction_of_variance_unexplained(&x, squared.inner(), rows)?;

        let grads = loss.backward();
        let gradient_of = |param: &Tensor<Autodiff<B>, 2>, like: &Tensor<B, 2>| {
            param.grad(&grads).unwrap_or_else(|| like.zeros_like())
        };
        let gradients = Params::<B>::from_array([
            gradient_of(&w_enc, &self.params.w_enc),
            gradient_of(&b_enc, &self.params.b_enc),
            gradient_of(&w_dec, &self.params.w_dec),
            gradient_of(&b_dec, b_dec_start),
        ]);
        Ok(ForwardBackward {
            gradients,
            host,
            fvu,
            counters,
            selection: selection.into_record(),
            lambda,
        })
    }

    /// The latents that reach the decoder and which of them fired this step: every positive one for L1,
    /// the batch's top `k * rows` scaled activations for BatchTopK (whose running threshold moves here).
    fn select_latents(
        &self,
        post: Tensor<Autodiff<B>, 2>,
        code_norm: Tensor<Autodiff<B>, 2>,
        rows: usize,
    ) -> Result<Selection<B>> {
        let step = self.step;
        let f = self.config.dict_size;
        match &self.config.objective {
            Objective::L1 { .. } => {
                let active = post.clone().inner().greater_elem(0.0).float();
                let fired = download2(active.clone().sum_dim(0))?;
                let l0 = scalar(active.sum())? / rows as f32;
                Ok(Selection {
                    latents: post,
                    fired: fired.iter().map(|c| *c > 0.0).collect(),
                    l0,
                    k_used: None,
                    threshold: self.threshold,
                    threshold_metric: None,
                    scaled_host: None,
                })
            }
            Objective::BatchTopK(o) => {
                let k = o.k_at(step);
                let scaled = post.clone().inner() * code_norm.inner();
                let scaled_host = download2(scaled.clone())?;
                let scaled_slice = scaled_host.as_slice().expect("standard layout");
                let cut = batch_top_k_cut(scaled_slice, k * rows);
                let mut fired = vec![false; f];
                let mut kept = 0usize;
                for (i, v) in scaled_slice.iter().enumerate() {
                    if *v > 0.0 && *v >= cut.cutoff {
                        fired[i % f] = true;
                        kept += 1;
                    }
                }
                let mut threshold = self.threshold;
                if step as i64 > o.threshold_start_step {
                    threshold = if threshold < 0.0 {
                        cut.min_kept
                    } else {
                        // As torch: the Python-float coefficients are rounded to f32, the arithmetic is f32.
                        let keep = o.threshold_beta as f32;
                        let take = (1.0 - o.threshold_beta) as f32;
                        keep * threshold + take * cut.min_kept
                    };
                }
                let mask = Tensor::<Autodiff<B>, 2>::from_inner(
                    scaled.greater_equal_elem(cut.cutoff).float(),
                );
                Ok(Selection {
                    latents: post * mask,
                    fired,
                    l0: kept as f32 / rows as f32,
                    k_used: Some(k),
                    threshold,
                    threshold_metric: Some(threshold),
                    scaled_host: Some(scaled_host),
                })
            }
        }
    }

    /// Tokens since each latent last fired, after this step's `rows` tokens. Updated before the AuxK loss
    /// reads them, as in the reference.
    fn dead_counters(&self, fired: &[bool], rows: usize) -> Vec<u64> {
        self.tokens_since_fired
            .iter()
            .zip(fired)
            .map(|(count, fired)| {
                if *fired {
                    0
                } else {
                    count.saturating_add(rows as u64)
                }
            })
            .collect()
    }

    /// BatchTopK's auxiliary loss: the dead latents' top `top_k_aux` activations reconstruct the residual,
    /// normalised by the residual's variance. `None` when no latent is dead; `Some(None)` when the
    /// residual has no variance to normalise by.
    fn aux_k_loss(
        &self,
        objective: &BatchTopKObjective,
        counters: &[u64],
        selection: &Selection<B>,
        post: Tensor<Autodiff<B>, 2>,
        error: Tensor<Autodiff<B>, 2>,
        w_dec: Tensor<Autodiff<B>, 2>,
    ) -> Result<Option<Tensor<Autodiff<B>, 1>>> {
        let [rows, f] = post.dims();
        let dead: Vec<usize> = (0..f)
            .filter(|&j| counters[j] >= objective.dead_tokens)
            .collect();
        if dead.is_empty() {
            return Ok(None);
        }
        let scaled_host = selection
            .scaled_host
            .as_ref()
            .expect("BatchTopK keeps its scaled activations");
        let mask = aux_k_mask(
            scaled_host.as_slice().expect("standard layout"),
            rows,
            f,
            &dead,
            objective.top_k_aux.min(dead.len()),
        );
        let mask = Tensor::<Autodiff<B>, 2>::from_inner(Tensor::from_data(
            TensorData::new(mask, [rows, f]),
            &self.device,
        ));
        let residual = error.inner();
        let centered = residual.clone() - residual.clone().mean_dim(0);
        let denominator = scalar((centered.clone() * centered).sum_dim(1).mean())?;
        let aux_reconstruction = (post * mask).matmul(w_dec);
        let aux_error = Tensor::<Autodiff<B>, 2>::from_inner(residual) - aux_reconstruction;
        let aux = (aux_error.clone() * aux_error).sum_dim(1).mean();
        Ok((denominator.is_finite() && denominator > 0.0).then(|| aux / denominator))
    }

    /// The global gradient norm, as torch's `clip_grad_norm_` computes it (the norm of the per-tensor
    /// norms), and the gradients scaled down to `grad_clip` when they exceed it.
    fn clip_gradients(&self, gradients: Params<B>) -> Result<(Params<B>, f32, bool)> {
        let mut squares = 0.0f64;
        for g in [
            &gradients.w_enc,
            &gradients.b_enc,
            &gradients.w_dec,
            &gradients.b_dec,
        ] {
            let norm = scalar((g.clone() * g.clone()).sum())?.sqrt();
            squares += f64::from(norm) * f64::from(norm);
        }
        let grad_norm = squares.sqrt() as f32;
        if !grad_norm.is_finite() {
            return Err(CrosscoderError::Diverged {
                step: self.step,
                what: "the gradient norm".into(),
            });
        }
        if let Some(max_norm) = self.config.grad_clip {
            let coef = max_norm / (grad_norm + 1e-6);
            if coef < 1.0 {
                let clipped = Params::from_array(gradients.into_array().map(|g| g * coef));
                return Ok((clipped, grad_norm, true));
            }
        }
        Ok((gradients, grad_norm, false))
    }

    /// Per-model `sum ||x - x̂||² / sum ||x - mean(x)||²` over the batch.
    fn fraction_of_variance_unexplained(
        &self,
        x: &Tensor<B, 2>,
        squared: Tensor<B, 2>,
        rows: usize,
    ) -> Result<Vec<f32>> {
        let (n, d) = (self.config.n_models, self.config.d_model);
        let centered = x.clone() - x.clone().mean_dim(0);
        let variance = (centered.clone() * centered)
            .reshape([rows, n, d])
            .sum_dim(2)
            .reshape([rows, n])
            .sum_dim(0);
        let residual = squared.sum_dim(0);
        let variance = download2(variance)?;
        let residual = download2(residual)?;
        Ok(residual
            .iter()
            .zip(variance.iter())
            .map(|(r, v)| if *v > 0.0 { r / v } else { f32::NAN })
            .collect())
    }

    /// torch's Adam (no weight decay, no amsgrad) at learning rate `lr`, Adam step `t` (1-based). The
    /// parameters and moments are moved out of `self` so that, held once, the backend updates them in place.
    fn adam_update(&mut self, gradients: Params<B>, lr: f32, t: usize) {
        let [beta1, beta2] = self.config.betas;
        let bias_correction1 = 1.0 - beta1.powi(t as i32);
        let bias_correction2_sqrt = (1.0 - beta2.powi(t as i32)).sqrt() as f32;
        let step_size = (f64::from(lr) / bias_correction1) as f32;
        let eps = self.config.eps;
        // The Python-float coefficients, each rounded once to f32 (as torch does with scalar arguments).
        let (b1, one_minus_b1) = (beta1 as f32, (1.0 - beta1) as f32);
        let (b2, one_minus_b2) = (beta2 as f32, (1.0 - beta2) as f32);

        let params = self.params.take(&self.device).into_array();
        let ms = self.adam_m.take(&self.device).into_array();
        let vs = self.adam_v.take(&self.device).into_array();
        let mut updated = Vec::with_capacity(4);
        for (((p, m), v), g) in params
            .into_iter()
            .zip(ms)
            .zip(vs)
            .zip(gradients.into_array())
        {
            let m = m.mul_scalar(b1).add(g.clone().mul_scalar(one_minus_b1));
            let v = v
                .mul_scalar(b2)
                .add(g.powi_scalar(2).mul_scalar(one_minus_b2));
            let denominator = v
                .clone()
                .sqrt()
                .div_scalar(bias_correction2_sqrt)
                .add_scalar(eps);
            let p = p.sub(m.clone().div(denominator).mul_scalar(step_size));
            updated.push((p, m, v));
        }
        let mut it = updated.into_iter();
        let mut next = || it.next().expect("four parameters");
        let [(p0, m0, v0), (p1, m1, v1), (p2, m2, v2), (p3, m3, v3)] =
            [next(), next(), next(), next()];
        self.params = Params::from_array([p0, p1, p2, p3]);
        self.adam_m = Params::from_array([m0, m1, m2, m3]);
        self.adam_v = Params::from_array([v0, v1, v2, v3]);
    }
}

impl<B: Backend> CrosscoderTrainer for DeviceTrainer<B> {
    fn config(&self) -> &TrainConfig {
        &self.config
    }

    fn backend(&self) -> BackendKind {
        self.kind
    }

    fn step_index(&self) -> usize {
        self.step
    }

    fn join_data_parallel(&mut self, replica: Replica) -> Result<()> {
        data_parallel::check_splittable(&self.config, self.step)?;
        data_parallel::join::<B>(replica, &self.device)?;
        self.replica = Some(replica);
        Ok(())
    }

    fn leave_data_parallel(&mut self) -> Result<()> {
        match self.replica.take() {
            Some(replica) => data_parallel::leave::<B>(replica),
            None => Ok(()),
        }
    }

    fn step(&mut self, batch: ArrayView3<'_, f32>) -> Result<StepMetrics> {
        Ok(self.run_step(batch, false)?.0)
    }

    fn step_with_gradients(
        &mut self,
        batch: ArrayView3<'_, f32>,
    ) -> Result<(StepMetrics, CrosscoderWeights)> {
        let (metrics, gradients) = self.run_step(batch, true)?;
        Ok((metrics, gradients.expect("gradients were requested")))
    }

    fn state(&self) -> Result<TrainerState> {
        let (n, d) = (self.config.n_models, self.config.d_model);
        Ok(TrainerState {
            config: self.config.clone(),
            step: self.step,
            adam_step: self.adam_step,
            weights: self.params.download(n, d)?,
            adam_m: self.adam_m.download(n, d)?,
            adam_v: self.adam_v.download(n, d)?,
            tokens_since_fired: self.tokens_since_fired.clone(),
            threshold: self.threshold,
            input_scaling: self.input_scaling.clone(),
            models: self.models.clone(),
            hook: self.hook,
        })
    }
}

/// The single value of a one-element tensor.
fn scalar<B: Backend>(t: Tensor<B, 1>) -> Result<f32> {
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| CrosscoderError::Device(format!("{e:?}")))?;
    v.first()
        .copied()
        .ok_or_else(|| CrosscoderError::Device("empty scalar tensor".into()))
}
