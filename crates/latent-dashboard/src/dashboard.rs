//! A latent's dashboard: its firing statistics, the contexts it fires most on, samples from lower
//! activation ranges, and the share of its activation on each kind of token.

use std::collections::BTreeSet;

use gemma_model::GemmaTokenizer;
use model_pair::TokenRole;
use serde::{Deserialize, Serialize};

use crate::collect::{stream, LatentStream};
use crate::error::{DashboardError, Result};
use crate::lens::LensTokens;
use crate::source::LatentValues;

/// How dashboards are built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardOptions {
    /// Top-activating contexts shown (at most one per document).
    pub top_contexts: usize,
    /// `(0, max]` is cut into this many equal activation intervals, sampled separately (as SAEDashboard
    /// shows them: what the latent does at ordinary strength, not only at its peak).
    pub intervals: usize,
    /// Contexts sampled per interval (spread evenly over the interval's firings).
    pub per_interval: usize,
    /// Tokens shown before a context's peak.
    pub window_before: usize,
    /// Tokens shown after it.
    pub window_after: usize,
    /// Bins of the activation histogram (over the firing values).
    pub histogram_bins: usize,
    /// Rows per read of the source.
    pub batch_rows: usize,
    /// Count `<bos>` tokens (off by default: their norm is huge and no latent is about them).
    pub include_bos: bool,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            top_contexts: 12,
            intervals: 4,
            per_interval: 3,
            window_before: 12,
            window_after: 4,
            histogram_bins: 30,
            batch_rows: 2048,
            include_bos: false,
        }
    }
}

/// One token of a context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextToken {
    /// The token as the vocabulary spells it (`▁` marks a leading space).
    pub token: String,
    /// The latent's activation on it.
    pub value: f32,
    /// Who it belongs to.
    pub role: TokenRole,
}

/// A window of tokens around one token where the latent fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The document (prompt index) it comes from.
    pub document: usize,
    /// The source row of the peak token.
    pub row: u64,
    /// The peak token's position in its document.
    pub position: usize,
    /// The latent's activation there.
    pub value: f32,
    /// Index of the peak token in `tokens`.
    pub peak: usize,
    /// The window.
    pub tokens: Vec<ContextToken>,
}

/// Samples of one activation interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalSamples {
    /// Lower bound (exclusive).
    pub low: f32,
    /// Upper bound (inclusive).
    pub high: f32,
    /// Firings in the interval.
    pub firings: u64,
    /// The sampled contexts, strongest first.
    pub contexts: Vec<Context>,
}

/// Tokens of one role and the latent's activation on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleShare {
    /// The role.
    pub role: TokenRole,
    /// Tokens of this role seen.
    pub tokens: u64,
    /// Of those, where the latent fires.
    pub firing: u64,
    /// Summed activation on them.
    pub activation: f64,
    /// Their share of the latent's total activation (0 when it never fires).
    pub share: f64,
}

/// The histogram of the firing values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `bins + 1` edges from 0 to the largest value.
    pub edges: Vec<f32>,
    /// Firings per bin.
    pub counts: Vec<u64>,
}

/// Everything shown for one latent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentDashboard {
    /// The latent.
    pub latent: usize,
    /// Tokens seen (padding and, by default, `<bos>` left out).
    pub tokens: u64,
    /// Of those, where it fires (> 0).
    pub firing: u64,
    /// `firing / tokens`.
    pub density: f64,
    /// Its largest activation.
    pub max_activation: f32,
    /// Its mean activation where it fires.
    pub mean_when_firing: f64,
    /// Per role, in [`TokenRole::ALL`] order.
    pub roles: Vec<RoleShare>,
    /// The firing values' histogram.
    pub histogram: Histogram,
    /// The top-activating contexts, strongest first, one per document.
    pub top_contexts: Vec<Context>,
    /// Samples from each activation interval, lowest first.
    pub intervals: Vec<IntervalSamples>,
    /// Raw-unit decoder norms `[base, chat]`, when known.
    pub decoder_norms: Option<[f32; 2]>,
    /// What the decoder vectors promote and suppress through each model's unembedding.
    pub lens: Vec<LensTokens>,
}

/// Builds the dashboards of `latents` over `source` (one streaming pass, then the context windows);
/// token strings come from `tokenizer`.
pub fn build_dashboards(
    source: &dyn LatentValues,
    latents: &[usize],
    tokenizer: &GemmaTokenizer,
    options: &DashboardOptions,
    progress: bool,
) -> Result<Vec<LatentDashboard>> {
    check(latents, options)?;
    let streams = stream(
        source,
        latents,
        options.batch_rows,
        options.include_bos,
        progress,
    )?;
    latents
        .iter()
        .zip(streams)
        .map(|(&latent, stream)| dashboard(source, latent, stream, tokenizer, options))
        .collect()
}

fn check(latents: &[usize], options: &DashboardOptions) -> Result<()> {
    if latents.is_empty() {
        return Err(DashboardError::InvalidInput {
            reason: "no latent to show".into(),
        });
    }
    for (name, value) in [
        ("intervals", options.intervals),
        ("histogram_bins", options.histogram_bins),
        ("batch_rows", options.batch_rows),
    ] {
        if value == 0 {
            return Err(DashboardError::InvalidInput {
                reason: format!("{name} must be at least 1"),
            });
        }
    }
    Ok(())
}

