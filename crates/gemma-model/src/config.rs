//! `Gemma2Config`: the model hyper-parameters, read from a checkpoint's `config.json`.
//!
//! Field names equal the HF keys. Two dialects exist and both are read:
//! - hub files written by transformers 4.42-4.44: top-level `rope_theta`, `hidden_act` and
//!   `hidden_activation`, `torch_dtype`, no `layer_types` (local attention on even layers);
//! - files written by transformers >= 5: `rope_parameters: {rope_theta, rope_type}`, explicit
//!   `layer_types`, `dtype`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{GemmaError, Result};

/// Whether a layer attends within a sliding window or globally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionKind {
    /// `sliding_attention`: query i sees key j iff `0 <= i - j < sliding_window`.
    Sliding,
    /// `full_attention`: causal attention over the whole prefix.
    Full,
}

/// Gemma-2 hyper-parameters, with HF's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemma2Config {
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Residual stream width, `d_model`.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA: query head `h` uses KV head `h / (heads / kv_heads)`).
    pub num_key_value_heads: usize,
    /// Width of one head (may differ from `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// The attention scale is `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Soft-cap of attention scores (`None` = off).
    pub attn_logit_softcapping: Option<f64>,
    /// Soft-cap of the final logits (`None` = off).
    pub final_logit_softcapping: Option<f64>,
    /// Sliding-window size of the local layers (`None` = every layer global).
    pub sliding_window: Option<usize>,
    /// Attention kind of every layer, `num_hidden_layers` entries.
    pub layer_types: Vec<AttentionKind>,
    /// Whether the unembedding is the transposed embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: u32,
    /// End-of-sequence token ids (the -it model also ends on `<end_of_turn>`).
    pub eos_token_ids: Vec<u32>,
    /// Padding token id.
    pub pad_token_id: u32,
    /// Dtype the checkpoint is stored in, as the config says (`float32`, `bfloat16`), if it says.
    pub torch_dtype: Option<String>,
    /// The longest sequence the model was trained for (RoPE positions); longer runs are refused.
    /// HF's default, 8192, when the file does not say.
    pub max_position_embeddings: usize,
}

/// Upper bounds on the sizes a `config.json` may state: far above any Gemma-2 (2b: 26 layers, 27b: 46
/// layers, hidden 4608, vocab 256000), low enough that a lying file cannot make us allocate without
/// bound before its weights are checked against it.
const SIZE_LIMITS: [(&str, usize); 7] = [
    ("vocab_size", 1 << 24),
    ("hidden_size", 1 << 16),
    ("intermediate_size", 1 << 20),
    ("num_hidden_layers", 1 << 10),
    ("num_attention_heads", 1 << 10),
    ("head_dim", 1 << 12),
    ("max_position_embeddings", 1 << 24),
];

fn default_rms_norm_eps() -> f64 {
    1e-6
}

impl Gemma2Config {
    /// The configuration of `google/gemma-2-2b` (and `-it`), REFERENCE.md section 1.
    pub fn gemma_2_2b() -> Self {
        Gemma2Config {
            vocab_size: 256_000,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            query_pre_attn_scalar: 256.0,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            attn_logit_softcapping: Some(50.0),
            final_logit_softcapping: Some(30.0),
            sliding_window: Some(4096),
            layer_types: default_layer_types(26),
            tie_word_embeddings: true,
            bos_token_id: 2,
            eos_token_ids: vec![1],
            pad_token_id: 0,
            torch_dtype: Some("float32".into()),
            max_position_embeddings: 8192,
        }
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let value: Value = serde_json::from_str(text).map_err(|e| GemmaError::json(&path, &e))?;
        ConfigReader { path, value }.read()
    }

    /// The attention kind of layer `layer`.
    pub fn attention_kind(&self, layer: usize) -> AttentionKind {
        self.layer_types[layer]
    }

    /// `sqrt(hidden_size)` rounded to f32, the factor HF multiplies the embedding by.
    pub fn embedding_scale(&self) -> f32 {
        (self.hidden_size as f64).sqrt() as f32
    }

