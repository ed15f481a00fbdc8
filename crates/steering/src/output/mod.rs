//! Writing a causal test's results: `steering.json`, `steering_dose_response.png` and a self-contained
//! `steering.html`.

pub(crate) mod html;
mod plot;

use std::path::{Path, PathBuf};

use crate::error::{Result, SteeringError};
use crate::experiment::SteeringResults;

pub use html::report_html;
pub use plot::draw_dose_response;

/// The JSON summary (schema in the crate's `SCHEMA.md`).
pub const JSON_FILE: &str = "steering.json";
/// The dose-response figure.
pub const PLOT_FILE: &str = "steering_dose_response.png";
/// The report.
pub const HTML_FILE: &str = "steering.html";

/// The version of the `steering.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

/// `steering.json`: the results with a schema version.
#[derive(serde::Serialize)]
struct JsonFile<'a> {
    schema_version: u32,
    #[serde(flatten)]
    results: &'a SteeringResults,
}

/// Writes the three files into `dir` (created if needed) and returns their paths.
pub fn write_all(results: &SteeringResults, dir: &Path) -> Result<Vec<PathBuf>> {
    let json = write_json(
        dir,
        JSON_FILE,
        &JsonFile {
            schema_version: SCHEMA_VERSION,
            results,
        },
    )?;
    let plot = dir.join(PLOT_FILE);
    draw_dose_response(results, &plot)?;
    let html = dir.join(HTML_FILE);
    write(&html, report_html(results, &plot)?.as_bytes())?;
    Ok(vec![json, plot, html])
}

/// Creates `dir` if needed and writes `value` there as pretty JSON (atomically); returns the path.
pub(crate) fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| SteeringError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|e| SteeringError::InvalidInput {
        reason: format!("cannot serialise {name}: {e}"),
    })?;
    write(&path, text.as_bytes())?;
    Ok(path)
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    stereo_core::atomic_file::write_atomic(path, bytes).map_err(|e| SteeringError::Io {
        path: e.path,
        source: e.source,
    })
}
