//! `adl.safetensors` (the vectors) and `adl.json` (what they say).

use std::path::{Path, PathBuf};

use serde::Serialize;
use stereo_core::safetensors_file::{metadata, write, OwnedTensor};

use crate::analysis::DifferenceReading;
pub use crate::analysis::{LayerPatchscope, PositionReading};
use crate::contrast::ContrastDifference;
use crate::difference::ActivationDifference;
use crate::error::{AdlError, Result};

/// The tensors file.
pub const TENSORS_FILE: &str = "adl.safetensors";
/// The summary.
pub const JSON_FILE: &str = "adl.json";
/// The version of both layouts.
pub const SCHEMA_VERSION: u32 = 2;

/// Writes the vectors of `corpus` (when given) and of every contrast to `path`: for the corpus,
/// `delta [L, k, d]`, `delta_mean [L, d]`, `base_mean`, `chat_mean [L, k, d]` (f32), `base_norms`,
/// `chat_norms [L, k]` (f64); for contrast `c`, `contrast.c.delta`, `.delta_mean`, `.positive`,
/// `.negative`, `.base_norms`, `.chat_norms` and `.counts [k]` (i64); `layers [L]` (i64).
pub fn write_tensors(
    corpus: Option<&ActivationDifference>,
    contrasts: &[(&str, &ContrastDifference)],
    path: &Path,
) -> Result<()> {
    let mut tensors = Vec::new();
    let mut layers: &[usize] = &[];
    let mut k = 0;
    if let Some(d) = corpus {
        layers = &d.layers;
        k = d.k;
        tensors.extend([
            f32s("delta".into(), &d.delta),
            f32s("delta_mean".into(), &d.delta_mean),
            f32s("base_mean".into(), &d.base_mean),
            f32s("chat_mean".into(), &d.chat_mean),
            f64s("base_norms".into(), &d.norms[0]),
            f64s("chat_norms".into(), &d.norms[1]),
        ]);
    }
    for (name, c) in contrasts {
        layers = &c.layers;
        k = c.k;
        let key = |field: &str| format!("contrast.{name}.{field}");
        tensors.extend([
            f32s(key("delta"), &c.delta),
            f32s(key("delta_mean"), &c.delta_mean),
            f32s(key("positive"), &c.positive),
            f32s(key("negative"), &c.negative),
            f64s(key("base_norms"), &c.norms[0]),
            f64s(key("chat_norms"), &c.norms[1]),
            OwnedTensor::i64(key("counts"), vec![c.k], c.counts.iter().map(|n| *n as i64)),
        ]);
    }
    if tensors.is_empty() {
        return Err(AdlError::InvalidInput {
            reason: "nothing to write: neither a corpus difference nor a contrast".into(),
        });
    }
    tensors.push(OwnedTensor::i64(
        "layers",
        vec![layers.len()],
        layers.iter().map(|l| *l as i64),
    ));
    let meta = metadata([
        ("format", "stereo-adl/2".to_string()),
        ("k", k.to_string()),
        ("texts", corpus.map_or(0, |d| d.texts).to_string()),
    ]);
    write(path, &tensors, meta).map_err(|e| AdlError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn f32s<D: ndarray::Dimension>(name: String, a: &ndarray::Array<f32, D>) -> OwnedTensor {
    OwnedTensor::f32(name, a.shape().to_vec(), a.iter().copied())
}

fn f64s(name: String, a: &ndarray::Array2<f64>) -> OwnedTensor {
    OwnedTensor::f64(name, a.shape().to_vec(), a.iter().copied())
}

/// The difference over a corpus, read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusSummary {
    /// The corpus.
    pub source: String,
    /// Texts averaged.
    pub texts: usize,
    /// Texts skipped (fewer than `k` tokens after `<bos>`).
    pub skipped: usize,
    /// The readings and the Patchscope.
    #[serde(flatten)]
    pub reading: DifferenceReading,
}

/// One persona contrast's difference, read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContrastSummary {
    /// The category (`child_vs_adult`).
    pub category: String,
    /// The positive and the negative variant (`child`, `adult`).
    pub sides: [String; 2],
    /// Pairs used.
    pub pairs: usize,
    /// Pairs left out (both sides tokenize identically).
    pub skipped: usize,
    /// Per position from the cue's start, the pairs averaged there.
    pub counts: Vec<usize>,
    /// The first pairs' aligned tokens, positive side then negative.
    pub examples: Vec<[Vec<String>; 2]>,
    /// The readings and the Patchscope.
    #[serde(flatten)]
    pub reading: DifferenceReading,
}

