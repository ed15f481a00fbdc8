//! # figures
//!
//! Every PNG of the workspace is drawn here or with these helpers: plotters' bitmap backend with an
//! embedded font (DejaVu Sans, `assets/fonts/`), so figures render on a fresh machine without system fonts,
//! and typed errors that name the file.
//!
//! - [`register_font`] registers the embedded font under [`FAMILY`] (once per process).
//! - [`draw_png`] runs a drawing closure for one file: font first, then the closure, every failure a
//!   [`FigureError`] naming the file. Closures return [`Drawn`]; [`err`] turns any plotters error into a
//!   [`DrawError`].
//! - [`histogram`]: the classic model-diffing figure, the histogram of relative decoder norms, with
//!   optional marked latents.
//! - [`tick`], [`padded`], [`diverging`]: axis labels without a negative zero, padded ranges, a blue-grey-red
//!   scale.
//!
//! ```
//! use figures::histogram::{relative_norm_histogram, HistogramSpec};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("relative_norms.png");
//! let counts = relative_norm_histogram(&[0.02, 0.5, 0.51, 0.97], &path, &HistogramSpec::default())?;
//! assert_eq!(counts.iter().sum::<usize>(), 4);
//! assert!(path.exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod histogram;
pub mod html;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::{FontStyle, RGBColor};

/// DejaVu Sans (from matplotlib's `mpl-data/fonts/ttf/`; license in `assets/fonts/LICENSE_DEJAVU`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The font family name under which the embedded font is registered with plotters.
pub const FAMILY: &str = "sans-serif";

/// A figure could not be drawn.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FigureError {
    /// The embedded font could not be registered (a broken build).
    #[error("the embedded font (DejaVu Sans) could not be parsed")]
    Font,
    /// Drawing or writing the file failed.
    #[error("cannot draw {path}: {reason}")]
    Draw {
        /// The PNG being drawn.
        path: PathBuf,
        /// What the plotting library reported.
        reason: String,
    },
    /// The figure's options make no image (zero bins, an empty image).
    #[error("invalid figure options: {reason}")]
    InvalidOption {
        /// What is wrong.
        reason: String,
    },
}

/// An error of the plotting library inside a drawing closure.
#[derive(Debug)]
pub struct DrawError(String);

impl std::fmt::Display for DrawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DrawError {}

/// What a drawing closure returns.
pub type Drawn = Result<(), DrawError>;

/// Wraps an error of the plotting library (`.map_err(err)?` in drawing code).
pub fn err(e: impl std::fmt::Display) -> DrawError {
    DrawError(e.to_string())
}

/// Registers the embedded DejaVu Sans with plotters under [`FAMILY`] (once per process).
///
/// # Errors
/// [`FigureError::Font`] if the embedded font cannot be parsed.
pub fn register_font() -> Result<(), FigureError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(FigureError::Font)
    }
}

/// Draws one PNG: registers the font, runs `draw`, and names `path` in any error.
///
/// # Errors
/// [`FigureError::Font`], or [`FigureError::Draw`] with the plotting library's message.
pub fn draw_png(path: &Path, draw: impl FnOnce() -> Drawn) -> Result<(), FigureError> {
    register_font()?;
    draw().map_err(|e| FigureError::Draw {
        path: path.to_path_buf(),
        reason: e.0,
    })
}

/// Tick label with up to three decimals, trailing zeros trimmed, and no negative zero.
pub fn tick(x: &f64) -> String {
    let v = if x.abs() < 1e-12 { 0.0 } else { *x };
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// `[lo, hi]` widened by 5% of its span on each side (`[0, 1]` when not finite).
pub fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = (hi - lo).abs().max(1e-6);
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Line and category colours (matplotlib's tab10, first six), shared by every figure.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// Blue (0) through grey (0.5) to red (1); not-a-number is grey.
pub fn diverging(t: f64) -> RGBColor {
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
    let (from, to, u) = if t < 0.5 {
        (lo, mid, t / 0.5)
    } else {
        (mid, hi, (t - 0.5) / 0.5)
    };
    RGBColor(
        lerp(from.0, to.0, u),
        lerp(from.1, to.1, u),
        lerp(from.2, to.2, u),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_trim_and_never_show_negative_zero() {
        assert_eq!(tick(&0.5), "0.5");
        assert_eq!(tick(&-0.0000001), "0");
        assert_eq!(tick(&2.0), "2");
        assert_eq!(tick(&-1.25), "-1.25");
    }

    #[test]
    fn diverging_scale_ends_and_middle() {
        assert_eq!(diverging(0.0), RGBColor(49, 99, 206));
        assert_eq!(diverging(0.5), RGBColor(190, 190, 190));
        assert_eq!(diverging(1.0), RGBColor(206, 49, 49));
        assert_eq!(diverging(f64::NAN), RGBColor(190, 190, 190));
    }

    #[test]
    fn padding_widens_and_survives_nan() {
        assert_eq!(padded(0.0, 10.0), (-0.5, 10.5));
        assert_eq!(padded(f64::NAN, 1.0), (-0.05, 1.05));
    }

    #[test]
    fn a_drawing_error_names_the_file() {
        let e = draw_png(Path::new("/x/fig.png"), || Err(err("disk full"))).unwrap_err();
        assert_eq!(e.to_string(), "cannot draw /x/fig.png: disk full");
    }
}