    /// `query_pre_attn_scalar^-0.5`, as f32.
    pub fn attention_scale(&self) -> f32 {
        self.query_pre_attn_scalar.powf(-0.5) as f32
    }

    /// Number of parameters of the embedding plus layers `0..n_layers` (no unembedding).
    pub fn parameters_up_to(&self, n_layers: usize) -> usize {
        self.vocab_size * self.hidden_size + n_layers * self.parameters_per_layer()
    }

    /// Parameters of one decoder layer.
    pub fn parameters_per_layer(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size + 4 * d
    }
}

/// The layer pattern of configs without `layer_types`: even layers local, odd layers global.
fn default_layer_types(n_layers: usize) -> Vec<AttentionKind> {
    (0..n_layers)
        .map(|l| {
            if l % 2 == 0 {
                AttentionKind::Sliding
            } else {
                AttentionKind::Full
            }
        })
        .collect()
}

/// Reads fields out of a parsed `config.json`, producing errors that name the file and field.
struct ConfigReader {
    path: PathBuf,
    value: Value,
}

impl ConfigReader {
    fn read(&self) -> Result<Gemma2Config> {
        self.check_architecture()?;
        let num_hidden_layers = self.size("num_hidden_layers")?;
        let num_attention_heads = self.size("num_attention_heads")?;
        let num_key_value_heads = self.usize("num_key_value_heads")?;
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(self.invalid(
                "num_key_value_heads",
                num_key_value_heads,
                format!("must divide num_attention_heads = {num_attention_heads}"),
            ));
        }
        let head_dim = self.size("head_dim")?;
        if head_dim % 2 != 0 {
            return Err(self.invalid("head_dim", head_dim, "RoPE needs an even head_dim".into()));
        }
        self.check_activation()?;
        if self.value.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err(self.invalid(
                "attention_bias",
                true,
                "Gemma-2 has no attention biases".into(),
            ));
        }
        if self
            .value
            .get("use_bidirectional_attention")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err(self.invalid(
                "use_bidirectional_attention",
                true,
                "only causal attention is implemented".into(),
            ));
        }
        let config = Gemma2Config {
            vocab_size: self.size("vocab_size")?,
            hidden_size: self.size("hidden_size")?,
            intermediate_size: self.size("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            query_pre_attn_scalar: self.positive_f64("query_pre_attn_scalar")?,
            rms_norm_eps: self
                .optional_f64("rms_norm_eps")?
                .unwrap_or_else(default_rms_norm_eps),
            rope_theta: self.rope_theta()?,
            attn_logit_softcapping: self.softcap("attn_logit_softcapping")?,
            final_logit_softcapping: self.softcap("final_logit_softcapping")?,
            sliding_window: self.sliding_window()?,
            layer_types: self.layer_types(num_hidden_layers)?,
            tie_word_embeddings: self
                .value
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            bos_token_id: self.token_id("bos_token_id", 2)?,
            eos_token_ids: self.eos_token_ids()?,
            pad_token_id: self.token_id("pad_token_id", 0)?,
            torch_dtype: ["torch_dtype", "dtype"].iter().find_map(|k| {
                self.value
                    .get(*k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
            max_position_embeddings: match self.value.get("max_position_embeddings") {
                None | Some(Value::Null) => 8192,
                Some(_) => self.size("max_position_embeddings")?,
            },
        };
        Ok(config)
    }

    fn check_architecture(&self) -> Result<()> {
        let model_type = self.value.get("model_type").and_then(Value::as_str);
        match model_type {
            Some("gemma2") => {}
            Some(other) => {
                return Err(GemmaError::UnsupportedArchitecture {
                    path: self.path.clone(),
                    found: other.into(),
                })
            }
            None => return Err(self.missing("model_type")),
        }
        if let Some(archs) = self.value.get("architectures").and_then(Value::as_array) {
            for arch in archs {
                let name = arch.as_str().unwrap_or_default();
                if !name.starts_with("Gemma2") {
                    return Err(GemmaError::UnsupportedArchitecture {
                        path: self.path.clone(),
                        found: name.into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_activation(&self) -> Result<()> {
        // transformers 4.4x writes both keys; `hidden_activation` wins, as in HF.
        let key = if self
            .value
            .get("hidden_activation")
            .is_some_and(|v| !v.is_null())
        {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        match self.value.get(key).and_then(Value::as_str) {
            Some("gelu_pytorch_tanh") | Some("gelu_tanh") | None => Ok(()),
            Some(other) => {
                Err(self.invalid(key, other, "only gelu_pytorch_tanh is implemented".into()))
            }
        }
    }

    fn rope_theta(&self) -> Result<f64> {
        if let Some(params) = self.value.get("rope_parameters").filter(|v| !v.is_null()) {
            if let Some(kind) = params.get("rope_type").and_then(Value::as_str) {
                if kind != "default" {
                    return Err(self.invalid(
                        "rope_parameters.rope_type",
                        kind,
                        "only default RoPE is implemented".into(),
                    ));
                }
            }
            return match params.get("rope_theta").and_then(Value::as_f64) {
                Some(theta) if theta > 0.0 => Ok(theta),
                Some(theta) => Err(self.invalid(
                    "rope_parameters.rope_theta",
                    theta,
                    "must be positive".into(),
                )),
                None => Err(self.missing("rope_parameters.rope_theta")),
            };
        }
        if let Some(scaling) = self.value.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(self.invalid(
                "rope_scaling",
                scaling,
                "RoPE scaling is not implemented".into(),
            ));
        }
        match self.optional_f64("rope_theta")? {
            Some(theta) if theta > 0.0 => Ok(theta),
            Some(theta) => Err(self.invalid("rope_theta", theta, "must be positive".into())),
            None => Err(self.missing("rope_theta")),
        }
    }

    fn softcap(&self, field: &str) -> Result<Option<f64>> {
        match self.value.get(field) {
            // Missing: HF's defaults (50 for attention, 30 for the logits).
            None => Ok(Some(if field == "attn_logit_softcapping" {
                50.0
            } else {
                30.0
            })),
            Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(cap) if cap > 0.0 => Ok(Some(cap)),
                _ => Err(self.invalid(field, v, "must be a positive number or null".into())),
            },
        }
    }

    fn sliding_window(&self) -> Result<Option<usize>> {
        match self.value.get("sliding_window") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(w) if w > 0 => Ok(Some(w as usize)),
                _ => Err(self.invalid(
                    "sliding_window",
                    v,
                    "must be a positive integer or null".into(),
                )),
            },
        }
    }

    fn layer_types(&self, n_layers: usize) -> Result<Vec<AttentionKind>> {
        let Some(types) = self.value.get("layer_types").filter(|v| !v.is_null()) else {
            return Ok(default_layer_types(n_layers));
        };
        let list = types
            .as_array()
            .ok_or_else(|| self.invalid("layer_types", types, "must be a list".into()))?;
        if list.len() != n_layers {
            return Err(self.invalid(
                "layer_types",
                format!("[{} entries]", list.len()),
                format!("must have num_hidden_layers = {n_layers} entries"),
            ));
        }
        list.iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("sliding_attention") => Ok(AttentionKind::Sliding),
                Some("full_attention") => Ok(AttentionKind::Full),
                _ => Err(self.invalid(
                    &format!("layer_types[{i}]"),
                    t,
                    "expected sliding_attention or full_attention".into(),
                )),
            })
            .collect()
    }

    fn token_id(&self, field: &str, default: u32) -> Result<u32> {
        match self.value.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| self.invalid(field, v, "must be a token id".into())),
        }
    }

    fn eos_token_ids(&self) -> Result<Vec<u32>> {
        match self.value.get("eos_token_id") {
            None | Some(Value::Null) => Ok(vec![1]),
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| self.invalid("eos_token_id", v, "must be a token id".into()))
                })
                .collect(),
            Some(_) => Ok(vec![self.token_id("eos_token_id", 1)?]),
        }
    }

    /// A size: an integer from 1 to the field's bound in [`SIZE_LIMITS`].
    fn size(&self, field: &str) -> Result<usize> {
        let limit = SIZE_LIMITS
            .iter()
            .find(|(name, _)| *name == field)
            .map_or(usize::MAX, |(_, limit)| *limit);
        match self.usize(field)? {
            n if (1..=limit).contains(&n) => Ok(n),
            n => Err(self.invalid(field, n, format!("must be between 1 and {limit}"))),
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        match self.value.get(field) {
            None | Some(Value::Null) => Err(self.missing(field)),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.invalid(field, v, "must be a non-negative integer".into())),
        }
    }

    fn optional_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.value.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.invalid(field, v, "must be a number".into())),
        }
    }

    fn positive_f64(&self, field: &str) -> Result<f64> {
        match self.optional_f64(field)? {
            None => Err(self.missing(field)),
            Some(x) if x > 0.0 => Ok(x),
            Some(x) => Err(self.invalid(field, x, "must be positive".into())),
        }
    }

    fn missing(&self, field: &str) -> GemmaError {
        GemmaError::MissingConfigField {
            path: self.path.clone(),
            field: field.into(),
        }
    }

    fn invalid(&self, field: &str, value: impl ToString, reason: String) -> GemmaError {
        GemmaError::InvalidConfigField {
            path: self.path.clone(),
            field: field.into(),
            value: value.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_DIALECT: &str = r#"{
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0,
        "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2304, "intermediate_size": 9216, "num_attention_heads": 8,
        "num_hidden_layers": 26, "num_key_value_heads": 4, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
        "torch_dtype": "bfloat16", "vocab_size": 256000
    }"#;

    #[test]
    fn old_dialect_equals_the_2b_preset() {
        let c = Gemma2Config::from_json_str(OLD_DIALECT, "config.json").unwrap();
        let mut expected = Gemma2Config::gemma_2_2b();
        expected.eos_token_ids = vec![1, 107];
        expected.torch_dtype = Some("bfloat16".into());
        assert_eq!(c, expected);
        assert_eq!(c.embedding_scale(), 48.0);
        assert_eq!(c.attention_scale(), 0.0625);
    }

    #[test]
    fn sizes_beyond_their_bound_or_zero_are_refused_before_anything_is_allocated() {
        for (field, bad) in [
            ("num_hidden_layers", "1000000000000"),
            ("vocab_size", "0"),
            ("hidden_size", "100000000"),
            ("head_dim", "8192"),
            ("max_position_embeddings", "0"),
        ] {
            let text = if OLD_DIALECT.contains(&format!("\"{field}\"")) {
                OLD_DIALECT.replace(
                    &format!("\"{field}\": {}", original(field)),
                    &format!("\"{field}\": {bad}"),
                )
            } else {
                OLD_DIALECT.replacen('{', &format!("{{\"{field}\": {bad},"), 1)
            };
            assert_ne!(text, OLD_DIALECT);
            let err = Gemma2Config::from_json_str(&text, "lying/config.json").unwrap_err();
            let message = err.to_string();
            assert!(message.contains(field), "{field}: {message}");
            assert!(message.contains("lying/config.json"), "{message}");
            assert!(message.contains("must be between 1 and"), "{message}");
        }
    }

    fn original(field: &str) -> &'static str {
        match field {
            "num_hidden_layers" => "26",
            "vocab_size" => "256000",
            "hidden_size" => "2304",
            "head_dim" => "256",
            _ => "",
        }
    }

    #[test]
    fn max_position_embeddings_is_read_or_defaults_to_hf() {
        let c = Gemma2Config::from_json_str(OLD_DIALECT, "config.json").unwrap();
        assert_eq!(c.max_position_embeddings, 8192);
        let text = OLD_DIALECT.replacen('{', "{\"max_position_embeddings\": 512,", 1);
        let c = Gemma2Config::from_json_str(&text, "config.json").unwrap();
        assert_eq!(c.max_position_embeddings, 512);
    }

    #[test]
    fn exact_parameter_counts_of_gemma_2_2b() {
        let c = Gemma2Config::gemma_2_2b();
        assert_eq!(c.parameters_per_layer(), 77_865_984);
        assert_eq!(c.parameters_up_to(14), 1_679_947_776);
        assert_eq!(c.parameters_up_to(26) + c.hidden_size, 2_614_341_888);
    }

    #[test]
    fn new_dialect_reads_rope_parameters_and_layer_types() {
        let text = OLD_DIALECT
            .replace(r#""rope_theta": 10000.0,"#, r#""rope_parameters": {"rope_theta": 20000.0, "rope_type": "default"}, "layer_types": ["full_attention", "sliding_attention"],"#)
            .replace(r#""num_hidden_layers": 26"#, r#""num_hidden_layers": 2"#);
        let c = Gemma2Config::from_json_str(&text, "config.json").unwrap();
        assert_eq!(c.rope_theta, 20000.0);
        assert_eq!(
            c.layer_types,
            vec![AttentionKind::Full, AttentionKind::Sliding]
        );
    }

    #[test]
    fn missing_field_is_named() {
        let text = OLD_DIALECT.replace(r#""head_dim": 256,"#, "");
        let err = Gemma2Config::from_json_str(&text, "/m/config.json").unwrap_err();
        assert!(
            matches!(&err, GemmaError::MissingConfigField { field, .. } if field == "head_dim"),
            "{err}"
        );
        assert!(err.to_string().contains("/m/config.json"));
    }

    #[test]
    fn missing_rope_theta_in_both_dialects_is_named() {
        let text = OLD_DIALECT.replace(r#""rope_theta": 10000.0,"#, "");
        let err = Gemma2Config::from_json_str(&text, "config.json").unwrap_err();
        assert!(err.to_string().contains("rope_theta"), "{err}");
    }

    #[test]
    fn other_architectures_are_refused() {
        let text = OLD_DIALECT.replace(r#""model_type": "gemma2""#, r#""model_type": "llama""#);
        let err = Gemma2Config::from_json_str(&text, "config.json").unwrap_err();
        assert!(
            matches!(err, GemmaError::UnsupportedArchitecture { ref found, .. } if found == "llama")
        );
        let text = OLD_DIALECT.replace("Gemma2ForCausalLM", "GemmaForCausalLM");
        assert!(Gemma2Config::from_json_str(&text, "config.json").is_err());
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad = [
            (
                r#""num_key_value_heads": 4"#,
                r#""num_key_value_heads": 3"#,
                "num_key_value_heads",
            ),
            (
                r#""hidden_activation": "gelu_pytorch_tanh""#,
                r#""hidden_activation": "relu""#,
                "hidden_activation",
            ),
            (
                r#""hidden_size": 2304"#,
                r#""hidden_size": "big""#,
                "hidden_size",
            ),
            (
                r#""sliding_window": 4096"#,
                r#""sliding_window": -1"#,
                "sliding_window",
            ),
        ];
        for (from, to, field) in bad {
            let err = Gemma2Config::from_json_str(&OLD_DIALECT.replace(from, to), "config.json")
                .unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Gemma2Config::from_json_str("{\n  \"a\": ,\n}", "config.json").unwrap_err();
        assert!(matches!(err, GemmaError::Json { line: 2, .. }), "{err}");
    }

    #[test]
    fn null_softcaps_disable_them() {
        let text = OLD_DIALECT.replace(
            r#""attn_logit_softcapping": 50.0"#,
            r#""attn_logit_softcapping": null"#,
        );
        let c = Gemma2Config::from_json_str(&text, "config.json").unwrap();
        assert_eq!(c.attn_logit_softcapping, None);
        assert_eq!(c.final_logit_softcapping, Some(30.0));
    }
}
