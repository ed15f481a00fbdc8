//! Hook points: the places in a transformer's forward pass that can be read or replaced, named as
//! TransformerLens names them (`hook_embed`, `blocks.{l}.hook_resid_post`, layers 0-based). Parsed once from
//! a name and carried typed everywhere (runs, crosscoder configs, store manifests); serialised as the name.
//!
//! ```
//! use stereo_core::hook::HookPoint;
//!
//! let hook: HookPoint = "blocks.13.hook_resid_post".parse()?;
//! assert_eq!(hook, HookPoint::ResidPost(13));
//! assert_eq!(hook.layers_needed(), 14);
//! assert_eq!(hook.to_string(), "blocks.13.hook_resid_post");
//! assert!("blocks.13.resid_post".parse::<HookPoint>().is_err());
//! # Ok::<(), stereo_core::hook::UnknownHook>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not a hook of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hook `{name}`: expected `hook_embed` or `blocks.{{layer}}.hook_{{resid_pre|attn_out|resid_mid|mlp_out|resid_post}}`")]
pub struct UnknownHook {
    /// The name as given.
    pub name: String,
}

/// A place in the forward pass whose activation can be read or replaced.
///
/// Names follow TransformerLens: `hook_embed`, `blocks.{l}.hook_resid_pre`, `blocks.{l}.hook_attn_out`,
/// `blocks.{l}.hook_resid_mid`, `blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_post` (layers 0-based).
/// Every activation is `[batch, pos, d_model]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// The scaled token embedding, `embed(ids) * sqrt(d_model)` (equal to `blocks.0.hook_resid_pre`).
    Embed,
    /// Input of layer `l` (HF `hidden_states[l]`).
    ResidPre(usize),
    /// What attention adds to the residual: `post_attention_layernorm(o_proj(...))`.
    AttnOut(usize),
    /// Residual after the attention add.
    ResidMid(usize),
    /// What the MLP adds: `post_feedforward_layernorm(down(...))`.
    MlpOut(usize),
    /// Output of layer `l` (HF `hidden_states[l + 1]`, before the final norm).
    ResidPost(usize),
}

impl HookPoint {
    /// The layer this hook belongs to (`None` for the embedding).
    pub fn layer(self) -> Option<usize> {
        match self {
            HookPoint::Embed => None,
            HookPoint::ResidPre(l)
            | HookPoint::AttnOut(l)
            | HookPoint::ResidMid(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
        }
    }

    /// How many layers must run before this hook's value exists.
    pub fn layers_needed(self) -> usize {
        match self {
            HookPoint::Embed => 0,
            HookPoint::ResidPre(l) => l,
            HookPoint::AttnOut(l)
            | HookPoint::ResidMid(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => l + 1,
        }
    }

    /// Every hook of a model with `n_layers` layers, in forward order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut hooks = vec![HookPoint::Embed];
        for l in 0..n_layers {
            hooks.extend([
                HookPoint::ResidPre(l),
                HookPoint::AttnOut(l),
                HookPoint::ResidMid(l),
                HookPoint::MlpOut(l),
                HookPoint::ResidPost(l),
            ]);
        }
        hooks
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => write!(f, "hook_embed"),
            HookPoint::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookPoint::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookPoint::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            HookPoint::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookPoint::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = UnknownHook;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownHook {
            name: name.to_string(),
        };
        if name == "hook_embed" {
            return Ok(HookPoint::Embed);
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, hook) = rest.split_once('.').ok_or_else(unknown)?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let l: usize = layer.parse().map_err(|_| unknown())?;
        match hook {
            "hook_resid_pre" => Ok(HookPoint::ResidPre(l)),
            "hook_attn_out" => Ok(HookPoint::AttnOut(l)),
            "hook_resid_mid" => Ok(HookPoint::ResidMid(l)),
            "hook_mlp_out" => Ok(HookPoint::MlpOut(l)),
            "hook_resid_post" => Ok(HookPoint::ResidPost(l)),
            _ => Err(unknown()),
        }
    }
}

impl Serialize for HookPoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HookPoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_round_trips_through_its_name_and_json() {
        for hook in HookPoint::all(3) {
            assert_eq!(hook.to_string().parse::<HookPoint>().unwrap(), hook);
            let json = serde_json::to_string(&hook).unwrap();
            assert_eq!(json, format!("\"{hook}\""));
            assert_eq!(serde_json::from_str::<HookPoint>(&json).unwrap(), hook);
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_name() {
        for bad in [
            "blocks.x.hook_resid_post",
            "blocks..hook_resid_pre",
            "blocks.1.hook_q",
            "embed",
            "blocks.+1.hook_resid_pre",
        ] {
            let err = bad.parse::<HookPoint>().unwrap_err();
            assert_eq!(err.name, bad);
            assert!(err.to_string().contains(bad));
        }
        assert!(serde_json::from_str::<HookPoint>("\"blocks.1.nope\"").is_err());
    }
}
