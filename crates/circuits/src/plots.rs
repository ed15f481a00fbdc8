//! The circuit's heatmaps: `writers.png` (layer x head, plus each layer's MLP and the embedding, for the
//! base contribution, the chat contribution and their difference, one shared blue-grey-red scale
//! centred on 0) and `readers.png` (the later layers x heads plus MLP, shaded by the ablation effect).

use std::path::Path;

use figures::{diverging, draw_png, err, Drawn, FAMILY};
use plotters::prelude::*;

use crate::decompose::Component;
use crate::error::{CircuitError, Result};
use crate::readers::ReaderReport;
use crate::writers::WriterReport;

/// The writers' heatmap.
pub const WRITERS_PLOT: &str = "writers.png";
/// The readers' heatmap.
pub const READERS_PLOT: &str = "readers.png";

/// One heatmap: row labels, column labels, values (`None`: no cell), a title.
struct Grid {
    title: String,
    rows: Vec<String>,
    columns: Vec<String>,
    values: Vec<Vec<Option<f64>>>,
}

/// Rows `embed`, `L0`, ..., columns `H0..H{n-1}` and `MLP`, from a value per component.
fn grid(
    title: String,
    layers: std::ops::RangeInclusive<usize>,
    heads: usize,
    embed: bool,
    value: impl Fn(Component) -> Option<f64>,
) -> Grid {
    let mut rows = Vec::new();
    let mut values = Vec::new();
    if embed {
        rows.push("embed".to_string());
        let mut row = vec![None; heads + 1];
        row[0] = value(Component::Embed);
        values.push(row);
    }
    for layer in layers {
        rows.push(format!("L{layer}"));
        let mut row: Vec<Option<f64>> = (0..heads)
            .map(|head| value(Component::Head { layer, head }))
            .collect();
        row.push(value(Component::Mlp { layer }));
        values.push(row);
    }
    let mut columns: Vec<String> = (0..heads).map(|h| format!("H{h}")).collect();
    columns.push("MLP".into());
    Grid {
        title,
        rows,
        columns,
        values,
    }
}

/// Draws `writers.png`: base, chat and difference side by side.
pub fn draw_writers(report: &WriterReport, heads: usize, path: &Path) -> Result<()> {
    let find = |c: Component| report.components.iter().find(|w| w.component == c);
    let layers = 0..=report.spec.layer;
    let grids = [
        grid(
            "base: W_base . c_base".into(),
            layers.clone(),
            heads,
            true,
            |c| find(c).map(|w| w.base.mean),
        ),
        grid(
            "chat: W_chat . c_chat".into(),
            layers.clone(),
            heads,
            true,
            |c| find(c).map(|w| w.chat.mean),
        ),
        grid(
            "chat minus base: W_chat . (c_chat - c_base)".into(),
            layers,
            heads,
            true,
            |c| find(c).map(|w| w.difference.mean),
        ),
    ];
    let title = format!(
        "Writers of latent #{} (mean pre-activation contribution over {} prompts)",
        report.spec.latent, report.prompts
    );
    draw(path, &title, &grids, true)
}

/// Draws `readers.png`: the ablation effect of every later head and MLP.
pub fn draw_readers(
    report: &ReaderReport,
    heads: usize,
    last_layer: usize,
    path: &Path,
) -> Result<()> {
    let find = |c: Component| report.components.iter().find(|r| r.component == c);
    let grids = [grid(
        "relative output change when the latent is ablated".into(),
        report.spec.layer + 1..=last_layer,
        heads,
        false,
        |c| find(c).map(|r| r.ablation.mean),
    )];
    let title = format!(
        "Readers of latent #{} in the chat model ({} prompts)",
        report.spec.latent, report.prompts
    );
    draw(path, &title, &grids, false)
}

fn draw(path: &Path, title: &str, grids: &[Grid], centred: bool) -> Result<()> {
    draw_png(path, || draw_grids(path, title, grids, centred)).map_err(|e| CircuitError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn draw_grids(path: &Path, title: &str, grids: &[Grid], centred: bool) -> Drawn {
    let rows = grids.first().map_or(1, |g| g.rows.len()).max(1);
    let columns = grids.first().map_or(1, |g| g.columns.len()).max(1);
    let cell = 44u32;
    let panel_w = 60 + cell * columns as u32;
    let width = 20 + panel_w * grids.len() as u32 + 20 * grids.len() as u32;
    let height = 90 + cell * rows as u32 + 30;
    let root = BitMapBackend::new(path, (width.max(400), height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    root.draw(&Text::new(title.to_string(), (16, 10), (FAMILY, 16)))
        .map_err(err)?;
    let scale = grids
        .iter()
        .flat_map(|g| g.values.iter().flatten().flatten())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    for (p, g) in grids.iter().enumerate() {
        let x0 = 20 + p as i32 * (panel_w as i32 + 20);
        let y0 = 60;
        root.draw(&Text::new(g.title.clone(), (x0, y0 - 22), (FAMILY, 12)))
            .map_err(err)?;
        for (c, label) in g.columns.iter().enumerate() {
            let x = x0 + 60 + c as i32 * cell as i32;
            root.draw(&Text::new(label.clone(), (x + 10, y0 + 2), (FAMILY, 11)))
                .map_err(err)?;
        }
        for (r, label) in g.rows.iter().enumerate() {
            let y = y0 + 20 + r as i32 * cell as i32;
            root.draw(&Text::new(label.clone(), (x0, y + 14), (FAMILY, 12)))
                .map_err(err)?;
            for (c, value) in g.values[r].iter().enumerate() {
                let Some(v) = value else { continue };
                let x = x0 + 60 + c as i32 * cell as i32;
                let t = if centred {
                    0.5 + 0.5 * v / scale
                } else {
                    0.5 + 0.5 * v.max(0.0) / scale
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32 - 2, y + cell as i32 - 2)],
                    diverging(t).filled(),
                ))
                .map_err(err)?;
                let text = format!("{v:.2}");
                let text = if text == "-0.00" {
                    "0.00".to_string()
                } else {
                    text
                };
                root.draw(&Text::new(text, (x + 4, y + 16), (FAMILY, 10)))
                    .map_err(err)?;
            }
        }
    }
    root.present().map_err(err)
}
