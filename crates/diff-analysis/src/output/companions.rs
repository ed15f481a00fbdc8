//! The outputs of the analyses that run beside the hunt and keep their own files in subdirectories:
//! the Activation Difference Lens (`day1 --no-crosscoder`, `adl/`) and the verified candidates' circuits
//! (`day1 --circuits`, `circuits/latent_{j}/`). Their files, their report sections and their terminal
//! lines.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::error::{AnalysisError, Result};
use crate::results::Day1Results;

/// The directory of the Activation Difference Lens's files (`adl.json`, its figures, `adl.html`).
pub const ADL_DIR: &str = "adl";
/// The directory of the circuits (one `latent_{j}_{contrast}/` each).
pub const CIRCUITS_DIR: &str = "circuits";

/// What [`write_companions`] wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct Companions {
    /// Every file.
    pub files: Vec<PathBuf>,
    /// Their names relative to the results directory.
    pub names: Vec<String>,
    /// The ADL's figures.
    pub adl_figures: Vec<PathBuf>,
    /// Per circuit (in `Day1Results::circuits` order), its figures.
    pub circuit_figures: Vec<Vec<PathBuf>>,
}

/// The report's CSS for these sections.
pub(crate) fn css() -> String {
    format!(
        "{}{}",
        activation_diff_lens::html::ADL_CSS,
        circuits::html::CIRCUIT_CSS
    )
}

/// The subdirectory of circuit `c`.
pub fn circuit_dir(c: &circuits::output::CircuitReport) -> String {
    let contrast: String = c
        .prompts
        .split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect();
    format!("latent_{}_{contrast}", c.latent)
}

/// Writes the ADL's and every circuit's files under `dir`.
pub(crate) fn write_companions(r: &Day1Results, dir: &Path) -> Result<Companions> {
    let mut out = Companions::default();
    let record = |files: Vec<PathBuf>, sub: &str, out: &mut Companions| -> Vec<PathBuf> {
        let mut figures = Vec::new();
        for path in files {
            if let Some(name) = path.file_name() {
                out.names.push(format!("{sub}/{}", name.to_string_lossy()));
            }
            if path.extension().is_some_and(|e| e == "png") {
                figures.push(path.clone());
            }
            out.files.push(path);
        }
        figures
    };
    if let Some(adl) = &r.adl {
        let files = activation_diff_lens::output::write_all(adl, &dir.join(ADL_DIR))?;
        out.adl_figures = record(files, ADL_DIR, &mut out);
    }
    for c in &r.circuits {
        let sub = format!("{CIRCUITS_DIR}/{}", circuit_dir(c));
        let files = circuits::output::write_all(c, &dir.join(&sub))?;
        let figures = record(files, &sub, &mut out);
        out.circuit_figures.push(figures);
    }
    Ok(out)
}

fn read_figures(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| AnalysisError::io(p, e)))
        .collect()
}

/// The report's sections: the ADL, then one per circuit.
pub(crate) fn report_sections(
    r: &Day1Results,
    companions: &Companions,
    out: &mut String,
) -> Result<()> {
    if let Some(adl) = &r.adl {
        out.push_str(
            "<h2>Activation Difference Lens</h2><p class=\"note\">Diffing without a crosscoder (Minder et al. 2025): the \
             mean chat-minus-base residual at the first positions after &lt;bos&gt; of unrelated texts, and per persona \
             contrast the same difference on the positive side minus the negative side, per position from the cue; \
             read through both models' heads (logit lens) and the token-identity Patchscope. Data and page in \
             adl/.</p>",
        );
        let figures: Vec<(String, Vec<u8>)> = companions
            .adl_figures
            .iter()
            .zip(read_figures(&companions.adl_figures)?)
            .map(|(path, bytes)| {
                let caption = path
                    .file_name()
                    .and_then(|n| activation_diff_lens::plots::caption(&n.to_string_lossy()))
                    .unwrap_or_default()
                    .to_string();
                (caption, bytes)
            })
            .collect();
        out.push_str(&activation_diff_lens::html::adl_sections(adl, &figures));
    }
    for (c, figures) in r.circuits.iter().zip(&companions.circuit_figures) {
        let _ = write!(
            out,
            "<h2>Circuit of latent #{} ({})</h2><p class=\"note\">Data and page in {CIRCUITS_DIR}/{}/.</p>",
            c.latent,
            figures::html::escape(&c.prompts),
            circuit_dir(c)
        );
        out.push_str(&circuits::html::circuit_sections(
            c,
            &read_figures(figures)?,
        ));
    }
    Ok(())
}

/// The terminal lines: the ADL per flavour, then each circuit's top writer and reader.
pub(crate) fn terminal_lines(r: &Day1Results, s: &mut String) {
    if let Some(adl) = &r.adl {
        adl_lines(adl, s);
    }
    for c in &r.circuits {
        let writer = c.writers.components.first();
        let reader = c.readers.as_ref().and_then(|r| r.components.first());
        let _ = writeln!(
            s,
            "  circuit of #{} ({}): top writer {}{}",
            c.latent,
            c.prompts,
            writer.map_or("none".to_string(), |w| format!(
                "{} ({:+.3} chat minus base{})",
                w.label,
                w.difference.mean,
                if c.writers.stands_out.contains(&w.component) {
                    ", stands out"
                } else {
                    ""
                }
            )),
            reader.map_or(String::new(), |r| format!(
                "; top reader {} (output change {:.2} when ablated)",
                r.label, r.ablation.mean
            ))
        );
    }
}

/// The Activation Difference Lens in a few lines: per flavour, the first layer's mean (its size and
/// what the chat head reads in it) and the most consistent Patchscope.
fn adl_lines(adl: &activation_diff_lens::output::AdlSummary, s: &mut String) {
    if !adl.found {
        let _ = writeln!(
            s,
            "  activation difference lens: no difference found (every difference below {} of |h|)",
            activation_diff_lens::NEGLIGIBLE_RELATIVE_NORM
        );
        return;
    }
    let flavours = adl
        .corpus
        .iter()
        .map(|c| (format!("corpus ({} texts)", c.texts), &c.reading))
        .chain(
            adl.contrasts
                .iter()
                .map(|c| (format!("{} minus {}", c.sides[0], c.sides[1]), &c.reading)),
        );
    for (label, reading) in flavours {
        let Some(mean) = reading.readings.iter().find(|r| r.position.is_none()) else {
            continue;
        };
        let words = |entries: &[activation_diff_lens::LensEntry]| {
            entries
                .iter()
                .take(4)
                .map(|e| e.token.replace('\u{2581}', " ").trim().to_string())
                .collect::<Vec<_>>()
                .join("|")
        };
        if mean.negligible {
            let _ = writeln!(s, "  ADL {label}: negligible");
            continue;
        }
        let patchscope = reading
            .patchscope
            .first()
            .map(|p| {
                format!(
                    "; Patchscope: {}",
                    words(&p.readout.scales[p.readout.best].tokens)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  ADL {label}, layer {} mean: {:.1}% of |h|; chat head reads {}{patchscope}",
            mean.layer,
            100.0 * mean.relative_norm,
            mean.lens
                .get(1)
                .map(|l| words(&l.promoted))
                .unwrap_or_default()
        );
    }
}
