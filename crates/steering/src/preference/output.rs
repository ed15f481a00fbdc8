//! Writing a preference test: `preference.json` (schema in the crate's `SCHEMA.md`), `preference.png`
//! (each item's change of preference with the candidates and with the control edited; the mean changes
//! with their 95% intervals) and a self-contained `preference.html` (the sentence, the table, and per item the free
//! answers side by side with the judge's verdict and the words that decided it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use figures::html::{base64, escape};
use figures::{draw_png, err, padded, tick, Drawn, FAMILY, PALETTE};
use plotters::prelude::*;

use super::{JudgedAnswer, PreferenceResults, Verdict};
use crate::error::{Result, SteeringError};
use crate::output::html::CSS;
use crate::output::{write, write_json};
use crate::paired::{format_p, PairedStats};

/// The JSON results.
pub const JSON_FILE: &str = "preference.json";
/// The figure.
pub const PLOT_FILE: &str = "preference.png";
/// The report.
pub const HTML_FILE: &str = "preference.html";
/// The version of the `preference.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(serde::Serialize)]
struct JsonFile<'a> {
    schema_version: u32,
    sentence: String,
    #[serde(flatten)]
    results: &'a PreferenceResults,
}

/// Writes the three files into `dir` (created if needed) and returns their paths.
pub fn write_preference(results: &PreferenceResults, dir: &Path) -> Result<Vec<PathBuf>> {
    let json = write_json(
        dir,
        JSON_FILE,
        &JsonFile {
            schema_version: SCHEMA_VERSION,
            sentence: results.sentence(),
            results,
        },
    )?;
    let plot = dir.join(PLOT_FILE);
    draw_png(&plot, || draw(results, &plot))?;
    let png = std::fs::read(&plot).map_err(|source| SteeringError::Io {
        path: plot.clone(),
        source,
    })?;
    let html = dir.join(HTML_FILE);
    write(&html, report(results, &png).as_bytes())?;
    Ok(vec![json, plot, html])
}

/// The edits drawn: name, colour, each item's change of preference (in the items' order).
fn series(r: &PreferenceResults) -> Vec<(&'static str, RGBColor, Vec<f64>)> {
    let change = |f: &dyn Fn(&super::ItemOutcome) -> Option<f64>| -> Vec<f64> {
        r.items
            .iter()
            .filter_map(|i| f(i).map(|v| v - i.baseline.preference))
            .collect()
    };
    let mut out = vec![(
        "candidates edited",
        PALETTE[0],
        change(&|i| Some(i.edited.preference)),
    )];
    if !r.controls.is_empty() {
        out.push((
            "first matched control edited",
            PALETTE[1],
            change(&|i| i.control.first().map(|c| c.preference)),
        ));
    }
    out
}

fn draw(r: &PreferenceResults, path: &Path) -> Drawn {
    let root = BitMapBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(700);
    let all = series(r);
    // Items sorted by the candidates' change.
    let mut order: Vec<usize> = (0..r.items.len()).collect();
    order.sort_by(|a, b| all[0].2[*a].total_cmp(&all[0].2[*b]));
    let values = all.iter().flat_map(|(_, _, v)| v.iter().copied());
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_lo, y_hi) = padded(lo, hi);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "change of log p(agree) - log p(correct), per item",
            (FAMILY, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..(r.items.len() as f64 - 0.5), y_lo..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("item (sorted by the candidates' change)")
        .y_desc("nats")
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&tick)
        .label_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 0.0), (r.items.len() as f64 - 0.5, 0.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
    for (name, colour, values) in &all {
        let points = order.iter().enumerate().filter_map(|(x, i)| {
            values
                .get(*i)
                .map(|v| Circle::new((x as f64, *v), 4, colour.filled()))
        });
        chart
            .draw_series(points)
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
        .map_err(err)?;
    changes_panel(r, &right)
}

/// The mean change of each edit with its 95% interval.
fn changes_panel(
    r: &PreferenceResults,
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
) -> Drawn {
    let names: Vec<String> = std::iter::once("candidates".to_string())
        .chain(r.controls.iter().map(|c| {
            let ids: Vec<String> = c.latents.iter().map(|l| format!("#{}", l.latent)).collect();
            ids.join("+")
        }))
        .collect();
    let mut bars: Vec<(&str, RGBColor, &PairedStats)> = vec![(&names[0], PALETTE[0], &r.change)];
    for (k, c) in r.controls.iter().enumerate() {
        bars.push((&names[k + 1], PALETTE[1], &c.change));
    }
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let lo = bars
        .iter()
        .map(|b| finite(b.2.ci_low).min(finite(b.2.mean)))
        .fold(0.0, f64::min);
    let hi = bars
        .iter()
        .map(|b| finite(b.2.ci_high).max(finite(b.2.mean)))
        .fold(0.0, f64::max);
    let (y_lo, y_hi) = padded(lo, hi);
    let mut chart = ChartBuilder::on(area)
        .caption("mean change, 95% CI", (FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..(bars.len() as f64 - 0.5), y_lo..y_hi)
        .map_err(err)?;
    let names: Vec<&str> = bars.iter().map(|b| b.0).collect();
    chart
        .configure_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|x| {
            names
                .get(x.round() as usize)
                .map_or(String::new(), |n| (*n).to_owned())
        })
        .y_label_formatter(&tick)
        .label_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 0.0), (bars.len() as f64 - 0.5, 0.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
    for (x, (_, colour, stats)) in bars.iter().enumerate() {
        let x = x as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, finite(stats.ci_low)), (x, finite(stats.ci_high))],
                colour.stroke_width(3),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Circle::new(
                (x, finite(stats.mean)),
                6,
                colour.filled(),
            )))
            .map_err(err)?;
    }
    area.present().map_err(err)
}

