//! `generation_config.json`: the stop tokens and sampling defaults a checkpoint ships with.

use std::path::Path;

use serde_json::Value;

use super::{GenerationConfig, Sampling, SamplingParams};
use crate::config::Gemma2Config;
use crate::error::{GemmaError, Result};

/// The fields of `generation_config.json` that decoding uses. Gemma-2-it ships
/// `{"bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0}`: it stops at `<eos>` and at
/// `<end_of_turn>`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationDefaults {
    /// Tokens that end a generation (`eos_token_id`, a number or a list).
    pub eos_token_ids: Vec<u32>,
    /// The padding token, if given.
    pub pad_token_id: Option<u32>,
    /// `do_sample` (HF's default: false, greedy).
    pub do_sample: bool,
    /// `temperature` (HF's default 1.0).
    pub temperature: f32,
    /// `top_k` (HF's default 50; 0 turns it off).
    pub top_k: Option<usize>,
    /// `top_p` (HF's default 1.0, off).
    pub top_p: Option<f32>,
}

impl GenerationDefaults {
    /// HF's defaults with the stop and pad tokens of `config.json`, for a checkpoint without
    /// `generation_config.json`.
    pub fn from_model_config(config: &Gemma2Config) -> Self {
        GenerationDefaults {
            eos_token_ids: config.eos_token_ids.clone(),
            pad_token_id: Some(config.pad_token_id),
            do_sample: false,
            temperature: 1.0,
            top_k: Some(50),
            top_p: None,
        }
    }

    /// Reads `generation_config.json`; fields it lacks come from `config` (stop and pad tokens) and
    /// HF's defaults.
    pub fn from_file(path: impl AsRef<Path>, config: &Gemma2Config) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| GemmaError::json(path, &e))?;
        let invalid = |field: &str, v: &Value, reason: &str| GemmaError::InvalidConfigField {
            path: path.to_path_buf(),
            field: field.into(),
            value: v.to_string(),
            reason: reason.into(),
        };
        let token = |field: &str, v: &Value| -> Result<u32> {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| invalid(field, v, "must be a token id"))
        };
        let mut defaults = Self::from_model_config(config);
        if let Some(v) = value.get("eos_token_id").filter(|v| !v.is_null()) {
            defaults.eos_token_ids = match v {
                Value::Array(items) => items
                    .iter()
                    .map(|x| token("eos_token_id", x))
                    .collect::<Result<_>>()?,
                single => vec![token("eos_token_id", single)?],
            };
        }
        if let Some(v) = value.get("pad_token_id").filter(|v| !v.is_null()) {
            defaults.pad_token_id = Some(token("pad_token_id", v)?);
        }
        if let Some(v) = value.get("do_sample").filter(|v| !v.is_null()) {
            defaults.do_sample = v
                .as_bool()
                .ok_or_else(|| invalid("do_sample", v, "must be true or false"))?;
        }
        if let Some(v) = value.get("temperature").filter(|v| !v.is_null()) {
            defaults.temperature = v
                .as_f64()
                .filter(|t| *t > 0.0)
                .ok_or_else(|| invalid("temperature", v, "must be a positive number"))?
                as f32;
        }
        if let Some(v) = value.get("top_k").filter(|v| !v.is_null()) {
            let k = v
                .as_u64()
                .ok_or_else(|| invalid("top_k", v, "must be a non-negative integer"))?;
            defaults.top_k = (k > 0).then_some(k as usize);
        }
        if let Some(v) = value.get("top_p").filter(|v| !v.is_null()) {
            let p = v
                .as_f64()
                .filter(|p| *p > 0.0 && *p <= 1.0)
                .ok_or_else(|| invalid("top_p", v, "must be in (0, 1]"))?;
            defaults.top_p = (p < 1.0).then_some(p as f32);
        }
        Ok(defaults)
    }

    /// `generation_config.json` of a model directory if it has one, else
    /// [`from_model_config`](Self::from_model_config).
    pub fn for_dir(dir: impl AsRef<Path>, config: &Gemma2Config) -> Result<Self> {
        let path = dir.as_ref().join("generation_config.json");
        if path.exists() {
            Self::from_file(path, config)
        } else {
            Ok(Self::from_model_config(config))
        }
    }

    /// A generation of up to `max_new_tokens` with these stop tokens, greedy unless `do_sample`
    /// (then sampled with these warpers and `seed`).
    pub fn config(
        &self,
        max_new_tokens: usize,
        seed: u64,
        config: &Gemma2Config,
    ) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens,
            sampling: if self.do_sample {
                Sampling::Sample(SamplingParams {
                    temperature: self.temperature,
                    top_k: self.top_k,
                    top_p: self.top_p,
                    seed,
                })
            } else {
                Sampling::Greedy
            },
            stop_token_ids: self.eos_token_ids.clone(),
            stop_strings: Vec::new(),
            pad_token_id: self.pad_token_id.unwrap_or(config.pad_token_id),
            keep_logits: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generation_config.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn gemma_2_it_stops_at_eos_and_end_of_turn() {
        let (_dir, path) = write(
            r#"{"bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0, "cache_implementation": "hybrid"}"#,
        );
        let d = GenerationDefaults::from_file(&path, &Gemma2Config::gemma_2_2b()).unwrap();
        assert_eq!(d.eos_token_ids, vec![1, 107]);
        assert!(!d.do_sample);
        let c = d.config(5, 0, &Gemma2Config::gemma_2_2b());
        assert_eq!(c.sampling, Sampling::Greedy);
        assert_eq!(c.stop_token_ids, vec![1, 107]);
    }

    #[test]
    fn sampling_fields_are_read_and_bad_ones_named() {
        let (_dir, path) = write(
            r#"{"eos_token_id": 1, "do_sample": true, "temperature": 0.7, "top_k": 0, "top_p": 0.9}"#,
        );
        let d = GenerationDefaults::from_file(&path, &Gemma2Config::gemma_2_2b()).unwrap();
        assert_eq!((d.do_sample, d.top_k, d.top_p), (true, None, Some(0.9)));
        let (_dir, path) = write(r#"{"eos_token_id": [1, "x"]}"#);
        let err = GenerationDefaults::from_file(&path, &Gemma2Config::gemma_2_2b())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("eos_token_id") && err.contains("generation_config.json"),
            "{err}"
        );
        let (_dir, path) = write(r#"{"top_p": 1.5}"#);
        assert!(GenerationDefaults::from_file(&path, &Gemma2Config::gemma_2_2b()).is_err());
    }
}
