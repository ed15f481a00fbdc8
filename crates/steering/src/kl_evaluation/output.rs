//! Writing a KL evaluation: `kl_evaluation.json` (schema in the crate's `SCHEMA.md`), the figure
//! `kl_evaluation.png`, and a plain-text table for terminals and notes.

use std::path::{Path, PathBuf};

use figures::{draw_png, err, padded, tick, Drawn, FAMILY};
use plotters::prelude::*;

use super::KlEvaluation;
use crate::error::Result;

/// The JSON results.
pub const JSON_FILE: &str = "kl_evaluation.json";
/// The figure.
pub const PLOT_FILE: &str = "kl_evaluation.png";
/// The version of the `kl_evaluation.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREY: RGBColor = RGBColor(150, 150, 150);
const GREEN: RGBColor = RGBColor(44, 160, 44);

#[derive(serde::Serialize)]
struct JsonFile<'a> {
    schema_version: u32,
    #[serde(flatten)]
    results: &'a KlEvaluation,
}

/// Writes `kl_evaluation.json` and `kl_evaluation.png` into `dir` (created if needed).
pub fn write_kl_evaluation(results: &KlEvaluation, dir: &Path) -> Result<Vec<PathBuf>> {
    let json = crate::output::write_json(
        dir,
        JSON_FILE,
        &JsonFile {
            schema_version: SCHEMA_VERSION,
            results,
        },
    )?;
    let plot = dir.join(PLOT_FILE);
    draw_kl_evaluation(results, &plot)?;
    Ok(vec![json, plot])
}

/// A table of the set-ups: KL on all / first-k / later predictions with 95% intervals, NLL, and the
/// fraction of the base->chat gap closed.
pub fn kl_table(results: &KlEvaluation) -> String {
    let mut out = format!(
        "KL(p_chat || p_patched) at {}, {} conversations, {} assistant predictions ({} first-{}, {} later); \
         chat NLL {:.3}\n",
        results.hook,
        results.conversations,
        results.predictions[0],
        results.predictions[1],
        results.spec.k_first,
        results.predictions[2],
        results.chat_nll.mean
    );
    out.push_str(&format!(
        "{:<16} {:>20} {:>20} {:>20} {:>8} {:>8}\n",
        "set-up", "KL all", "KL first k", "KL later", "NLL", "gap"
    ));
    for s in &results.setups {
        let ci = |m: &crate::MeanCi| format!("{:.4} ± {:.4}", m.mean, m.half_width);
        out.push_str(&format!(
            "{:<16} {:>20} {:>20} {:>20} {:>8.3} {:>8}\n",
            s.setup.name,
            ci(&s.kl),
            ci(&s.kl_k_first),
            ci(&s.kl_post_k_first),
            s.nll.mean,
            percent(s.gap_closed)
        ));
    }
    if let Some(random) = &results.random {
        out.push_str(&format!(
            "random sets of the same size close {} ± {:.1}% of the gap (largest {})\n",
            percent(random.gap_closed.mean),
            100.0 * random.gap_closed.half_width,
            percent(random.max_gap_closed)
        ));
    }
    out
}

/// `12.3%`, or `n/a` for NaN.
fn percent(fraction: f64) -> String {
    if fraction.is_finite() {
        // No "-0.0%" for a fraction that rounds to zero.
        let percent = 100.0 * fraction;
        format!("{:.1}%", if percent.abs() < 0.05 { 0.0 } else { percent })
    } else {
        "n/a".into()
    }
}

/// Draws the mean KL of every set-up (horizontal bars with 95% whiskers) to `path`.
pub fn draw_kl_evaluation(results: &KlEvaluation, path: &Path) -> Result<()> {
    Ok(draw_png(path, || draw(results, path))?)
}

fn draw(r: &KlEvaluation, path: &Path) -> Drawn {
    let n = r.setups.len();
    let height = 120 + 34 * n as u32;
    let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let hi = r
        .setups
        .iter()
        .map(|s| s.kl.high())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (_, x_hi) = padded(0.0, hi);
    let labels: Vec<String> = r.setups.iter().map(|s| s.setup.name.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "KL(p_chat || p_patched) over {} assistant predictions, {}",
                r.predictions[0], r.hook
            ),
            (FAMILY, 17),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(130)
        .build_cartesian_2d(0.0..x_hi * 1.25, -0.5..n as f64 - 0.5)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y: &f64| {
            // Set-up i sits at y = n - 1 - i.
            let row = y.round();
            if (y - row).abs() > 1e-6 || row < 0.0 || row >= n as f64 {
                return String::new();
            }
            labels[n - 1 - row as usize].clone()
        })
        .x_label_formatter(&tick)
        .x_desc("mean KL (nats per token), 95% interval")
        .label_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    for (i, s) in r.setups.iter().enumerate() {
        let y = (n - 1 - i) as f64 - 0.5;
        let colour = match s.setup.name.as_str() {
            "base" | "all_latents" | "chat_error" => GREY,
            "chosen" => ORANGE,
            name if name.starts_with("random_seed_") => BLUE,
            _ => GREEN,
        };
        let mean = if s.kl.mean.is_finite() {
            s.kl.mean
        } else {
            0.0
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.2), (mean, y + 0.8)],
                colour.filled(),
            )))
            .map_err(err)?;
        if s.kl.half_width.is_finite() {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(s.kl.low().max(0.0), y + 0.5), (s.kl.high(), y + 0.5)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{} of the gap", percent(s.gap_closed)),
                (s.kl.high().max(mean) + 0.02 * x_hi, y + 0.65),
                (FAMILY, 12),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)
}
