//! The dose-response figure: mean KL and mean NLL (with 95% intervals) against the strength, the
//! baseline NLL and its coherence limit as lines, incoherent strengths in red.

use std::path::Path;

use figures::{draw_png, err, padded, tick, Drawn, FAMILY};
use plotters::prelude::*;

use crate::error::Result;
use crate::experiment::SteeringResults;

const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(150, 150, 150);

/// Draws the dose-response of `results` to `path`.
pub fn draw_dose_response(results: &SteeringResults, path: &Path) -> Result<()> {
    Ok(draw_png(path, || draw(results, path))?)
}

fn draw(r: &SteeringResults, path: &Path) -> Drawn {
    let root = BitMapBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let x: Vec<f64> = r.strengths.iter().map(|s| f64::from(s.strength)).collect();
    let (x_lo, x_hi) = padded(
        x.iter().copied().fold(f64::INFINITY, f64::min),
        x.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let unit = match r.spec.unit {
        crate::StrengthUnit::MaxActivation => "strength (x max activation)",
        crate::StrengthUnit::Absolute => "strength",
    };
    let nll_limit = r.baseline_nll.mean + r.spec.coherence.max_nll_increase;
    let series = [
        (
            "KL(p_chat || p_intervened) per token",
            r.strengths.iter().map(|s| s.kl).collect::<Vec<_>>(),
            None,
        ),
        (
            "NLL of the answer under the chat model",
            r.strengths.iter().map(|s| s.nll).collect::<Vec<_>>(),
            Some((r.baseline_nll.mean, nll_limit)),
        ),
    ];
    for (panel, (title, values, lines)) in panels.iter().zip(series) {
        let mut lo = values.iter().map(|v| v.low()).fold(f64::INFINITY, f64::min);
        let mut hi = values
            .iter()
            .map(|v| v.high())
            .fold(f64::NEG_INFINITY, f64::max);
        if let Some((base, limit)) = lines {
            lo = lo.min(base);
            hi = hi.max(limit);
        }
        let (y_lo, y_hi) = padded(lo.min(0.0), hi);
        let mut chart = ChartBuilder::on(panel)
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(unit)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style((FAMILY, 13))
            .draw()
            .map_err(err)?;
        if let Some((base, limit)) = lines {
            for (y, label) in [(base, "baseline"), (limit, "coherence limit")] {
                chart
                    .draw_series(LineSeries::new(
                        [(x_lo, y), (x_hi, y)],
                        GREY.stroke_width(1),
                    ))
                    .map_err(err)?
                    .label(label);
            }
        }
        let points: Vec<(f64, f64)> = x.iter().zip(&values).map(|(x, v)| (*x, v.mean)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
            .map_err(err)?;
        for ((x, v), s) in x.iter().zip(&values).zip(&r.strengths) {
            let colour = if s.coherent { BLUE } else { RED };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*x, v.low()), (*x, v.high())],
                    colour.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (*x, v.mean),
                    4,
                    colour.filled(),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}
