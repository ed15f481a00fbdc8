//! Hook points with TransformerLens names, and run requests (what to capture, what to replace).

use std::fmt;
use std::sync::Arc;

use ndarray::{Array3, Array4};

pub use stereo_core::hook::HookPoint;

use crate::head_hooks::{HeadHook, HeadIntervention};

/// A function that edits an activation in place, `[batch, pos, d_model]` (padding positions included).
pub type EditFn = dyn Fn(&mut Array3<f32>) + Send + Sync;

/// Replaces the activation at a hook before the forward pass continues (for causal experiments:
/// clamping a latent, ablating a direction, patching).
#[derive(Clone)]
pub struct Intervention {
    /// Where to edit.
    pub hook: HookPoint,
    /// The edit.
    pub edit: Arc<EditFn>,
}

impl fmt::Debug for Intervention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intervention")
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

/// The positions whose logits a pass returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogitPositions {
    /// Every position, `[batch, pos, vocab]`; padding positions are zero.
    #[default]
    All,
    /// Each row's last real token, `[batch, 1, vocab]`.
    Last,
}

/// What a forward pass should produce.
///
/// The pass runs only as far as the deepest captured hook or intervention, unless `logits` is set.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Hooks whose activations are returned.
    pub capture: Vec<HookPoint>,
    /// Whether to return the logits (runs every layer and the unembedding).
    pub logits: bool,
    /// Which positions' logits: every position `[batch, pos, vocab]` (the default), or only each
    /// row's last real token `[batch, 1, vocab]` (what decoding needs, without the
    /// `pos x vocab` buffer).
    pub logits_at: LogitPositions,
    /// Edits applied in forward order.
    pub interventions: Vec<Intervention>,
    /// Start the pass from a given residual stream after a layer instead of from the embeddings
    /// (the second half of science-of-finetuning's half-step patching); `None` runs from the start.
    pub resume: Option<ResumeFrom>,
    /// Per-head tensors whose values are returned (in [`RunOutput::heads`](crate::RunOutput::heads)).
    pub capture_heads: Vec<HeadHook>,
    /// Edits of per-head tensors, applied in forward order.
    pub head_interventions: Vec<HeadIntervention>,
}

/// A residual stream to resume a forward pass from: the value of `blocks.{layer}.hook_resid_post`,
/// `[batch, pos, d_model]` for the batch being run. Only the layers after `layer` run, and only hooks
/// after it (from `blocks.{layer + 1}.hook_resid_pre` on) can be captured or edited.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    /// The layer whose output `residual` is.
    pub layer: usize,
    /// The residual, `[batch, pos, d_model]` (shared, so that cloning a request is cheap).
    pub residual: Arc<Array3<f32>>,
}

impl RunRequest {
    /// A request that captures the given hooks.
    pub fn capture(hooks: impl IntoIterator<Item = HookPoint>) -> Self {
        RunRequest {
            capture: hooks.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Also return logits.
    pub fn with_logits(mut self) -> Self {
        self.logits = true;
        self
    }

    /// Also return logits, at the last real token of each row only (see [`LogitPositions::Last`]).
    pub fn with_last_logits(mut self) -> Self {
        self.logits = true;
        self.logits_at = LogitPositions::Last;
        self
    }

    /// Adds an intervention at `hook`.
    pub fn with_intervention(
        mut self,
        hook: HookPoint,
        edit: impl Fn(&mut Array3<f32>) + Send + Sync + 'static,
    ) -> Self {
        self.interventions.push(Intervention {
            hook,
            edit: Arc::new(edit),
        });
        self
    }

    /// Resumes the pass from `residual`, the output of `layer` (see [`ResumeFrom`]).
    pub fn resumed_from(mut self, layer: usize, residual: Array3<f32>) -> Self {
        self.resume = Some(ResumeFrom {
            layer,
            residual: Arc::new(residual),
        });
        self
    }

    /// Also return the per-head tensor `hook` (its layer's attention then runs head by head).
    pub fn capture_head(mut self, hook: HeadHook) -> Self {
        self.capture_heads.push(hook);
        self
    }

    /// Adds an edit of the per-head tensor `hook`.
    pub fn with_head_intervention(
        mut self,
        hook: HeadHook,
        edit: impl Fn(&mut Array4<f32>) + Send + Sync + 'static,
    ) -> Self {
        self.head_interventions.push(HeadIntervention {
            hook,
            edit: Arc::new(edit),
        });
        self
    }

    /// The per-head hooks this request reads or edits.
    pub fn head_hooks(&self) -> impl Iterator<Item = HeadHook> + '_ {
        self.capture_heads
            .iter()
            .copied()
            .chain(self.head_interventions.iter().map(|i| i.hook))
    }

    /// Whether layer `l`'s attention must run head by head.
    pub fn has_head_hooks(&self, l: usize) -> bool {
        self.head_hooks().any(|h| h.layer() == l)
    }

    /// Number of layers the pass must run (all of them if logits are wanted).
    pub fn layers_needed(&self, n_layers: usize) -> usize {
        if self.logits {
            return n_layers;
        }
        self.capture
            .iter()
            .chain(self.interventions.iter().map(|i| &i.hook))
            .map(|h| h.layers_needed())
            .chain(self.head_hooks().map(|h| h.layer() + 1))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_parse_and_print() {
        for hook in HookPoint::all(3) {
            assert_eq!(hook.to_string().parse::<HookPoint>().unwrap(), hook);
        }
        assert_eq!(
            "blocks.13.hook_resid_post".parse::<HookPoint>().unwrap(),
            HookPoint::ResidPost(13)
        );
    }

    #[test]
    fn bad_names_are_errors() {
        for bad in [
            "",
            "hook_resid_post",
            "blocks.x.hook_resid_post",
            "blocks.1.hook_q",
            "blocks.-1.hook_mlp_out",
            "blocks..hook_attn_out",
            "blocks.1",
        ] {
            assert!(bad.parse::<HookPoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn depth_of_a_request() {
        let r = RunRequest::capture([HookPoint::ResidPost(13), HookPoint::Embed]);
        assert_eq!(r.layers_needed(26), 14);
        assert_eq!(
            RunRequest::capture([HookPoint::ResidPre(5)]).layers_needed(26),
            5
        );
        assert_eq!(RunRequest::default().with_logits().layers_needed(26), 26);
    }

    proptest! {
        #[test]
        fn any_layer_round_trips(l in 0usize..10_000, kind in 0usize..5) {
            let hook = HookPoint::all(l + 1)[1 + 5 * l + kind];
            prop_assert_eq!(hook.to_string().parse::<HookPoint>().unwrap(), hook);
        }
    }
}
