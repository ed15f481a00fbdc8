//! Checks that run before any model is loaded: options, the dataset's contrasts and split, the
//! models' `config.json`, and the crosscoder's config against the requested hook and width.

use crosscoder::CrosscoderConfig;
use gemma_model::HookPoint;
use model_pair::TokenizationMode;
use persona_dataset::{
    PersonaDataset, CHILD_VS_ADULT, EXPERTISE_LEVEL, PROBE_CHILD_NOVICE, PROBE_SYCOPHANCY,
    SYCOPHANCY_TRIGGERS,
};
use serde::Serialize;

use crate::error::{AnalysisError, Result};
use crate::hunt::{validate_hunt_options, ContrastName};
use crate::options::Day1Options;

/// Fewest discovery items a contrast needs (a standard deviation needs two).
pub const MIN_DISCOVERY_ITEMS: usize = 2;

/// The verification probe of a known category: `child_novice` for `expertise_level` and
/// `child_vs_adult`, `sycophancy` for `sycophancy_triggers`.
pub fn default_probe(category: &str) -> Option<&'static str> {
    match category {
        EXPERTISE_LEVEL | CHILD_VS_ADULT => Some(PROBE_CHILD_NOVICE),
        SYCOPHANCY_TRIGGERS => Some(PROBE_SYCOPHANCY),
        _ => None,
    }
}

/// What will be run for one contrast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContrastPlan {
    /// The contrast.
    pub contrast: ContrastName,
    /// Discovery item ids (the hunt).
    pub discovery: Vec<String>,
    /// Held-out item ids (replication of the candidates).
    pub held_out: Vec<String>,
    /// The verification probe, if any.
    pub probe: Option<String>,
    /// Verification prompts of that probe.
    pub n_verification: usize,
}

/// Everything that will be run, decided before any model is loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// One entry per contrast, in dataset order.
    pub contrasts: Vec<ContrastPlan>,
    /// Items in the whole dataset.
    pub dataset_items: usize,
}

impl Plan {
    /// Probes used, in first-use order, each with its contrasts.
    pub fn probes(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for c in &self.contrasts {
            if let Some(p) = &c.probe {
                match out.iter_mut().find(|(name, _)| name == p) {
                    Some((_, cs)) => cs.push(c.contrast.category.clone()),
                    None => out.push((p.clone(), vec![c.contrast.category.clone()])),
                }
            }
        }
        // The user's own question first: "user is a child / novice".
        out.sort_by_key(|(p, _)| p.as_str() != PROBE_CHILD_NOVICE);
        out
    }

    /// Prompt runs in total (both variants of every item, every verification prompt once per probe).
    pub fn n_runs(&self) -> usize {
        let items: usize = self
            .contrasts
            .iter()
            .map(|c| 2 * (c.discovery.len() + c.held_out.len()))
            .sum();
        let probes: usize = self
            .probes()
            .iter()
            .filter_map(|(p, _)| {
                self.contrasts
                    .iter()
                    .find(|c| c.probe.as_ref() == Some(p))
                    .map(|c| c.n_verification)
            })
            .sum();
        items + probes
    }
}

/// Checks `options` (ranges, and pooling vs tokenization).
///
/// # Errors
/// [`AnalysisError::InvalidOption`] naming the flag.
pub fn validate_options(options: &Day1Options) -> Result<()> {
    validate_hunt_options(&options.hunt)?;
    if !(options.discovery_ratio > 0.0 && options.discovery_ratio <= 1.0) {
        return Err(AnalysisError::option(
            "--discovery-ratio",
            format!("must be in (0, 1], got {}", options.discovery_ratio),
        ));
    }
    if options.pooling.requires_chat_template()
        && options.tokenization != TokenizationMode::ChatTemplate
    {
        return Err(AnalysisError::option(
            "--pooling",
            format!(
                "`{}` pools chat-template tokens, which raw prompts do not have: add --chat-template or pick another pooling",
                options.pooling
            ),
        ));
    }
    if options.residual_model > 1 {
        return Err(AnalysisError::option(
            "residual_model",
            format!(
                "model index must be 0 (base) or 1 (chat), got {}",
                options.residual_model
            ),
        ));
    }
    let c = &options.criteria;
    if !(0.0..=1.0).contains(&c.min_auroc) || !(0.0..=1.0).contains(&c.min_balanced_accuracy) {
        return Err(AnalysisError::option(
            "criteria",
            format!("AUROC and balanced accuracy cut-offs must be in [0, 1], got {c:?}"),
        ));
    }
    Ok(())
}

