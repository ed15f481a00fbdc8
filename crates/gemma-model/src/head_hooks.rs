//! Per-head hook points inside attention, with TransformerLens names (`blocks.{l}.attn.hook_z`), and
//! edits of them. A run computes per-head tensors only for the layers a request names (see
//! [`RunRequest::capture_head`](crate::RunRequest::capture_head)); those layers' attention then runs
//! head by head on the host, on every backend and kernel path, with the same math.
//!
//! ```
//! use gemma_model::HeadHook;
//!
//! let hook: HeadHook = "blocks.3.attn.hook_pattern".parse()?;
//! assert_eq!(hook, HeadHook::Pattern(3));
//! assert_eq!(hook.to_string(), "blocks.3.attn.hook_pattern");
//! assert_eq!(hook.layer(), 3);
//! # Ok::<(), stereo_core::hook::UnknownHook>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ndarray::Array4;
use stereo_core::hook::UnknownHook;

/// A per-head tensor of attention in layer `l`. Query heads `H`, KV heads `K` (query head `h` reads KV
/// head `h / (H / K)`), `head_dim` `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeadHook {
    /// `blocks.{l}.attn.hook_q`: queries before rotary, `[batch, pos, H, e]` (`q_proj` output).
    Q(usize),
    /// `blocks.{l}.attn.hook_k`: keys before rotary, `[batch, pos, K, e]`.
    K(usize),
    /// `blocks.{l}.attn.hook_v`: values, `[batch, pos, K, e]`.
    V(usize),
    /// `blocks.{l}.attn.hook_rot_q`: queries after rotary, `[batch, pos, H, e]`.
    RotQ(usize),
    /// `blocks.{l}.attn.hook_rot_k`: keys after rotary, `[batch, pos, K, e]`.
    RotK(usize),
    /// `blocks.{l}.attn.hook_attn_scores`: `q . k * query_pre_attn_scalar^-0.5`, soft-capped, plus the
    /// additive mask (`f32::MIN` where masked), `[batch, H, query, key]`.
    AttnScores(usize),
    /// `blocks.{l}.attn.hook_pattern`: the softmax of the scores over keys, `[batch, H, query, key]`.
    Pattern(usize),
    /// `blocks.{l}.attn.hook_z`: each head's mix of values, `[batch, pos, H, e]` (`o_proj`'s input).
    Z(usize),
    /// `blocks.{l}.attn.hook_result`: each head's share of `o_proj`, `z_h @ W_O[h]`, `[batch, pos, H,
    /// d_model]`; the heads sum to `o_proj(z)`. Gemma-2 normalises that sum
    /// (`post_attention_layernorm`) before adding it to the residual, so head `h`'s write to the
    /// residual is `s (1 + w) * result_h` with the per-token scale `s = 1 / rms(sum of heads)` frozen:
    /// exact for the token, and how [`HeadHook::Result`] is attributed.
    Result(usize),
}

impl HeadHook {
    /// The layer.
    pub fn layer(self) -> usize {
        match self {
            HeadHook::Q(l)
            | HeadHook::K(l)
            | HeadHook::V(l)
            | HeadHook::RotQ(l)
            | HeadHook::RotK(l)
            | HeadHook::AttnScores(l)
            | HeadHook::Pattern(l)
            | HeadHook::Z(l)
            | HeadHook::Result(l) => l,
        }
    }

    /// Every per-head hook of layer `l`.
    pub fn all(l: usize) -> [HeadHook; 9] {
        [
            HeadHook::Q(l),
            HeadHook::K(l),
            HeadHook::V(l),
            HeadHook::RotQ(l),
            HeadHook::RotK(l),
            HeadHook::AttnScores(l),
            HeadHook::Pattern(l),
            HeadHook::Z(l),
            HeadHook::Result(l),
        ]
    }

    fn suffix(self) -> &'static str {
        match self {
            HeadHook::Q(_) => "hook_q",
            HeadHook::K(_) => "hook_k",
            HeadHook::V(_) => "hook_v",
            HeadHook::RotQ(_) => "hook_rot_q",
            HeadHook::RotK(_) => "hook_rot_k",
            HeadHook::AttnScores(_) => "hook_attn_scores",
            HeadHook::Pattern(_) => "hook_pattern",
            HeadHook::Z(_) => "hook_z",
            HeadHook::Result(_) => "hook_result",
        }
    }
}

impl fmt::Display for HeadHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocks.{}.attn.{}", self.layer(), self.suffix())
    }
}

impl FromStr for HeadHook {
    type Err = UnknownHook;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownHook {
            name: name.to_string(),
        };
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, suffix) = rest.split_once(".attn.").ok_or_else(unknown)?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let l: usize = layer.parse().map_err(|_| unknown())?;
        HeadHook::all(l)
            .into_iter()
            .find(|h| h.suffix() == suffix)
            .ok_or_else(unknown)
    }
}

/// A function that edits a per-head tensor in place (the shape of its [`HeadHook`]).
pub type HeadEditFn = dyn Fn(&mut Array4<f32>) + Send + Sync;

/// Replaces a per-head tensor before attention continues (ablating a head: zero its `hook_z` slice;
/// patching a pattern).
#[derive(Clone)]
pub struct HeadIntervention {
    /// Where to edit.
    pub hook: HeadHook,
    /// The edit.
    pub edit: Arc<HeadEditFn>,
}

impl fmt::Debug for HeadIntervention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadIntervention")
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for l in [0, 7, 25] {
            for hook in HeadHook::all(l) {
                assert_eq!(hook.to_string().parse::<HeadHook>().unwrap(), hook);
            }
        }
        for bad in [
            "blocks.1.hook_q",
            "blocks.x.attn.hook_q",
            "blocks..attn.hook_z",
            "blocks.1.attn.hook_zz",
            "blocks.-1.attn.hook_z",
            "attn.hook_z",
        ] {
            assert!(bad.parse::<HeadHook>().is_err(), "{bad}");
        }
    }
}
