//! The results on disk and on the terminal: `day1_summary.json`, `latent_stats.csv` and
//! `token_activations.json` ([`summary`]), the PNG figures ([`plots`]) and the self-contained `report.html`
//! ([`report`]).

mod companions;
pub use companions::{circuit_dir, ADL_DIR, CIRCUITS_DIR};
pub mod plots;
pub mod report;
pub mod summary;

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::results::Day1Results;

impl Day1Results {
    /// Writes `day1_summary.json`, `latent_stats.csv`, `token_activations.json`, the figures and
    /// `report.html` to `dir` (created if needed); returns the files written.
    ///
    /// # Errors
    /// [`AnalysisError::Io`](crate::AnalysisError::Io), [`AnalysisError::Figure`](crate::AnalysisError::Figure).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        summary::write_all(self, dir.as_ref())
    }

    /// A concise terminal summary.
    pub fn terminal_summary(&self) -> String {
        summary::terminal_summary(self)
    }
}