impl ContrastSummary {
    /// The summary of `difference` for `category` (`sides`: positive, negative), with its reading.
    pub fn new(
        category: &str,
        sides: [&str; 2],
        difference: &ContrastDifference,
        reading: DifferenceReading,
    ) -> Self {
        ContrastSummary {
            category: category.to_string(),
            sides: sides.map(str::to_string),
            pairs: difference.pairs,
            skipped: difference.skipped,
            counts: difference.counts.clone(),
            examples: difference.examples.clone(),
            reading,
        }
    }
}

/// A steering search and the vector it steered with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SteeringSummary {
    /// Which mean difference: `corpus` or `contrast <category>`.
    pub vector: String,
    /// The search.
    #[serde(flatten)]
    pub search: crate::AdlSteering,
}

/// `adl.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdlSummary {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Base and chat model names.
    pub models: [String; 2],
    /// Positions (after `<bos>` for the corpus, from the cue's start for a contrast).
    pub k: usize,
    /// The layers.
    pub layers: Vec<usize>,
    /// Whether any difference is more than float noise
    /// ([`NEGLIGIBLE_RELATIVE_NORM`](crate::NEGLIGIBLE_RELATIVE_NORM) of the activation norm).
    pub found: bool,
    /// The difference over the corpus (absent when no corpus was given).
    pub corpus: Option<CorpusSummary>,
    /// The persona contrasts' differences.
    pub contrasts: Vec<ContrastSummary>,
    /// Steering the chat model with a mean difference (absent when not run or nothing was found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteeringSummary>,
}

impl AdlSummary {
    /// The summary of the flavours given; `found` from their readings.
    pub fn new(
        models: [String; 2],
        k: usize,
        layers: Vec<usize>,
        corpus: Option<CorpusSummary>,
        contrasts: Vec<ContrastSummary>,
    ) -> Self {
        let found =
            corpus.iter().any(|c| c.reading.found()) || contrasts.iter().any(|c| c.reading.found());
        AdlSummary {
            schema_version: SCHEMA_VERSION,
            models,
            k,
            layers,
            found,
            corpus,
            contrasts,
            steering: None,
        }
    }
}

/// Writes `summary` to `path`.
pub fn write_summary(summary: &AdlSummary, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| AdlError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    stereo_core::atomic_file::write_atomic(path, text.as_bytes()).map_err(|e| AdlError::File {
        path: e.path,
        reason: e.source.to_string(),
    })
}

/// Writes `adl.json`, the figures (`adl_norms.png`, `adl_patchscope.png` when a Patchscope ran) and
/// `adl.html` (the figures embedded) into `dir`; returns the files written.
pub fn write_all(summary: &AdlSummary, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| AdlError::File {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut written = vec![dir.join(JSON_FILE)];
    write_summary(summary, &written[0])?;
    let mut figures = Vec::new();
    let norms = dir.join(crate::plots::NORMS_PLOT);
    crate::plots::draw_norms(summary, &norms)?;
    figures.push(norms);
    let patchscope = dir.join(crate::plots::PATCHSCOPE_PLOT);
    if crate::plots::draw_patchscope(summary, &patchscope)? {
        figures.push(patchscope);
    }
    let mut embedded = Vec::new();
    for path in figures {
        let caption = path
            .file_name()
            .and_then(|n| crate::plots::caption(&n.to_string_lossy()))
            .unwrap_or_default()
            .to_string();
        let bytes = std::fs::read(&path).map_err(|e| AdlError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        embedded.push((caption, bytes));
        written.push(path);
    }
    let html = dir.join(crate::html::HTML_FILE);
    stereo_core::atomic_file::write_atomic(
        &html,
        crate::html::adl_page(summary, &embedded).as_bytes(),
    )
    .map_err(|e| AdlError::File {
        path: e.path,
        reason: e.source.to_string(),
    })?;
    written.push(html);
    Ok(written)
}
