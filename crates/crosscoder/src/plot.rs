//! The classic model-diffing figure for a crosscoder: a histogram of relative decoder norms
//! `n_chat / (n_base + n_chat)` with the class thresholds dashed, drawn by the workspace's `figures` crate
//! (embedded font, so it renders on machines without system fonts).

use std::path::Path;

pub use figures::histogram::histogram_counts;
use figures::histogram::HistogramSpec;

use crate::analysis::RelativeNormThresholds;
use crate::error::Result;

/// How the histogram is drawn. Defaults: 100 bins, 1000 x 600 pixels, linear y axis, class thresholds
/// drawn as dashed lines.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramOptions {
    /// Number of equal-width bins over `[0, 1]`.
    pub bins: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Figure title.
    pub title: String,
    /// Logarithmic count axis (chat-only and base-only tails are small next to the shared bulk).
    pub log_y: bool,
    /// Class thresholds to mark with vertical lines, if any.
    pub thresholds: Option<RelativeNormThresholds>,
}

impl Default for HistogramOptions {
    fn default() -> Self {
        let spec = HistogramSpec::default();
        HistogramOptions {
            bins: spec.bins,
            width: spec.width,
            height: spec.height,
            title: spec.title,
            log_y: spec.log_y,
            thresholds: Some(RelativeNormThresholds::default()),
        }
    }
}

/// Draws the histogram of `relative_norms` to a PNG at `path` and returns the bin counts.
///
/// # Errors
/// [`CrosscoderError::Figure`](crate::CrosscoderError::Figure) for zero bins, a zero-sized image, or when
/// drawing or writing fails (naming the file).
pub fn relative_norm_histogram(
    relative_norms: &[f32],
    path: &Path,
    options: &HistogramOptions,
) -> Result<Vec<usize>> {
    let spec = HistogramSpec {
        bins: options.bins,
        width: options.width,
        height: options.height,
        title: options.title.clone(),
        log_y: options.log_y,
        lines: options
            .thresholds
            .as_ref()
            .map_or_else(Vec::new, RelativeNormThresholds::lines),
        marks: Vec::new(),
    };
    let counts = figures::histogram::relative_norm_histogram(relative_norms, path, &spec)?;
    tracing::info!(path = %path.display(), latents = relative_norms.len(), "wrote relative-norm histogram");
    Ok(counts)
}
