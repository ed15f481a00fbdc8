//! The classic model-diffing figure: a histogram of relative decoder norms `n_chat / (n_base + n_chat)`,
//! drawn to a PNG with an embedded font (DejaVu Sans, `assets/fonts/`), so it renders on machines
//! without system fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::analysis::RelativeNormThresholds;
use crate::error::{CrosscoderError, Result};

/// DejaVu Sans (from matplotlib's `mpl-data/fonts/ttf/`; license in `assets/fonts/LICENSE_DEJAVU`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
/// The font family name under which the embedded font is registered with plotters.
pub const FAMILY: &str = "sans-serif";

/// Registers the embedded DejaVu Sans with plotters under [`FAMILY`] (once per process), so that
/// figures render on machines without system fonts. Shared by every crate that draws PNGs.
pub fn register_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font could not be parsed".to_string())
        })
        .clone()
}

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
        HistogramOptions {
            bins: 100,
            width: 1000,
            height: 600,
            title: "Relative decoder norm per latent".to_string(),
            log_y: false,
            thresholds: Some(RelativeNormThresholds::default()),
        }
    }
}

/// Bins relative norms in `[0, 1]` into `bins` equal bins (1.0 falls in the last bin); NaN and values
/// outside `[0, 1]` are skipped. Returns the counts.
pub fn histogram_counts(values: &[f32], bins: usize) -> Vec<usize> {
    let mut counts = vec![0usize; bins];
    if bins == 0 {
        return counts;
    }
    for v in values.iter().filter(|v| (0.0..=1.0).contains(*v)) {
        let b = ((*v * bins as f32) as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts
}

/// Draws the histogram of `relative_norms` to a PNG at `path` and returns the bin counts.
///
/// # Errors
/// [`CrosscoderError::InvalidOption`] for zero bins or a zero-sized image, [`CrosscoderError::Plot`] when
/// drawing or writing fails.
pub fn relative_norm_histogram(
    relative_norms: &[f32],
    path: &Path,
    options: &HistogramOptions,
) -> Result<Vec<usize>> {
    if options.bins == 0 || options.width == 0 || options.height == 0 {
        return Err(CrosscoderError::InvalidOption(format!(
            "histogram needs bins > 0 and a non-empty image, got {options:?}"
        )));
    }
    let counts = histogram_counts(relative_norms, options.bins);
    let plot_err = |e: String| CrosscoderError::Plot {
        path: path.to_path_buf(),
        reason: e,
    };
    register_font().map_err(plot_err)?;
    draw(&counts, path, options).map_err(plot_err)?;
    tracing::info!(path = %path.display(), latents = relative_norms.len(), "wrote relative-norm histogram");
    Ok(counts)
}

fn draw(counts: &[usize], path: &Path, o: &HistogramOptions) -> std::result::Result<(), String> {
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let root = BitMapBackend::new(path, (o.width, o.height)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bins = counts.len() as f64;
    let bar = RGBColor(66, 114, 196);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&o.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64);
    let x_desc = "relative decoder norm  n_chat / (n_base + n_chat)";
    let lines =
        |t: &RelativeNormThresholds| [t.base_only_max, t.shared_min, t.shared_max, t.chat_only_min];
    if o.log_y {
        let mut chart = builder
            .build_cartesian_2d(0f64..1f64, (0.8f64..max * 1.5).log_scale())
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("latents (log)")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, c)| {
                        Rectangle::new(
                            [(i as f64 / bins, 0.8), ((i + 1) as f64 / bins, *c as f64)],
                            bar.filled(),
                        )
                    }),
            )
            .map_err(|x| e(&x))?;
        if let Some(t) = &o.thresholds {
            for x in lines(t) {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(f64::from(x), 0.8), (f64::from(x), max * 1.5)],
                        6,
                        4,
                        BLACK.into(),
                    ))
                    .map_err(|err| e(&err))?;
            }
        }
    } else {
        let mut chart = builder
            .build_cartesian_2d(0f64..1f64, 0f64..max * 1.05)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("latents")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                Rectangle::new(
                    [(i as f64 / bins, 0.0), ((i + 1) as f64 / bins, *c as f64)],
                    bar.filled(),
                )
            }))
            .map_err(|x| e(&x))?;
        if let Some(t) = &o.thresholds {
            for x in lines(t) {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(f64::from(x), 0.0), (f64::from(x), max * 1.05)],
                        6,
                        4,
                        BLACK.into(),
                    ))
                    .map_err(|err| e(&err))?;
            }
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_put_one_in_the_last_bin_and_skip_nan() {
        let c = histogram_counts(&[0.0, 0.05, 0.5, 1.0, f32::NAN, 1.5], 10);
        assert_eq!(c[0], 2);
        assert_eq!(c[5], 1);
        assert_eq!(c[9], 1);
        assert_eq!(c.iter().sum::<usize>(), 4);
    }
}
