//! The figures, as PNGs drawn with plotters' bitmap backend and an embedded font (DejaVu Sans, the
//! same file as the crosscoder crate's histogram, `assets/fonts/`), so they render on a fresh machine
//! without system fonts.
//!
//! | file | what |
//! |---|---|
//! | `top_candidates.png` | per contrast, the candidates' mean difference with ± sd error bars |
//! | `consistency.png` | per contrast, mean vs sd of the strongest tested features, coloured by sign fraction, significant ones ringed |
//! | `verification_<probe>.png` | the probe's headline feature on every verification prompt, bars coloured by expectation, threshold dashed |
//! | `relative_norm_histogram.png` | relative decoder norms of all latents (log counts), candidates marked (crosscoder only) |

use std::path::{Path, PathBuf};

// The embedded font is owned and registered by the crosscoder crate.
use crosscoder::plot::{register_font, FAMILY};
use persona_dataset::Expectation;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{AnalysisError, Result};
use crate::pipeline::Day1Results;
use crate::pooling::shorten;
use crate::verify::CandidateVerification;

/// Contrast colours (matplotlib's tab10).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const ACTIVATE: RGBColor = RGBColor(46, 160, 67);
const SILENT: RGBColor = RGBColor(214, 39, 40);
const NEUTRAL: RGBColor = RGBColor(150, 150, 150);

/// The colour of an expectation in every figure and in the report.
pub fn expectation_color(e: Expectation) -> (u8, u8, u8) {
    let c = match e {
        Expectation::Activate => ACTIVATE,
        Expectation::Silent => SILENT,
        Expectation::Neutral => NEUTRAL,
    };
    (c.0, c.1, c.2)
}

type Drawn = std::result::Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

fn right_center(size: u32) -> TextStyle<'static> {
    style(size).pos(Pos::new(HPos::Right, VPos::Center))
}

/// Blue (0) through grey (0.5) to red (1).
fn diverging(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let lerp = |a: f64, b: f64, u: f64| (a + (b - a) * u).round() as u8;
    let (lo, mid, hi) = (
        (49.0, 99.0, 206.0),
        (190.0, 190.0, 190.0),
        (206.0, 49.0, 49.0),
    );
    if t < 0.5 {
        let u = t / 0.5;
        RGBColor(
            lerp(lo.0, mid.0, u),
            lerp(lo.1, mid.1, u),
            lerp(lo.2, mid.2, u),
        )
    } else {
        let u = (t - 0.5) / 0.5;
        RGBColor(
            lerp(mid.0, hi.0, u),
            lerp(mid.1, hi.1, u),
            lerp(mid.2, hi.2, u),
        )
    }
}

