//! Where a dashboard's tokens come from: any indexed sequence of tokens with their metadata and the
//! latents' values ([`LatentValues`]), read twice: once streaming (statistics, every firing), then
//! only around the chosen peaks (the context windows).

use std::sync::Arc;

use activation_cache::ActivationStore;
use crosscoder::Crosscoder;
use model_pair::{PairedActivations, TokenMeta};
use ndarray::{Array2, Array3, Axis};

use crate::error::{DashboardError, Result};

/// Rows of tokens (documents laid out contiguously, in position order) and the values of chosen
/// latents on them.
pub trait LatentValues {
    /// Number of rows.
    fn n_rows(&self) -> u64;
    /// The metadata of `row`.
    fn meta(&self, row: u64) -> Result<TokenMeta>;
    /// The values of `latents` on `rows`, `[rows.len(), latents.len()]`.
    fn values(&self, rows: &[u64], latents: &[usize]) -> Result<Array2<f32>>;
}

/// A crosscoder's latents over the rows of an activation store.
pub struct StoreLatents<'a> {
    store: &'a ActivationStore,
    crosscoder: Arc<dyn Crosscoder>,
}

impl<'a> StoreLatents<'a> {
    /// `crosscoder` over `store`; the widths must agree.
    pub fn new(store: &'a ActivationStore, crosscoder: Arc<dyn Crosscoder>) -> Result<Self> {
        check_width(store.d_model(), crosscoder.as_ref())?;
        Ok(StoreLatents { store, crosscoder })
    }
}

impl LatentValues for StoreLatents<'_> {
    fn n_rows(&self) -> u64 {
        self.store.n_tokens()
    }

    fn meta(&self, row: u64) -> Result<TokenMeta> {
        self.store
            .token_meta(row)
            .ok_or_else(|| DashboardError::InvalidInput {
                reason: format!(
                    "row {row} is past the store's {} rows",
                    self.store.n_tokens()
                ),
            })
    }

    fn values(&self, rows: &[u64], latents: &[usize]) -> Result<Array2<f32>> {
        let x = self.store.read_rows(rows)?;
        encode_columns(self.crosscoder.as_ref(), &x, latents)
    }
}

/// A crosscoder's latents over the rows of a stereo run held in memory.
pub struct PairedLatents<'a> {
    run: &'a PairedActivations,
    crosscoder: Arc<dyn Crosscoder>,
}

impl<'a> PairedLatents<'a> {
    /// `crosscoder` over `run`; the widths must agree.
    pub fn new(run: &'a PairedActivations, crosscoder: Arc<dyn Crosscoder>) -> Result<Self> {
        check_width(run.activations.dim().2, crosscoder.as_ref())?;
        Ok(PairedLatents { run, crosscoder })
    }
}

impl LatentValues for PairedLatents<'_> {
    fn n_rows(&self) -> u64 {
        self.run.n_tokens() as u64
    }

    fn meta(&self, row: u64) -> Result<TokenMeta> {
        self.run
            .tokens
            .get(row as usize)
            .copied()
            .ok_or_else(|| DashboardError::InvalidInput {
                reason: format!("row {row} is past the run's {} rows", self.run.n_tokens()),
            })
    }

    fn values(&self, rows: &[u64], latents: &[usize]) -> Result<Array2<f32>> {
        let index: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        let x = self.run.activations.select(Axis(0), &index);
        encode_columns(self.crosscoder.as_ref(), &x, latents)
    }
}

/// Precomputed values (`[rows, latents]`, columns in the order of `latents`) with their metadata.
#[derive(Debug, Clone)]
pub struct PrecomputedValues {
    tokens: Vec<TokenMeta>,
    latents: Vec<usize>,
    values: Array2<f32>,
}

impl PrecomputedValues {
    /// `values[row, l]` is latent `latents[l]` on token `tokens[row]`.
    pub fn new(tokens: Vec<TokenMeta>, latents: Vec<usize>, values: Array2<f32>) -> Result<Self> {
        if values.dim() != (tokens.len(), latents.len()) {
            return Err(DashboardError::InvalidInput {
                reason: format!(
                    "{:?} values for {} tokens and {} latents",
                    values.dim(),
                    tokens.len(),
                    latents.len()
                ),
            });
        }
        Ok(PrecomputedValues {
            tokens,
            latents,
            values,
        })
    }
}

impl LatentValues for PrecomputedValues {
    fn n_rows(&self) -> u64 {
        self.tokens.len() as u64
    }

    fn meta(&self, row: u64) -> Result<TokenMeta> {
        self.tokens
            .get(row as usize)
            .copied()
            .ok_or_else(|| DashboardError::InvalidInput {
                reason: format!("row {row} is past the {} rows", self.tokens.len()),
            })
    }

    fn values(&self, rows: &[u64], latents: &[usize]) -> Result<Array2<f32>> {
        let columns = latents
            .iter()
            .map(|j| {
                self.latents.iter().position(|l| l == j).ok_or_else(|| {
                    DashboardError::InvalidInput {
                        reason: format!("latent {j} has no precomputed values"),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = Array2::zeros((rows.len(), latents.len()));
        for (i, &row) in rows.iter().enumerate() {
            self.meta(row)?;
            for (l, &c) in columns.iter().enumerate() {
                out[[i, l]] = self.values[[row as usize, c]];
            }
        }
        Ok(out)
    }
}

fn check_width(d_model: usize, crosscoder: &dyn Crosscoder) -> Result<()> {
    if crosscoder.d_model() != d_model || crosscoder.n_models() != 2 {
        return Err(DashboardError::InvalidInput {
            reason: format!(
                "the activations are 2 x {d_model} wide, the crosscoder reads {} x {}",
                crosscoder.n_models(),
                crosscoder.d_model()
            ),
        });
    }
    Ok(())
}

fn encode_columns(
    crosscoder: &dyn Crosscoder,
    x: &Array3<f32>,
    latents: &[usize],
) -> Result<Array2<f32>> {
    let f = crosscoder.encode(x.view())?;
    Ok(f.select(Axis(1), latents))
}