fn dashboard(
    source: &dyn LatentValues,
    latent: usize,
    mut stream: LatentStream,
    tokenizer: &GemmaTokenizer,
    options: &DashboardOptions,
) -> Result<LatentDashboard> {
    // Strongest first; ties by row, so the order never depends on the batching.
    stream
        .firings
        .sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let firings = &stream.firings;
    let tokens: u64 = stream.roles.iter().map(|r| r.0).sum();
    let total: f64 = stream.roles.iter().map(|r| r.2).sum();
    let max = firings.first().map_or(0.0, |f| f.0);
    let roles = TokenRole::ALL
        .iter()
        .zip(&stream.roles)
        .map(|(&role, &(seen, firing, activation))| RoleShare {
            role,
            tokens: seen,
            firing,
            activation,
            share: if total > 0.0 { activation / total } else { 0.0 },
        })
        .collect();

    let windows = Windows {
        source,
        latent,
        tokenizer,
        options,
    };
    let top_rows = one_per_document(source, firings.iter().copied(), options.top_contexts)?;
    let top_contexts = windows.contexts(&top_rows)?;
    let mut intervals = Vec::with_capacity(options.intervals);
    for i in 0..options.intervals {
        let low = max * i as f32 / options.intervals as f32;
        let high = max * (i + 1) as f32 / options.intervals as f32;
        let inside: Vec<(f32, u64)> = firings
            .iter()
            .copied()
            .filter(|(v, _)| *v > low && (*v <= high || i + 1 == options.intervals))
            .collect();
        let picked = spread(&inside, options.per_interval);
        let rows = one_per_document(source, picked.into_iter(), options.per_interval)?;
        intervals.push(IntervalSamples {
            low,
            high,
            firings: inside.len() as u64,
            contexts: windows.contexts(&rows)?,
        });
    }
    Ok(LatentDashboard {
        latent,
        tokens,
        firing: firings.len() as u64,
        density: if tokens > 0 {
            firings.len() as f64 / tokens as f64
        } else {
            0.0
        },
        max_activation: max,
        mean_when_firing: if firings.is_empty() {
            0.0
        } else {
            total / firings.len() as f64
        },
        roles,
        histogram: histogram(firings, max, options.histogram_bins),
        top_contexts,
        intervals,
        decoder_norms: None,
        lens: Vec::new(),
    })
}

/// `n` firings spread evenly over `sorted` (strongest first), strongest first.
fn spread(sorted: &[(f32, u64)], n: usize) -> Vec<(f32, u64)> {
    if sorted.len() <= n {
        return sorted.to_vec();
    }
    (0..n)
        .map(|k| sorted[k * (sorted.len() - 1) / (n - 1).max(1)])
        .collect()
}

/// The first `n` firings of distinct documents.
fn one_per_document(
    source: &dyn LatentValues,
    firings: impl Iterator<Item = (f32, u64)>,
    n: usize,
) -> Result<Vec<(f32, u64)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (value, row) in firings {
        if out.len() == n {
            break;
        }
        if seen.insert(source.meta(row)?.prompt) {
            out.push((value, row));
        }
    }
    Ok(out)
}

fn histogram(firings: &[(f32, u64)], max: f32, bins: usize) -> Histogram {
    let edges: Vec<f32> = (0..=bins).map(|b| max * b as f32 / bins as f32).collect();
    let mut counts = vec![0u64; bins];
    if max > 0.0 {
        for (v, _) in firings {
            let b = ((v / max) * bins as f32) as usize;
            counts[b.min(bins - 1)] += 1;
        }
    }
    Histogram { edges, counts }
}

/// Reads context windows around chosen rows.
struct Windows<'a> {
    source: &'a dyn LatentValues,
    latent: usize,
    tokenizer: &'a GemmaTokenizer,
    options: &'a DashboardOptions,
}

impl Windows<'_> {
    fn contexts(&self, peaks: &[(f32, u64)]) -> Result<Vec<Context>> {
        peaks.iter().map(|&(v, row)| self.context(v, row)).collect()
    }

    /// The rows of the peak's document from `window_before` tokens before it to `window_after` after.
    fn context(&self, value: f32, row: u64) -> Result<Context> {
        let meta = self.source.meta(row)?;
        let same_document = |r: u64| -> Result<bool> {
            let m = self.source.meta(r)?;
            Ok(m.prompt == meta.prompt && !m.is_pad)
        };
        let mut first = row;
        while row - first < self.options.window_before as u64
            && first > 0
            && same_document(first - 1)?
        {
            first -= 1;
        }
        let mut last = row;
        while last - row < self.options.window_after as u64
            && last + 1 < self.source.n_rows()
            && same_document(last + 1)?
        {
            last += 1;
        }
        let rows: Vec<u64> = (first..=last).collect();
        let values = self.source.values(&rows, &[self.latent])?;
        let metas = rows
            .iter()
            .map(|&r| self.source.meta(r))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<u32> = metas.iter().map(|m| m.token_id).collect();
        let strings = self.tokenizer.tokens(&ids);
        Ok(Context {
            document: meta.prompt,
            row,
            position: meta.position,
            value,
            peak: (row - first) as usize,
            tokens: metas
                .iter()
                .zip(strings)
                .enumerate()
                .map(|(i, (m, token))| ContextToken {
                    token,
                    value: values[[i, 0]],
                    role: m.role(),
                })
                .collect(),
        })
    }
}