/// Tick label without a negative zero.
fn tick(x: &f64) -> String {
    let v = if x.abs() < 1e-12 { 0.0 } else { *x };
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn run(path: &Path, f: impl FnOnce() -> Drawn) -> Result<()> {
    let plot_err = |reason: String| AnalysisError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    register_font().map_err(plot_err)?;
    f().map_err(plot_err)
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = (hi - lo).abs().max(1e-6);
    (lo - 0.05 * span, hi + 0.05 * span)
}

fn candidate_label(r: &Day1Results, s: &crate::hunt::LatentStats) -> String {
    let class = s.decoder.map_or(String::new(), |d| {
        format!(
            " {}",
            serde_json::to_value(d.class)
                .ok()
                .and_then(|v| v.as_str().map(|x| x.replace('_', "-")))
                .unwrap_or_default()
        )
    });
    let noun = if r.info.crosscoder.is_some() {
        "latent"
    } else {
        "dim"
    };
    format!(
        "{noun} #{}{class}  d_z {:.2}",
        s.feature, s.summary.effect_size
    )
}

fn draw_top_candidates(r: &Day1Results, path: &Path) -> Drawn {
    let rows: Vec<usize> = r.hunts.iter().map(|h| h.candidates.len().max(1)).collect();
    let heights: Vec<u32> = rows.iter().map(|n| 90 + 30 * *n as u32).collect();
    let total: u32 = heights.iter().sum::<u32>() + 50;
    let root = BitMapBackend::new(path, (1100, total)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let titled = root
        .titled(
            "Top candidates: mean difference (positive - negative variant) ± sd over discovery items",
            (FAMILY, 20),
        )
        .map_err(err)?;
    let mut rest = titled;
    for (c, h) in r.hunts.iter().enumerate() {
        let (panel, below) = rest.split_vertically(heights[c]);
        rest = below;
        let caption = format!(
            "{}: {} vs {} ({} items, {} significant at FDR {:.0}%)",
            h.contrast.category,
            h.contrast.positive,
            h.contrast.negative,
            h.item_ids.len(),
            h.ranked.len(),
            h.options.fdr * 100.0
        );
        let stats: Vec<_> = h.candidate_stats().collect();
        if stats.is_empty() {
            panel
                .draw_text(&caption, &style(16), (20, 10))
                .map_err(err)?;
            panel
                .draw_text(
                    "no significant feature with a positive effect: nothing to show",
                    &style(14).color(&RGBColor(120, 120, 120)),
                    (40, 50),
                )
                .map_err(err)?;
            continue;
        }
        let sd = |s: &&crate::hunt::LatentStats| {
            if s.summary.sd.is_finite() {
                s.summary.sd
            } else {
                0.0
            }
        };
        let lo = stats
            .iter()
            .map(|s| s.summary.mean - sd(s))
            .fold(0.0f64, f64::min);
        let hi = stats
            .iter()
            .map(|s| s.summary.mean + sd(s))
            .fold(0.0f64, f64::max);
        let (lo, hi) = padded(lo, hi);
        let n = stats.len();
        let mut chart = ChartBuilder::on(&panel)
            .caption(&caption, (FAMILY, 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(300)
            .build_cartesian_2d(lo..hi, -0.5f64..(n as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .y_label_formatter(&|_| String::new())
            .x_label_formatter(&tick)
            .x_desc("mean difference ± sd")
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        let color = PALETTE[c % PALETTE.len()];
        for (i, s) in stats.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let m = s.summary.mean;
            let e = sd(s);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y - 0.32), (m, y + 0.32)],
                    color.mix(0.85).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(m - e, y), (m + e, y)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
            for x in [m - e, m + e] {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, y - 0.18), (x, y + 0.18)],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(err)?;
            }
            let (px, py) = chart.backend_coord(&(lo, y));
            root.draw_text(&candidate_label(r, s), &right_center(13), (px - 8, py))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

fn draw_consistency(r: &Day1Results, path: &Path) -> Drawn {
    let n_panels = r.hunts.len().max(1);
    let root = BitMapBackend::new(path, (520 * n_panels as u32, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (body, legend) = root.split_vertically(500);
    let panels = body.split_evenly((1, n_panels));
    for (c, (h, panel)) in r.hunts.iter().zip(&panels).enumerate() {
        let _ = c;
        let mut pts: Vec<&crate::hunt::LatentStats> = h
            .stats
            .iter()
            .filter(|s| s.summary.effect_size.is_finite() && s.summary.sd.is_finite())
            .collect();
        pts.sort_by(|a, b| {
            b.summary
                .effect_size
                .abs()
                .total_cmp(&a.summary.effect_size.abs())
        });
        pts.truncate(300);
        let caption = format!(
            "{} ({} vs {})",
            h.contrast.category, h.contrast.positive, h.contrast.negative
        );
        if pts.is_empty() {
            panel
                .draw_text(&caption, &style(15), (20, 10))
                .map_err(err)?;
            continue;
        }
        let (x0, x1) = padded(
            pts.iter()
                .map(|s| s.summary.mean)
                .fold(f64::INFINITY, f64::min),
            pts.iter()
                .map(|s| s.summary.mean)
                .fold(f64::NEG_INFINITY, f64::max),
        );
        let (_, y1) = padded(0.0, pts.iter().map(|s| s.summary.sd).fold(0.0, f64::max));
        let mut chart = ChartBuilder::on(panel)
            .caption(&caption, (FAMILY, 15))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("mean difference")
            .y_desc("sd across items")
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(pts.iter().rev().map(|s| {
                Circle::new(
                    (s.summary.mean, s.summary.sd),
                    5,
                    diverging(s.summary.sign_fraction).filled(),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(
                pts.iter()
                    .filter(|s| s.significant)
                    .map(|s| Circle::new((s.summary.mean, s.summary.sd), 7, BLACK.stroke_width(1))),
            )
            .map_err(err)?;
        for s in h.candidate_stats().take(5) {
            if s.summary.sd.is_finite() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("#{}", s.feature),
                        (s.summary.mean, s.summary.sd),
                        style(12).pos(Pos::new(HPos::Left, VPos::Bottom)),
                    )))
                    .map_err(err)?;
            }
        }
    }
    // Colour bar.
    let x0 = 40;
    legend
        .draw_text(
            "colour: fraction of items with a positive difference   (ringed: significant at the FDR level; \
             top 300 tested features by |d_z|)",
            &style(13),
            (x0, 4),
        )
        .map_err(err)?;
    for k in 0..200 {
        let t = k as f64 / 199.0;
        legend
            .draw(&Rectangle::new(
                [(x0 + k, 28), (x0 + k + 1, 44)],
                diverging(t).filled(),
            ))
            .map_err(err)?;
    }
    for (t, text) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
        legend
            .draw_text(text, &style(12), (x0 + (t * 199.0) as i32 - 4, 46))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

fn draw_verification(r: &Day1Results, v: &CandidateVerification, path: &Path) -> Drawn {
    let n = v.prompts.len().max(1);
    let height = 130 + 17 * n as u32;
    let root = BitMapBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let lo = v
        .prompts
        .iter()
        .map(|p| p.activation)
        .fold(v.threshold.min(0.0), f64::min);
    let hi = v
        .prompts
        .iter()
        .map(|p| p.activation)
        .fold(v.threshold.max(0.0), f64::max);
    let (lo, hi) = padded(lo, hi);
    let hi = hi + 0.45 * (hi - lo); // room for the legend
    let caption = format!(
        "Verification of {} #{} ({}) on probe `{}`: AUROC {}, threshold {:.3}",
        r.kind.noun(),
        v.feature,
        v.contrast,
        v.probe,
        v.auroc.map_or("n/a".into(), |a| format!("{a:.2}")),
        v.threshold
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(&caption, (FAMILY, 17))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(440)
        .build_cartesian_2d(lo..hi, -0.5f64..(n as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .y_label_formatter(&|_| String::new())
        .x_label_formatter(&tick)
        .x_desc(match r.kind {
            crate::hunt::FeatureKind::CrosscoderLatent => {
                "pooled activation (both models through the crosscoder)"
            }
            crate::hunt::FeatureKind::ResidualDimension { .. } => "pooled residual value",
        })
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    for (i, p) in v.prompts.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let (cr, cg, cb) = expectation_color(p.expected);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y - 0.38), (p.activation, y + 0.38)],
                RGBColor(cr, cg, cb).mix(0.85).filled(),
            )))
            .map_err(err)?;
        let (px, py) = chart.backend_coord(&(lo, y));
        let mark = match p.passed {
            Some(true) => "✓ ",
            Some(false) => "✗ ",
            None => "",
        };
        root.draw_text(
            &format!("{mark}{}", shorten(&p.prompt, 62)),
            &right_center(11),
            (px - 6, py),
        )
        .map_err(err)?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(v.threshold, -0.5), (v.threshold, n as f64 - 0.5)],
            6,
            4,
            BLACK.into(),
        ))
        .map_err(err)?
        .label(format!(
            "threshold {:.3} (fitted on discovery)",
            v.threshold
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    for (e, name) in [
        (Expectation::Activate, "expected: ACTIVATE"),
        (Expectation::Silent, "expected: SILENT"),
        (Expectation::Neutral, "expected: NEUTRAL"),
    ] {
        let (cr, cg, cb) = expectation_color(e);
        let color = RGBColor(cr, cg, cb);
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn draw_histogram(r: &Day1Results, relative: &[f32], path: &Path) -> Drawn {
    let bins = 100usize;
    let counts = crosscoder::plot::histogram_counts(relative, bins);
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let root = BitMapBackend::new(path, (1100, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Relative decoder norm n_chat / (n_base + n_chat) of every latent, candidates marked",
            (FAMILY, 18),
        )
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.01f64..1.01f64, (0.8f64..max * 4.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&tick)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("relative decoder norm (0 = base-only, 0.5 = shared, 1 = chat-only)")
        .y_desc("latents (log)")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()
        .map_err(err)?;
    let bar = RGBColor(170, 170, 170);
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    Rectangle::new(
                        [
                            (i as f64 / bins as f64, 0.8),
                            ((i + 1) as f64 / bins as f64, *c as f64),
                        ],
                        bar.filled(),
                    )
                }),
        )
        .map_err(err)?;
    let t = r.options.thresholds;
    for x in [t.base_only_max, t.shared_min, t.shared_max, t.chat_only_min] {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(f64::from(x), 0.8), (f64::from(x), max * 4.0)],
                4,
                4,
                RGBColor(90, 90, 90).into(),
            ))
            .map_err(err)?;
    }
    for (c, h) in r.hunts.iter().enumerate() {
        let color = PALETTE[c % PALETTE.len()];
        let xs: Vec<f64> = h
            .candidate_stats()
            .filter_map(|s| s.decoder.map(|d| f64::from(d.relative_norm)))
            .filter(|x| x.is_finite())
            .collect();
        if xs.is_empty() {
            continue;
        }
        // Staggered marker heights, so contrasts sharing a latent's position stay visible.
        let top = max * 3.2 / 1.35f64.powi(c as i32);
        chart
            .draw_series(xs.iter().map(|x| {
                PathElement::new(vec![(*x, 0.8), (*x, top)], color.mix(0.6).stroke_width(1))
            }))
            .map_err(err)?;
        chart
            .draw_series(
                xs.iter()
                    .map(|x| TriangleMarker::new((*x, top), 7, color.filled())),
            )
            .map_err(err)?
            .label(format!(
                "candidates of {} ({})",
                h.contrast.category,
                xs.len()
            ))
            .legend(move |(x, y)| TriangleMarker::new((x + 7, y), 6, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// File name of a probe's verification figure.
pub fn verification_file(probe: &str) -> String {
    let safe: String = probe
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("verification_{safe}.png")
}

/// Draws every figure of `r` into `dir`; returns the files, in report order.
///
/// # Errors
/// [`AnalysisError::Plot`] naming the file.
pub fn draw_all(r: &Day1Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let path = dir.join("top_candidates.png");
    run(&path, || draw_top_candidates(r, &path))?;
    out.push(path);
    let path = dir.join("consistency.png");
    run(&path, || draw_consistency(r, &path))?;
    out.push(path);
    for pc in &r.conclusion.per_probe {
        let (Some(feature), Some(contrast)) = (pc.feature, pc.contrast.as_deref()) else {
            continue;
        };
        if let Some(v) = r.verification(contrast, feature) {
            let path = dir.join(verification_file(&pc.probe));
            run(&path, || draw_verification(r, v, &path))?;
            out.push(path);
        }
    }
    if let Some(d) = &r.decoder {
        let path = dir.join("relative_norm_histogram.png");
        let rel = d.relative_norms.to_vec();
        run(&path, || draw_histogram(r, &rel, &path))?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_scale_ends_and_middle() {
        assert_eq!(diverging(0.0), RGBColor(49, 99, 206));
        assert_eq!(diverging(0.5), RGBColor(190, 190, 190));
        assert_eq!(diverging(1.0), RGBColor(206, 49, 49));
        assert_eq!(diverging(f64::NAN), diverging(0.5));
    }

    #[test]
    fn verification_file_names_are_safe() {
        assert_eq!(
            verification_file("child_novice"),
            "verification_child_novice.png"
        );
        assert_eq!(verification_file("a/b c"), "verification_a_b_c.png");
    }
}
