//! The classic model-diffing figure: a histogram of relative decoder norms `n_chat / (n_base + n_chat)`
//! (0 = base-only, 0.5 = shared, 1 = chat-only), with the class thresholds dashed and, optionally, groups of
//! latents marked (a day1 run's candidates, per contrast).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::{draw_png, err, Drawn, FigureError, FAMILY};

/// A group of latents to mark above the bars (one colour and one legend entry).
#[derive(Debug, Clone, PartialEq)]
pub struct MarkedLatents {
    /// Legend text.
    pub label: String,
    /// Colour `(r, g, b)`.
    pub color: (u8, u8, u8),
    /// Their relative norms (non-finite values are skipped).
    pub positions: Vec<f32>,
}

/// How the histogram is drawn. Defaults: 100 bins, 1000 x 600 pixels, linear count axis, no lines, no marks.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSpec {
    /// Number of equal-width bins over `[0, 1]`.
    pub bins: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Figure title.
    pub title: String,
    /// Logarithmic count axis (the chat-only and base-only tails are small next to the shared bulk).
    pub log_y: bool,
    /// Positions of dashed vertical lines (the class thresholds).
    pub lines: Vec<f32>,
    /// Groups of latents marked with a line and a triangle each, staggered in height per group.
    pub marks: Vec<MarkedLatents>,
}

impl Default for HistogramSpec {
    fn default() -> Self {
        HistogramSpec {
            bins: 100,
            width: 1000,
            height: 600,
            title: "Relative decoder norm per latent".to_string(),
            log_y: false,
            lines: Vec::new(),
            marks: Vec::new(),
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
/// [`FigureError::InvalidOption`] for zero bins or a zero-sized image; [`FigureError::Draw`] when drawing or
/// writing fails.
pub fn relative_norm_histogram(
    relative_norms: &[f32],
    path: &Path,
    spec: &HistogramSpec,
) -> Result<Vec<usize>, FigureError> {
    if spec.bins == 0 || spec.width == 0 || spec.height == 0 {
        return Err(FigureError::InvalidOption {
            reason: format!(
                "a histogram needs bins > 0 and a non-empty image, got {} bins of {} x {} pixels",
                spec.bins, spec.width, spec.height
            ),
        });
    }
    let counts = histogram_counts(relative_norms, spec.bins);
    draw_png(path, || draw(&counts, path, spec))?;
    Ok(counts)
}

/// The count axis: `(bottom, top)`; bars start at `bottom` (0.8 on a log axis, where 0 cannot be drawn).
fn count_range(max: f64, log_y: bool) -> (f64, f64) {
    if log_y {
        (0.8, max * 1.5)
    } else {
        (0.0, max * 1.05)
    }
}

fn draw(counts: &[usize], path: &Path, o: &HistogramSpec) -> Drawn {
    let root = BitMapBackend::new(path, (o.width, o.height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&o.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64);
    let x_desc = "relative decoder norm  n_chat / (n_base + n_chat)";
    let (bottom, top) = count_range(max, o.log_y);
    if o.log_y {
        let mut chart = builder
            .build_cartesian_2d(0f64..1f64, (bottom..top).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("latents (log)")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        draw_contents(&mut chart, counts, o, bottom, top)?;
    } else {
        let mut chart = builder
            .build_cartesian_2d(0f64..1f64, bottom..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("latents")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        draw_contents(&mut chart, counts, o, bottom, top)?;
    }
    root.present().map_err(err)
}

/// Bars, dashed lines and marks on a chart of either count axis.
fn draw_contents<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    counts: &[usize],
    o: &HistogramSpec,
    bottom: f64,
    top: f64,
) -> Drawn
where
    Y: Ranged<ValueType = f64>,
{
    let bins = counts.len() as f64;
    let bar = RGBColor(66, 114, 196);
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| !o.log_y || **c > 0)
                .map(|(i, c)| {
                    Rectangle::new(
                        [
                            (i as f64 / bins, bottom),
                            ((i + 1) as f64 / bins, *c as f64),
                        ],
                        bar.filled(),
                    )
                }),
        )
        .map_err(err)?;
    for x in &o.lines {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(f64::from(*x), bottom), (f64::from(*x), top)],
                6,
                4,
                BLACK.into(),
            ))
            .map_err(err)?;
    }
    if o.marks.is_empty() {
        return Ok(());
    }
    for (g, group) in o.marks.iter().enumerate() {
        let color = RGBColor(group.color.0, group.color.1, group.color.2);
        let xs: Vec<f64> = group
            .positions
            .iter()
            .map(|x| f64::from(*x))
            .filter(|x| x.is_finite())
            .collect();
        if xs.is_empty() {
            continue;
        }
        // Staggered heights, so groups sharing a latent's position stay visible.
        let height = if o.log_y {
            bottom * (top / bottom).powf(0.92 - 0.08 * g as f64)
        } else {
            top * (0.92 - 0.08 * g as f64)
        };
        chart
            .draw_series(xs.iter().map(|x| {
                PathElement::new(
                    vec![(*x, bottom), (*x, height)],
                    color.mix(0.6).stroke_width(1),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(
                xs.iter()
                    .map(|x| TriangleMarker::new((*x, height), 7, color.filled())),
            )
            .map_err(err)?
            .label(format!("{} ({})", group.label, xs.len()))
            .legend(move |(x, y)| TriangleMarker::new((x + 7, y), 6, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
        .map_err(err)
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

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn marks_are_drawn_on_both_axes_and_bad_options_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        for log_y in [false, true] {
            let spec = HistogramSpec {
                width: 300,
                height: 200,
                log_y,
                lines: vec![0.1, 0.9],
                marks: vec![MarkedLatents {
                    label: "candidates".into(),
                    color: (31, 119, 180),
                    positions: vec![0.95, f32::NAN],
                }],
                ..HistogramSpec::default()
            };
            let counts = relative_norm_histogram(&[0.5, 0.95], &path, &spec).unwrap();
            assert_eq!(counts.iter().sum::<usize>(), 2);
            assert_eq!(png_size(&std::fs::read(&path).unwrap()), (300, 200));
        }
        let bad = HistogramSpec {
            bins: 0,
            ..HistogramSpec::default()
        };
        assert!(matches!(
            relative_norm_histogram(&[0.5], &path, &bad),
            Err(FigureError::InvalidOption { .. })
        ));
    }
}
