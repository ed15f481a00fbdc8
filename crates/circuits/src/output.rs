//! `circuit.json` (schema in the crate's `SCHEMA.md`), the heatmaps and the self-contained
//! `circuit.html`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{CircuitError, Result};
use crate::readers::ReaderReport;
use crate::writers::WriterReport;

/// The JSON file.
pub const JSON_FILE: &str = "circuit.json";
/// The page.
pub const HTML_FILE: &str = "circuit.html";
/// The version of `circuit.json`'s layout.
pub const SCHEMA_VERSION: u32 = 1;

/// A latent's circuit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Base and chat model names.
    pub models: [String; 2],
    /// The crosscoder.
    pub crosscoder: String,
    /// The latent.
    pub latent: usize,
    /// The crosscoder's layer.
    pub layer: usize,
    /// Which prompts (`child_vs_adult: child`, or a file).
    pub prompts: String,
    /// Query heads per layer.
    pub heads: usize,
    /// The chat model's last layer measured as a reader.
    pub last_layer: usize,
    /// What writes the latent.
    pub writers: WriterReport,
    /// What reads it (absent when the chat model has no layer after the crosscoder's, or not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<ReaderReport>,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> CircuitError {
    CircuitError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes `circuit.json`, `writers.png`, `readers.png` (with readers) and `circuit.html` into `dir`;
/// returns the files.
pub fn write_all(report: &CircuitReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let json = dir.join(JSON_FILE);
    let text = serde_json::to_string_pretty(report).map_err(|e| file_error(&json, e))?;
    stereo_core::atomic_file::write_atomic(&json, text.as_bytes())
        .map_err(|e| file_error(&e.path, e.source))?;
    let mut written = vec![json];
    let mut figures = Vec::new();
    let writers = dir.join(crate::plots::WRITERS_PLOT);
    crate::plots::draw_writers(&report.writers, report.heads, &writers)?;
    figures.push(writers);
    if let Some(readers) = &report.readers {
        let path = dir.join(crate::plots::READERS_PLOT);
        crate::plots::draw_readers(readers, report.heads, report.last_layer, &path)?;
        figures.push(path);
    }
    let mut embedded = Vec::new();
    for path in figures {
        let bytes = std::fs::read(&path).map_err(|e| file_error(&path, e))?;
        embedded.push(bytes);
        written.push(path);
    }
    let html = dir.join(HTML_FILE);
    let page = crate::html::circuit_page(report, &embedded);
    stereo_core::atomic_file::write_atomic(&html, page.as_bytes())
        .map_err(|e| file_error(&e.path, e.source))?;
    written.push(html);
    Ok(written)
}