/// Decides the contrasts, the split and the probes.
///
/// # Errors
/// [`AnalysisError::UnknownContrast`], [`AnalysisError::TooFewItems`] (a contrast with no item in the
/// dataset, or fewer than [`MIN_DISCOVERY_ITEMS`] on the discovery side), or an invalid option.
pub fn plan(dataset: &PersonaDataset, options: &Day1Options) -> Result<Plan> {
    validate_options(options)?;
    let all = dataset.contrasts();
    let available = || {
        all.iter()
            .map(|c| c.category.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = if options.contrasts.is_empty() {
        all.clone()
    } else {
        options
            .contrasts
            .iter()
            .map(|name| {
                all.iter()
                    .find(|c| &c.category == name)
                    .cloned()
                    .ok_or_else(|| AnalysisError::UnknownContrast {
                        name: name.clone(),
                        available: available(),
                    })
            })
            .collect::<Result<Vec<_>>>()?
    };
    if chosen.is_empty() {
        return Err(AnalysisError::UnknownContrast {
            name: "(any)".into(),
            available: "none: no category declares a contrast".into(),
        });
    }
    let split = dataset.split(options.discovery_ratio, options.seed)?;
    let mut contrasts = Vec::new();
    for c in chosen {
        let category = dataset
            .category(&c.category)
            .expect("contrasts come from the dataset's categories");
        let ids: Vec<&str> = category.items.iter().map(|i| i.id.as_str()).collect();
        let discovery: Vec<String> = split
            .discovery
            .iter()
            .filter(|id| ids.contains(&id.as_str()))
            .cloned()
            .collect();
        let held_out: Vec<String> = split
            .held_out
            .iter()
            .filter(|id| ids.contains(&id.as_str()))
            .cloned()
            .collect();
        let too_few = |side: &'static str, found: usize, hint: String| AnalysisError::TooFewItems {
            contrast: c.category.clone(),
            side,
            found,
            needed: MIN_DISCOVERY_ITEMS,
            total: ids.len(),
            ratio: options.discovery_ratio,
            seed: options.seed,
            hint,
        };
        if ids.len() < MIN_DISCOVERY_ITEMS {
            return Err(too_few(
                "dataset",
                ids.len(),
                format!(
                    ": add items to `prompt_pairs.{}` or leave the contrast out (--contrast)",
                    c.category
                ),
            ));
        }
        if discovery.len() < MIN_DISCOVERY_ITEMS {
            return Err(too_few(
                "discovery",
                discovery.len(),
                ": raise --discovery-ratio (1.0 puts every item in discovery) or try another --seed".into(),
            ));
        }
        let probe = options
            .probes
            .iter()
            .find(|(cat, _)| cat == &c.category)
            .map(|(_, p)| p.clone())
            .or_else(|| default_probe(&c.category).map(str::to_string));
        let n_verification = probe
            .as_deref()
            .map_or(0, |p| dataset.verification_for_probe(p).count());
        if let Some(p) = &probe {
            if n_verification == 0 {
                tracing::warn!(contrast = %c.category, probe = %p, "the dataset has no verification prompt for this probe; its candidates will not be verified");
            }
        }
        contrasts.push(ContrastPlan {
            contrast: ContrastName::from(&c),
            discovery,
            held_out,
            probe: probe.filter(|_| n_verification > 0),
            n_verification,
        });
    }
    Ok(Plan {
        contrasts,
        dataset_items: dataset.item_count(),
    })
}

/// Checks a crosscoder against the run: two models, width `d_model`, and the hook (or at least the
/// layer) it was trained on. A crosscoder that records neither hook nor layer passes with a warning.
///
/// # Errors
/// [`AnalysisError::CrosscoderMismatch`] naming the field and both values.
pub fn check_crosscoder(config: &CrosscoderConfig, hook: HookPoint, d_model: usize) -> Result<()> {
    let source_name = config.source.clone().unwrap_or_else(|| "(unnamed)".into());
    let mismatch = |field: &'static str, crosscoder: String, requested: String| {
        AnalysisError::CrosscoderMismatch {
            source_name: source_name.clone(),
            field,
            crosscoder,
            requested,
        }
    };
    if config.n_models != 2 {
        return Err(mismatch(
            "n_models",
            config.n_models.to_string(),
            "2 (base and chat)".into(),
        ));
    }
    if config.d_model != d_model {
        return Err(mismatch(
            "d_model",
            config.d_model.to_string(),
            format!("{d_model} (the models' hidden_size)"),
        ));
    }
    let requested = hook.to_string();
    match (config.hook, config.layer) {
        (Some(h), _) if h != hook => Err(mismatch("hook", h.to_string(), requested)),
        (None, Some(l)) if Some(l) != hook.layer() => Err(mismatch(
            "layer",
            l.to_string(),
            format!(
                "{} ({requested})",
                hook.layer().map_or("none".into(), |x| x.to_string())
            ),
        )),
        (None, None) => {
            tracing::warn!(crosscoder = %source_name, hook = %requested, "the crosscoder does not record its hook or layer; assuming it matches");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The hook a crosscoder was trained on, from its config (`hook`, else `layer` as `resid_post`).
pub fn crosscoder_hook(config: &CrosscoderConfig) -> Option<HookPoint> {
    config.hook.or(config.layer.map(HookPoint::ResidPost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosscoder_checks_name_the_field() {
        let mut c = CrosscoderConfig::relu(2, 64, 128);
        c.hook = Some(HookPoint::ResidPost(1));
        assert!(check_crosscoder(&c, HookPoint::ResidPost(1), 64).is_ok());
        let e = check_crosscoder(&c, HookPoint::ResidPost(2), 64).unwrap_err();
        assert!(
            e.to_string().contains("hook blocks.1.hook_resid_post"),
            "{e}"
        );
        let e = check_crosscoder(&c, HookPoint::ResidPost(1), 32).unwrap_err();
        assert!(matches!(
            e,
            AnalysisError::CrosscoderMismatch {
                field: "d_model",
                ..
            }
        ));
        c.hook = None;
        c.layer = Some(13);
        let e = check_crosscoder(&c, HookPoint::ResidPost(12), 64).unwrap_err();
        assert!(matches!(
            e,
            AnalysisError::CrosscoderMismatch { field: "layer", .. }
        ));
        assert_eq!(crosscoder_hook(&c), Some(HookPoint::ResidPost(13)));
    }

    #[test]
    fn datasets_without_enough_items_are_refused_with_a_hint() {
        let dataset = PersonaDataset::embedded_minimal();
        let e = plan(&dataset, &Day1Options::default()).unwrap_err();
        assert!(matches!(e, AnalysisError::TooFewItems { .. }), "{e}");
        assert!(
            e.to_string().contains("sycophancy_triggers")
                || e.to_string().contains("expertise_level")
        );
        let options = Day1Options {
            contrasts: vec!["nope".into()],
            ..Day1Options::default()
        };
        assert!(matches!(
            plan(&dataset, &options),
            Err(AnalysisError::UnknownContrast { .. })
        ));
    }

    #[test]
    fn the_shipped_dataset_plans_three_contrasts_with_probes() {
        let dataset = PersonaDataset::shipped();
        let p = plan(&dataset, &Day1Options::default()).unwrap();
        assert_eq!(p.contrasts.len(), 3);
        let probes = p.probes();
        assert_eq!(probes[0].0, PROBE_CHILD_NOVICE);
        assert_eq!(
            probes[0].1,
            vec![EXPERTISE_LEVEL.to_string(), CHILD_VS_ADULT.to_string()]
        );
        let items: usize = p
            .contrasts
            .iter()
            .map(|c| c.discovery.len() + c.held_out.len())
            .sum();
        assert_eq!(items, dataset.item_count());
        assert_eq!(p.n_runs(), 2 * items + 126 + 68);
    }

    #[test]
    fn template_pooling_needs_the_chat_template() {
        let options = Day1Options {
            pooling: crate::Pooling::TemplateOnly,
            ..Day1Options::default()
        };
        let e = validate_options(&options).unwrap_err();
        assert!(e.to_string().contains("--chat-template"), "{e}");
    }
}