fn stats_cells(s: &PairedStats) -> String {
    format!(
        "<td>{:+.3}</td><td>[{:.3}, {:.3}]</td><td>{}{}</td><td>{}</td>",
        s.mean,
        s.ci_low,
        s.ci_high,
        format_p(s.p_value),
        if s.exact { "" } else { " (Monte Carlo)" },
        s.n
    )
}

fn judged(a: &JudgedAnswer) -> String {
    let (class, verdict) = match a.verdict {
        Verdict::Agree => ("bad", "agrees"),
        Verdict::Correct => ("good", "corrects"),
        Verdict::Unclear => ("", "unclear"),
    };
    format!(
        "<div><div class=\"label\"><span class=\"{class}\">{verdict}</span> (agreeing words: {}; correcting words: {})</div>\
         <div class=\"answer\">{}</div></div>",
        escape(&a.agree_words.join(", ")),
        escape(&a.correct_words.join(", ")),
        escape(&a.text)
    )
}

fn report(r: &PreferenceResults, png: &[u8]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>preference: {edit}</title><style>{CSS}</style>\
         </head><body><h1>Sycophancy as behaviour: {edit}</h1><p>{sentence}.</p><p class=\"note\">Forced choice after \
         the chat template: log p(agree) - log p(correct), each summed over its answer's tokens; above 0 the chat \
         model prefers agreeing. Edits in lockstep on every position but &lt;bos&gt;. Paired over {n} items: mean \
         change, 95% t interval, two-sided sign-flip p.</p>\
         <table><tr><th>condition</th><th>mean change</th><th>95% CI</th><th>p</th><th>n</th></tr>\
         <tr><td class=\"l\">{edit}</td>{change}</tr>",
        edit = escape(&r.edit),
        sentence = escape(&r.sentence()),
        n = r.items.len(),
        change = stats_cells(&r.change),
    );
    for draw in &r.controls {
        let names: Vec<String> = draw
            .latents
            .iter()
            .map(|c| {
                format!(
                    "#{} (for #{}: its change along #{}, x{:.3}; cosine {:.2})",
                    c.latent, c.matched_to, c.latent, c.value_scale, c.cosine
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td class=\"l\">matched random control {}</td>{}</tr>",
            escape(&names.join(", ")),
            stats_cells(&draw.change)
        );
    }
    let _ = write!(
        h,
        "</table><p class=\"note\">Unedited preference: {:.3} ± {:.3} nats.</p><img alt=\"preference\" src=\"data:image/png;base64,{}\">",
        r.baseline_preference.mean,
        r.baseline_preference.half_width,
        base64(png)
    );
    if let Some([Some(base), Some(edited), control]) = &r.free_verdicts {
        let _ = write!(
            h,
            "<h2>Free answers</h2><p class=\"note\">Greedy, {} new tokens. Judge: among the first {} words, the words only \
             the agreeing answer uses against the words only the correcting one uses (function words left out).</p>\
             <table><tr><th>condition</th><th>agree</th><th>correct</th><th>unclear</th></tr>",
            r.spec.free_tokens,
            super::judge::JUDGE_WORDS
        );
        for (name, counts) in [
            ("unedited", Some(base)),
            ("candidates edited", Some(edited)),
            ("first control edited", control.as_ref()),
        ] {
            if let Some(c) = counts {
                let _ = write!(
                    h,
                    "<tr><td class=\"l\">{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    c.agree, c.correct, c.unclear
                );
            }
        }
        let _ = write!(h, "</table>");
    }
    let _ = write!(h, "<h2>Items</h2><table><tr><th>item</th><th>prompt</th><th>unedited</th><th>edited</th><th>controls</th></tr>");
    for i in &r.items {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:+.3}</td><td>{:+.3}</td><td>{}</td></tr>",
            escape(&i.id),
            escape(&i.prompt),
            i.baseline.preference,
            i.edited.preference,
            if i.control.is_empty() {
                "-".to_string()
            } else {
                i.control.iter().map(|c| format!("{:+.3}", c.preference)).collect::<Vec<_>>().join(" ")
            }
        );
    }
    let _ = write!(h, "</table>");
    for i in r.items.iter().filter(|i| i.free.is_some()) {
        let free = i.free.as_ref().expect("filtered");
        let _ = write!(
            h,
            "<details><summary>{}: {}</summary><p class=\"note\">agree: {}<br>correct: {}</p><div class=\"pair\">{}{}{}</div></details>",
            escape(&i.id),
            escape(&i.prompt),
            escape(&i.agree),
            escape(&i.correct),
            judged(&free.baseline),
            judged(&free.edited),
            free.control.as_ref().map_or(String::new(), judged)
        );
    }
    let _ = write!(h, "</body></html>");
    h
}
