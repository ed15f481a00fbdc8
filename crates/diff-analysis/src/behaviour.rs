//! `day1 --causal`, sycophancy as behaviour: for the verified sycophancy candidate, does ablating it
//! move the chat model from agreeing with a user's false belief toward correcting it?
//!
//! The dataset's forced-choice items ([`persona_dataset::PersonaDataset::forced_choice_items`]: a
//! prompt stating a false belief, an agreeing and a correcting answer) become
//! [`steering::PreferenceItem`]s, and [`steering::run_preference`] scores them unedited, with the
//! latent ablated in lockstep, and with a matched-norm random-latent control, plus free answers. The
//! result joins the day1 results ([`crate::Day1Results::behaviour`]), the summary, the report and the
//! sentence ("... ablating latent #Y shifts the preference toward correcting the user by ...").

use gemma_model::ChatMessage;
use persona_dataset::{PersonaDataset, PromptText, Role, PROBE_SYCOPHANCY};
use steering::{run_preference, PreferenceItem, PreferenceResults, PreferenceSpec, SteeringModels};

use crate::error::Result;
use crate::results::Day1Results;
use crate::verify::ConclusionStatus;

/// The directory under `<out>/causal/` that holds the preference test's files.
pub const SYCOPHANCY_PREFERENCE_DIR: &str = "sycophancy_preference";

/// A dataset prompt as chat messages (a single prompt is one user turn).
pub fn chat_messages(prompt: &PromptText) -> Vec<ChatMessage> {
    prompt
        .to_turns()
        .into_iter()
        .map(|t| match t.role {
            Role::User => ChatMessage::user(t.content),
            Role::Model => ChatMessage::model(t.content),
        })
        .collect()
}

/// Every forced-choice item of `dataset`, in file order.
pub fn preference_items(dataset: &PersonaDataset) -> Vec<PreferenceItem> {
    dataset
        .forced_choice_items()
        .into_iter()
        .map(|c| PreferenceItem {
            id: c.item_id.to_owned(),
            messages: chat_messages(c.prompt),
            agree: c.continuations.agree.clone(),
            correct: c.continuations.correct.clone(),
        })
        .collect()
}

/// The sycophancy latent the conclusion found, if any.
pub fn concluded_sycophancy_latent(results: &Day1Results) -> Option<usize> {
    results
        .conclusion
        .per_probe
        .iter()
        .find(|pc| pc.probe == PROBE_SYCOPHANCY && pc.status == ConclusionStatus::Found)
        .and_then(|pc| pc.feature)
}

/// Runs the preference test of the concluded sycophancy latent (ablated) on the dataset's
/// forced-choice items, adds it to `results` (and its clause to the sentences), and returns it.
/// `None` when no sycophancy latent was concluded or the dataset has no forced-choice items.
///
/// # Errors
/// A model, crosscoder or steering failure.
pub fn test_sycophancy_behaviour(
    results: &mut Day1Results,
    models: &SteeringModels<'_>,
    dataset: &PersonaDataset,
    spec: impl FnOnce(usize) -> PreferenceSpec,
    progress: bool,
) -> Result<Option<PreferenceResults>> {
    let Some(latent) = concluded_sycophancy_latent(results) else {
        return Ok(None);
    };
    let items = preference_items(dataset);
    if items.is_empty() {
        return Ok(None);
    }
    let found = run_preference(models, &items, &spec(latent), progress)?;
    let clause = format!("; behaviourally, {}", found.sentence());
    if let Some(pc) = results
        .conclusion
        .per_probe
        .iter_mut()
        .find(|pc| pc.probe == PROBE_SYCOPHANCY)
    {
        let had_headline = results.conclusion.sentence.starts_with(&pc.sentence);
        pc.sentence = format!("{}{clause}.", pc.sentence.trim_end_matches('.'));
        if had_headline {
            results.conclusion.sentence = pc.sentence.clone();
        }
    }
    results.behaviour = Some(found.clone());
    Ok(Some(found))
}
