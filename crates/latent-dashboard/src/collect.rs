//! The streaming pass of a dashboard: every firing of every chosen latent (its value and row), the
//! tokens seen and the activation mass per token role.

use indicatif::{ProgressBar, ProgressStyle};
use model_pair::TokenRole;

use crate::error::Result;
use crate::source::LatentValues;

/// What one pass over the rows gathers for one latent.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatentStream {
    /// `(value, row)` of every token where the latent is above zero.
    pub firings: Vec<(f32, u64)>,
    /// Per role (in [`TokenRole::ALL`] order): tokens seen, tokens firing, summed activation.
    pub roles: [(u64, u64, f64); 5],
}

/// Streams `source` in batches of `batch_rows`, for `latents`; padding rows and, unless
/// `include_bos`, `<bos>` rows are left out.
pub(crate) fn stream(
    source: &dyn LatentValues,
    latents: &[usize],
    batch_rows: usize,
    include_bos: bool,
    progress: bool,
) -> Result<Vec<LatentStream>> {
    let n = source.n_rows();
    let bar = if progress {
        let bar = ProgressBar::new(n);
        if let Ok(style) = ProgressStyle::with_template(
            "dashboards [{bar:36}] {pos}/{len} tokens ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut streams = vec![LatentStream::default(); latents.len()];
    let mut start = 0u64;
    while start < n {
        let end = (start + batch_rows as u64).min(n);
        let kept: Vec<(u64, TokenRole)> = (start..end)
            .filter_map(|row| match source.meta(row) {
                Ok(meta) if meta.is_pad || (meta.is_bos && !include_bos) => None,
                Ok(meta) => Some(Ok((row, meta.role()))),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_>>()?;
        if !kept.is_empty() {
            let rows: Vec<u64> = kept.iter().map(|(row, _)| *row).collect();
            let values = source.values(&rows, latents)?;
            for (i, &(row, role)) in kept.iter().enumerate() {
                let role = role_slot(role);
                for (l, stream) in streams.iter_mut().enumerate() {
                    let v = values[[i, l]];
                    let slot = &mut stream.roles[role];
                    slot.0 += 1;
                    if v > 0.0 {
                        slot.1 += 1;
                        slot.2 += f64::from(v);
                        stream.firings.push((v, row));
                    }
                }
            }
        }
        bar.set_position(end);
        start = end;
    }
    bar.finish_and_clear();
    Ok(streams)
}

/// The index of `role` in [`TokenRole::ALL`].
pub(crate) fn role_slot(role: TokenRole) -> usize {
    TokenRole::ALL
        .iter()
        .position(|r| *r == role)
        .expect("every role is listed")
}
