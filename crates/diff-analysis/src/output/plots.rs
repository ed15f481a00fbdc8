//! The figures, as PNGs drawn with plotters' bitmap backend through the workspace's `figures` crate (its
//! embedded font, typed errors and the relative-norm histogram), so they render on a fresh machine without
//! system fonts.
//!
//! | file | what |
//! |---|---|
//! | `top_candidates.png` | per contrast, the candidates' mean difference with ± sd error bars |
//! | `consistency.png` | per contrast, mean vs sd of the strongest tested features, coloured by sign fraction, significant ones ringed |
//! | `verification_<probe>.png` | the probe's headline feature on every verification prompt, bars coloured by expectation, threshold dashed |
//! | `relative_norm_histogram.png` | relative decoder norms of all latents (log counts), candidates marked (crosscoder only) |
//! | `latent_scaling.png` | Latent Scaling: `nu_error` against `nu_reconstruction` of every latent that fired, by decoder class, the robust box dashed, the concluded latents ringed (crosscoder with Latent Scaling only) |

use std::path::{Path, PathBuf};

use figures::histogram::{HistogramSpec, MarkedLatents};
use figures::{diverging, draw_png, err, padded, tick, Drawn, FAMILY};
use persona_dataset::Expectation;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::Result;
use crate::pooling::shorten;
use crate::results::Day1Results;
use crate::verify::CandidateVerification;

/// Contrast colours (matplotlib's tab10).
use figures::PALETTE;
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

fn style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

fn right_center(size: u32) -> TextStyle<'static> {
    style(size).pos(Pos::new(HPos::Right, VPos::Center))
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

/// The relative-norm histogram of every latent (log counts), each contrast's candidates marked.
fn draw_histogram(r: &Day1Results, relative: &[f32], path: &Path) -> Result<()> {
    let marks = r
        .hunts
        .iter()
        .enumerate()
        .map(|(c, h)| {
            let color = PALETTE[c % PALETTE.len()];
            MarkedLatents {
                label: format!("candidates of {}", h.contrast.category),
                color: (color.0, color.1, color.2),
                positions: h
                    .candidate_stats()
                    .filter_map(|s| s.decoder.map(|d| d.relative_norm))
                    .collect(),
            }
        })
        .collect();
    let spec = HistogramSpec {
        width: 1100,
        height: 620,
        title: "Relative decoder norm of every latent, candidates marked".into(),
        log_y: true,
        lines: r.options.thresholds.lines(),
        marks,
        ..HistogramSpec::default()
    };
    figures::histogram::relative_norm_histogram(relative, path, &spec)?;
    Ok(())
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
/// [`AnalysisError::Figure`](crate::AnalysisError::Figure) naming the file.
pub fn draw_all(r: &Day1Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let path = dir.join("top_candidates.png");
    draw_png(&path, || draw_top_candidates(r, &path))?;
    out.push(path);
    let path = dir.join("consistency.png");
    draw_png(&path, || draw_consistency(r, &path))?;
    out.push(path);
    for pc in &r.conclusion.per_probe {
        let (Some(feature), Some(contrast)) = (pc.feature, pc.contrast.as_deref()) else {
            continue;
        };
        if let Some(v) = r.verification(contrast, feature) {
            let path = dir.join(verification_file(&pc.probe));
            draw_png(&path, || draw_verification(r, v, &path))?;
            out.push(path);
        }
    }
    if let Some(d) = &r.decoder {
        let path = dir.join("relative_norm_histogram.png");
        let rel = d.relative_norms.to_vec();
        draw_histogram(r, &rel, &path)?;
        out.push(path);
    }
    if !scaling_points(r).is_empty() {
        let path = dir.join("latent_scaling.png");
        draw_png(&path, || draw_latent_scaling(r, &path))?;
        out.push(path);
    }
    if let Some(kl) = &r.kl_evaluation {
        let path = dir.join(steering::kl_evaluation::PLOT_FILE);
        steering::kl_evaluation::draw_kl_evaluation(kl, &path)?;
        out.push(path);
    }
    Ok(out)
}

/// `(latent, class, nu_reconstruction, nu_error)` of every latent Latent Scaling tagged with finite
/// ratios (once each).
fn scaling_points(r: &Day1Results) -> Vec<(usize, crosscoder::LatentClass, f64, f64)> {
    let Some(h) = r.hunts.first() else {
        return Vec::new();
    };
    h.stats
        .iter()
        .filter_map(|s| {
            let d = s.decoder?;
            let l = d.latent_scaling?;
            let (x, y) = (f64::from(l.nu_reconstruction), f64::from(l.nu_error));
            (x.is_finite() && y.is_finite()).then_some((s.feature, d.class, x, y))
        })
        .collect()
}

/// Latent Scaling's plane: `nu_error` (y) against `nu_reconstruction` (x), clipped to [-1, 2], the robust
/// box (`nu_error` < its threshold, `nu_reconstruction` < its threshold) dashed, the concluded latents
/// ringed and named.
fn draw_latent_scaling(r: &Day1Results, path: &Path) -> Drawn {
    use crosscoder::LatentClass;
    let points = scaling_points(r);
    let clip = |v: f64| v.clamp(-1.0, 2.0);
    let root = BitMapBackend::new(path, (720, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latent Scaling: is a chat-only latent really absent from the base model?",
            (FAMILY, 16),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(-1.05..2.05, -1.05..2.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .x_desc("nu_reconstruction = beta_r(base) / beta_r(chat)   (clipped to [-1, 2])")
        .y_desc("nu_error = beta_eps(base) / beta_eps(chat)")
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    let thresholds = r.options.robust;
    let (bx, by) = (
        f64::from(thresholds.max_nu_reconstruction),
        f64::from(thresholds.max_nu_error),
    );
    chart
        .draw_series(DashedLineSeries::new(
            vec![(-1.05, by), (bx, by), (bx, -1.05)],
            6,
            4,
            BLACK.into(),
        ))
        .map_err(err)?
        .label(format!(
            "robust chat-only: nu_error < {by:.2}, nu_reconstruction < {bx:.2} (and relative norm >= {:.2})",
            thresholds.min_relative_norm
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    for (class, colour, name) in [
        (LatentClass::Shared, NEUTRAL, "shared"),
        (LatentClass::BaseOnly, PALETTE[0], "base-only"),
        (LatentClass::ChatOnly, PALETTE[1], "chat-only"),
    ] {
        let of_class: Vec<_> = points.iter().filter(|p| p.1 == class).collect();
        chart
            .draw_series(
                of_class
                    .iter()
                    .map(|p| Circle::new((clip(p.2), clip(p.3)), 4, colour.mix(0.8).filled())),
            )
            .map_err(err)?
            .label(format!("{name} by decoder norm ({})", of_class.len()))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
    }
    for pc in &r.conclusion.per_probe {
        let Some(p) = pc.feature.and_then(|f| points.iter().find(|p| p.0 == f)) else {
            continue;
        };
        let at = (clip(p.2), clip(p.3));
        chart
            .draw_series([Circle::new(at, 8, BLACK.stroke_width(2))])
            .map_err(err)?;
        chart
            .draw_series([Text::new(format!("#{} ({})", p.0, pc.probe), at, style(12))])
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font((FAMILY, 11))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_file_names_are_safe() {
        assert_eq!(
            verification_file("child_novice"),
            "verification_child_novice.png"
        );
        assert_eq!(verification_file("a/b c"), "verification_a_b_c.png");
    }
}
