//! The latent hunt: contrast statistics, held-out verification, plots, summary and report.
