//! The demo models as files: safetensors tensors with HF names, `config.json` and
//! `generation_config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use stereo_core::safetensors_file::{encode, metadata, OwnedTensor};

use super::{
    Mat, Weights, D_FF, D_MODEL, EPS, HEAD_DIM, N_HEADS, N_KV_HEADS, N_LAYERS,
    QUERY_PRE_ATTN_SCALAR,
};
use crate::demo::error::{DemoError, Result};

impl Weights {
    /// HF tensor name -> (shape, f32 values). Norms are stored as offsets `w = scale - 1`.
    pub fn tensors(&self) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut t = BTreeMap::new();
        let mat = |m: &Mat| {
            (
                vec![m.rows, m.cols],
                m.data.iter().map(|x| *x as f32).collect(),
            )
        };
        let offsets = |s: &[f64]| (vec![s.len()], s.iter().map(|x| (x - 1.0) as f32).collect());
        t.insert("model.embed_tokens.weight".into(), mat(&self.embed_tokens));
        t.insert("model.norm.weight".into(), offsets(&self.norm));
        for (l, layer) in self.layers.iter().enumerate() {
            let p = |name: &str| format!("model.layers.{l}.{name}.weight");
            t.insert(p("self_attn.q_proj"), mat(&layer.q_proj));
            t.insert(p("self_attn.k_proj"), mat(&layer.k_proj));
            t.insert(p("self_attn.v_proj"), mat(&layer.v_proj));
            t.insert(p("self_attn.o_proj"), mat(&layer.o_proj));
            t.insert(p("mlp.gate_proj"), mat(&layer.gate_proj));
            t.insert(p("mlp.up_proj"), mat(&layer.up_proj));
            t.insert(p("mlp.down_proj"), mat(&layer.down_proj));
            t.insert(p("input_layernorm"), offsets(&layer.input_layernorm));
            t.insert(
                p("post_attention_layernorm"),
                offsets(&layer.post_attention_layernorm),
            );
            t.insert(
                p("pre_feedforward_layernorm"),
                offsets(&layer.pre_feedforward_layernorm),
            );
            t.insert(
                p("post_feedforward_layernorm"),
                offsets(&layer.post_feedforward_layernorm),
            );
        }
        t
    }

    /// `model.safetensors` bytes (f32, HF names, metadata `{"format": "pt"}`).
    pub fn safetensors(&self) -> Result<Vec<u8>> {
        let tensors: Vec<OwnedTensor> = self
            .tensors()
            .into_iter()
            .map(|(name, (shape, values))| OwnedTensor::f32(name, shape, values))
            .collect();
        encode(
            Path::new("model.safetensors"),
            &tensors,
            metadata([("format", "pt")]),
        )
        .map_err(|e| DemoError::Safetensors {
            reason: e.to_string(),
        })
    }
}

/// `config.json` in the hub (transformers 4.42) dialect.
pub(crate) fn config_json(vocab_size: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Gemma2ForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0,
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": [1, 107],
        "final_logit_softcapping": 30.0,
        "head_dim": HEAD_DIM,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": D_MODEL,
        "initializer_range": 0.02,
        "intermediate_size": D_FF,
        "max_position_embeddings": 512,
        "model_type": "gemma2",
        "num_attention_heads": N_HEADS,
        "num_hidden_layers": N_LAYERS,
        "num_key_value_heads": N_KV_HEADS,
        "pad_token_id": 0,
        "query_pre_attn_scalar": QUERY_PRE_ATTN_SCALAR,
        "rms_norm_eps": EPS,
        "rope_theta": 10000.0,
        "sliding_window": 512,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": vocab_size
    })
}

/// `generation_config.json`.
pub(crate) fn generation_config_json() -> serde_json::Value {
    serde_json::json!({
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": [1, 107],
        "pad_token_id": 0
    })
}
