//! The figures of an ADL run: `adl_norms.png` (how large the difference is at each position, relative
//! to the chat model's activation norm, one line per flavour and layer) and `adl_patchscope.png` (how
//! consistent the Patchscope readout is at each scale, labelled with the top token).

use std::path::Path;

use figures::{draw_png, err, padded, tick, Drawn, FAMILY, PALETTE};
use plotters::prelude::*;

use crate::analysis::DifferenceReading;
use crate::error::{AdlError, Result};
use crate::output::AdlSummary;

/// The norms figure.
pub const NORMS_PLOT: &str = "adl_norms.png";
/// The Patchscope figure.
pub const PATCHSCOPE_PLOT: &str = "adl_patchscope.png";

/// The caption of one of the figures above, by file name.
pub fn caption(file_name: &str) -> Option<&'static str> {
    match file_name {
        NORMS_PLOT => Some(
            "How large the difference is at each position, relative to the chat model's activation norm",
        ),
        PATCHSCOPE_PLOT => Some(
            "Patchscope: how consistently the identity prompts read each mean difference, per scale",
        ),
        _ => None,
    }
}

/// Each flavour's reading under its label (`corpus`, `child_vs_adult`).
fn flavours(summary: &AdlSummary) -> Vec<(String, &DifferenceReading)> {
    let mut out = Vec::new();
    if let Some(c) = &summary.corpus {
        out.push(("corpus".to_string(), &c.reading));
    }
    for c in &summary.contrasts {
        out.push((c.category.clone(), &c.reading));
    }
    out
}

/// One line: a label and its points.
type Line = (String, Vec<(f64, f64)>);

/// Draws `adl_norms.png`: `||delta_j|| / ||h_j||` against the position, per flavour and layer.
pub fn draw_norms(summary: &AdlSummary, path: &Path) -> Result<()> {
    let lines: Vec<Line> = flavours(summary)
        .into_iter()
        .flat_map(|(label, reading)| {
            summary.layers.iter().map(move |&layer| {
                let points = reading
                    .readings
                    .iter()
                    .filter(|r| r.layer == layer)
                    .filter_map(|r| r.position.map(|j| (j as f64, r.relative_norm)))
                    .collect();
                (format!("{label}, layer {layer}"), points)
            })
        })
        .collect();
    let title = "|delta_j| / |h_j| (chat) per position".to_string();
    let axes = ("position".to_string(), "relative norm".to_string());
    draw_lines(path, &title, &axes, &lines, &[], true)
}

/// Draws `adl_patchscope.png`: the consistency of each Patchscope against its scale, each point
/// labelled with the scale's top token. Returns `false` (and draws nothing) when no Patchscope ran.
pub fn draw_patchscope(summary: &AdlSummary, path: &Path) -> Result<bool> {
    let mut lines = Vec::new();
    let mut labels = Vec::new();
    for (label, reading) in flavours(summary) {
        for p in &reading.patchscope {
            let points: Vec<(f64, f64)> = p
                .readout
                .scales
                .iter()
                .map(|s| (f64::from(s.scale).log2(), s.consistency))
                .collect();
            for (s, point) in p.readout.scales.iter().zip(&points) {
                if let Some(t) = s.tokens.first() {
                    labels.push((*point, figures::html::display_token(&t.token)));
                }
            }
            lines.push((format!("{label}, layer {}", p.layer), points));
        }
    }
    if lines.is_empty() {
        return Ok(false);
    }
    let title = "Patchscope consistency per scale (top token at each point)".to_string();
    let axes = (
        "log2(scale x chat activation norm)".to_string(),
        "consistency".to_string(),
    );
    draw_lines(path, &title, &axes, &lines, &labels, false)?;
    Ok(true)
}

fn draw_lines(
    path: &Path,
    title: &str,
    axes: &(String, String),
    lines: &[Line],
    labels: &[((f64, f64), String)],
    integer_x: bool,
) -> Result<()> {
    draw_png(path, || draw(path, title, axes, lines, labels, integer_x)).map_err(|e| {
        AdlError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

fn draw(
    path: &Path,
    title: &str,
    axes: &(String, String),
    lines: &[Line],
    labels: &[((f64, f64), String)],
    integer_x: bool,
) -> Drawn {
    let points = || {
        lines
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|p| p.1.is_finite())
    };
    let x = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let y_hi = points().fold(0.0f64, |hi, p| hi.max(p.1));
    let (x_lo, x_hi) = padded(x.0, x.1);
    let (_, y_hi) = padded(0.0, y_hi);
    let root = BitMapBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(axes.0.as_str())
        .y_desc(axes.1.as_str())
        .x_label_formatter(&|x: &f64| {
            if integer_x && (x - x.round()).abs() > 1e-9 {
                String::new()
            } else {
                tick(x)
            }
        })
        .y_label_formatter(&tick)
        .label_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(err)?;
    }
    for (point, text) in labels {
        chart
            .draw_series(std::iter::once(Text::new(
                text.clone(),
                *point,
                (FAMILY, 11),
            )))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 12))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
