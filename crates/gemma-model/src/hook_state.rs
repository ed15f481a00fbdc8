//! The hooks of one run: interventions applied and activations captured as the forward pass reaches each
//! hook, and the copies of `[batch, pos, d]` tensors to the host (padding zeroed for captures).

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::{Array3, Array4};

use crate::batch::TokenBatch;
use crate::error::{GemmaError, Result};
use crate::head_hooks::HeadHook;
use crate::hooks::{HookPoint, RunRequest};

/// Captures and interventions of one run.
pub(crate) struct HookState<'a> {
    request: &'a RunRequest,
    batch: &'a TokenBatch,
    pub(crate) captured: BTreeMap<HookPoint, Array3<f32>>,
    pub(crate) captured_heads: BTreeMap<HeadHook, Array4<f32>>,
}

impl<'a> HookState<'a> {
    pub(crate) fn new(request: &'a RunRequest, batch: &'a TokenBatch) -> Self {
        HookState {
            request,
            batch,
            captured: BTreeMap::new(),
            captured_heads: BTreeMap::new(),
        }
    }

    /// Whether the request reads or edits `hook`.
    pub(crate) fn wants_head(&self, hook: HeadHook) -> bool {
        self.request.head_hooks().any(|h| h == hook)
    }

    /// Applies the edits registered at the per-head `hook`, then captures the result if asked
    /// (padding positions, and padding query rows of `[batch, head, query, key]` tensors, zeroed).
    pub(crate) fn visit_head(&mut self, hook: HeadHook, mut x: Array4<f32>) -> Result<Array4<f32>> {
        let dims = x.shape().to_vec();
        for edit in self
            .request
            .head_interventions
            .iter()
            .filter(|i| i.hook == hook)
        {
            (edit.edit)(&mut x);
            if x.shape() != dims.as_slice() {
                return Err(GemmaError::InterventionShape {
                    hook: hook.to_string(),
                    expected: dims,
                    actual: x.shape().to_vec(),
                });
            }
        }
        if self.request.capture_heads.contains(&hook) {
            let mut captured = x.clone();
            let t = self.batch.seq_len();
            let by_head = matches!(hook, HeadHook::AttnScores(_) | HeadHook::Pattern(_));
            for (i, real) in self.batch.mask().iter().enumerate() {
                if !real {
                    let (row, pos) = (i / t, i % t);
                    if by_head {
                        captured.slice_mut(ndarray::s![row, .., pos, ..]).fill(0.0);
                    } else {
                        captured.slice_mut(ndarray::s![row, pos, .., ..]).fill(0.0);
                    }
                }
            }
            self.captured_heads.insert(hook, captured);
        }
        Ok(x)
    }

    /// Applies the interventions registered at `hook`, then captures the result if asked.
    pub(crate) fn visit<B: Backend>(
        &mut self,
        hook: HookPoint,
        x: Tensor<B, 3>,
    ) -> Result<Tensor<B, 3>> {
        let edits: Vec<_> = self
            .request
            .interventions
            .iter()
            .filter(|i| i.hook == hook)
            .collect();
        let capture = self.request.capture.contains(&hook);
        if edits.is_empty() && !capture {
            return Ok(x);
        }
        let x = if edits.is_empty() {
            x
        } else {
            let device = x.device();
            let dims = x.dims();
            let mut host = raw_to_host(x)?;
            for edit in edits {
                (edit.edit)(&mut host);
                if host.shape() != dims {
                    return Err(GemmaError::InterventionShape {
                        hook: hook.to_string(),
                        expected: dims.to_vec(),
                        actual: host.shape().to_vec(),
                    });
                }
            }
            let data = TensorData::new(host.into_iter().collect::<Vec<f32>>(), dims);
            Tensor::from_data(data, &device)
        };
        if capture {
            self.captured.insert(hook, to_host(x.clone(), self.batch)?);
        }
        Ok(x)
    }
}

/// Copies a `[batch, pos, d]` tensor to the host, unchanged. A backend that hands back unreadable or
/// mis-sized data is an error ([`GemmaError::DeviceData`]), never zeros.
pub(crate) fn raw_to_host<B: Backend>(x: Tensor<B, 3>) -> Result<Array3<f32>> {
    let [b, t, d] = x.dims();
    let values: Vec<f32> =
        x.into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| GemmaError::DeviceData {
                reason: format!("unreadable data: {e:?}"),
            })?;
    Array3::from_shape_vec((b, t, d), values).map_err(|e| GemmaError::DeviceData {
        reason: format!("a tensor of the wrong size for [{b}, {t}, {d}]: {e}"),
    })
}

/// Copies a `[batch, pos, d]` tensor to the host and zeroes the padding positions.
pub(crate) fn to_host<B: Backend>(x: Tensor<B, 3>, batch: &TokenBatch) -> Result<Array3<f32>> {
    let t = x.dims()[1];
    let mut out = raw_to_host(x)?;
    for (i, real) in batch.mask().iter().enumerate() {
        if !real {
            out.slice_mut(ndarray::s![i / t, i % t, ..]).fill(0.0);
        }
    }
    Ok(out)
}
