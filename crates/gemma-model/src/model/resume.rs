//! Resuming a pass from a residual stream after a layer ([`ResumeFrom`]): the second half of
//! science-of-finetuning's half-step patching, without running the layers before it.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::Array3;

use super::Gemma2;
use crate::batch::TokenBatch;
use crate::error::{GemmaError, Result};
use crate::hook_state::{raw_to_host, HookState};
use crate::hooks::{HookPoint, ResumeFrom, RunRequest};

impl<B: Backend> Gemma2<B> {
    /// The logits of residual vectors `[batch, pos, d_model]` through the final norm and the
    /// unembedding only (see [`LanguageModel::unembed`](crate::LanguageModel::unembed)).
    pub fn unembed(&self, residual: &Array3<f32>) -> Result<Array3<f32>> {
        let d = self.config.hidden_size;
        let dims: [usize; 3] = residual
            .shape()
            .try_into()
            .expect("an Array3 has three axes");
        if dims[2] != d {
            return Err(GemmaError::InvalidInput {
                reason: format!("the logit lens needs vectors of width {d}, got {:?}", dims),
            });
        }
        if let Some(value) = residual.iter().find(|v| !v.is_finite()) {
            return Err(GemmaError::InvalidInput {
                reason: format!("a vector for the logit lens holds {value}"),
            });
        }
        let values: Vec<f32> = residual.iter().copied().collect();
        let h = Tensor::from_data(TensorData::new(values, dims), &self.device);
        raw_to_host(self.logits(h)?)
    }

    /// The residual a resumed pass starts from, through `blocks.{layer + 1}.hook_resid_pre`.
    pub(super) fn resumed(
        &self,
        resume: &ResumeFrom,
        hooks: &mut HookState<'_>,
    ) -> Result<Tensor<B, 3>> {
        let dims: [usize; 3] = resume
            .residual
            .shape()
            .try_into()
            .expect("an Array3 has three axes");
        let values: Vec<f32> = resume.residual.iter().copied().collect();
        let h = Tensor::from_data(TensorData::new(values, dims), &self.device);
        if resume.layer + 1 < self.config.num_hidden_layers {
            hooks.visit(HookPoint::ResidPre(resume.layer + 1), h)
        } else {
            Ok(h)
        }
    }

    /// A resumed pass needs a residual of the batch's shape, a layer the model has, and no hook at or
    /// before the layer it resumes after.
    pub(super) fn check_resume(
        &self,
        batch: &TokenBatch,
        request: &RunRequest,
        resume: &ResumeFrom,
    ) -> Result<()> {
        let n_layers = self.config.num_hidden_layers;
        if resume.layer >= n_layers {
            return Err(GemmaError::HookOutOfRange {
                hook: HookPoint::ResidPost(resume.layer).to_string(),
                layer: resume.layer,
                n_layers,
            });
        }
        let expected = [batch.batch_size(), batch.seq_len(), self.config.hidden_size];
        if resume.residual.shape() != expected {
            return Err(GemmaError::InvalidInput {
                reason: format!(
                    "the residual to resume from after layer {} has shape {:?}, but the batch needs {:?}",
                    resume.layer,
                    resume.residual.shape(),
                    expected
                ),
            });
        }
        if let Some(value) = resume.residual.iter().find(|v| !v.is_finite()) {
            return Err(GemmaError::InvalidInput {
                reason: format!(
                    "the residual to resume from after layer {} holds {value}",
                    resume.layer
                ),
            });
        }
        if let Some(hook) = request
            .capture
            .iter()
            .chain(request.interventions.iter().map(|i| &i.hook))
            .find(|h| h.layer().is_none_or(|l| l <= resume.layer))
        {
            return Err(GemmaError::InvalidInput {
                reason: format!(
                    "hook {hook} comes before the pass resumes (after layer {})",
                    resume.layer
                ),
            });
        }
        Ok(())
    }
}
