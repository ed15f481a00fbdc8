//! `day1 --circuits`: the circuit of every verified candidate ([`circuits::map_circuit`]), on the
//! positive side of its contrast, stored in [`Day1Results::circuits`] for the summary, the report and
//! `circuits/latent_{j}_{contrast}/`.

use circuits::{map_circuit, CircuitModels, CircuitOptions};
use persona_dataset::PersonaDataset;

use crate::error::Result;
use crate::extract::prompt_input;
use crate::results::Day1Results;

/// Maps the circuit of every candidate that passed verification (each latent once per contrast);
/// returns how many were mapped. Text prompts are tokenized as the hunt tokenized them.
pub fn map_verified_circuits(
    results: &mut Day1Results,
    with: CircuitModels<'_>,
    dataset: &PersonaDataset,
    options: &CircuitOptions,
) -> Result<usize> {
    let mut done: Vec<(String, usize)> = Vec::new();
    let mut reports = Vec::new();
    for v in results.verifications.iter().filter(|v| v.passed) {
        if done.contains(&(v.contrast.clone(), v.feature)) {
            continue;
        }
        done.push((v.contrast.clone(), v.feature));
        let contrast = dataset.contrast(&v.contrast)?;
        let prompts: Vec<_> = contrast
            .pairs(dataset)?
            .iter()
            .map(|p| prompt_input(p.positive, results.options.tokenization))
            .collect();
        let label = format!("{}: {}", contrast.category, contrast.positive);
        let mut options = options.clone();
        options.tokenization = results.options.tokenization;
        reports.push(map_circuit(with, &prompts, &label, v.feature, &options)?);
    }
    let n = reports.len();
    results.circuits.extend(reports);
    Ok(n)
}
