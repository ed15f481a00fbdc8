//! The main job on the embedded demo pair (`fixtures/demo`): the day1 workflow must name the latent planted
//! for "the user is a child or a novice" (the chat decoder vector nearest the planted direction), and reach
//! the same conclusion, probe by probe, as on the reference backend.

use crosscoder::{nearest_decoder_latent, CrosscoderLoader, CHAT};
use diff_analysis::{ConclusionStatus, Day1, Day1Options, Day1Results};
use gemma_model::{load_dir, LoadOptions};
use model_pair::StereoRunner;
use persona_dataset::{PersonaDataset, PROBE_CHILD_NOVICE};
use stereo_core::BackendKind;

use super::golden::Tally;
use super::{CheckError, CheckOptions, CheckRecord};
use crate::demo::{DemoManifest, Mechanism, HOOK_POINT};

fn day1(options: &CheckOptions, backend: BackendKind) -> Result<Day1Results, CheckError> {
    let dir = options.fixtures.join("demo");
    let hook = HOOK_POINT;
    let load = |part: &str| -> Result<_, CheckError> {
        let loaded = load_dir(
            dir.join(part),
            &LoadOptions::for_hooks(&[hook]).with_backend(backend),
        )?;
        let tokenizer = loaded
            .tokenizer
            .ok_or_else(|| CheckError::fixture(dir.join(part).join("tokenizer.json"), "missing"))?;
        Ok((loaded.model, tokenizer))
    };
    let ((base, base_tokenizer), (chat, chat_tokenizer)) = (load("base")?, load("chat")?);
    let runner = StereoRunner::new(base, chat, [base_tokenizer, chat_tokenizer], hook)?;
    let cc = CrosscoderLoader::new(dir.join("crosscoder").to_string_lossy())
        .backend(backend)
        .load()?;
    let dataset = PersonaDataset::shipped();
    Day1::new(&runner, Some(cc.as_ref()), &dataset)
        .options(Day1Options {
            progress: false,
            ..Day1Options::default()
        })
        .run()
        .map_err(CheckError::from)
}

/// The latent whose chat decoder vector is nearest the planted child/novice direction.
fn planted_child_latent(options: &CheckOptions) -> Result<usize, CheckError> {
    let dir = options.fixtures.join("demo");
    let manifest = DemoManifest::load(&dir)?;
    let cc = CrosscoderLoader::new(dir.join("crosscoder").to_string_lossy())
        .backend(options.reference_backend)
        .load()?;
    nearest_decoder_latent(
        cc.as_ref(),
        CHAT,
        manifest.direction(Mechanism::ChildNovice),
    )
    .map(|(latent, _)| latent)
    .map_err(CheckError::from)
}

pub fn check(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    let mut tally = Tally::new("demo_day1", options.tolerances.demo);
    let planted = planted_child_latent(options)?;
    let ours = day1(options, options.backend)?;
    let reference = day1(options, options.reference_backend)?;
    let child = ours
        .conclusion
        .per_probe
        .iter()
        .find(|p| p.probe == PROBE_CHILD_NOVICE);
    tally.require(
        &format!("the {PROBE_CHILD_NOVICE} probe names the planted latent #{planted}"),
        child.is_some_and(|p| p.status == ConclusionStatus::Found && p.feature == Some(planted)),
    );
    tally.require(
        "one conclusion per probe on both backends",
        ours.conclusion.per_probe.len() == reference.conclusion.per_probe.len(),
    );
    for (a, e) in ours
        .conclusion
        .per_probe
        .iter()
        .zip(&reference.conclusion.per_probe)
    {
        tally.require(
            &format!(
                "probe {}: {:?} #{:?} here, {:?} #{:?} on {}",
                a.probe, a.status, a.feature, e.status, e.feature, options.reference_backend
            ),
            a.status == e.status && a.feature == e.feature,
        );
        for (which, x, y) in [
            ("ACTIVATE example", &a.activate_example, &e.activate_example),
            ("SILENT example", &a.silent_example, &e.silent_example),
        ] {
            if let (Some((_, x)), Some((_, y))) = (x, y) {
                // Scaled by the probe's largest activation: a silent example is near zero.
                let scale = a
                    .activate_example
                    .as_ref()
                    .map_or(1.0, |(_, v)| v.abs())
                    .max(1e-12);
                tally.record(
                    &format!("probe {} {which} activation", a.probe),
                    (x - y).abs() / scale,
                );
            }
        }
    }
    tally.note(format!("{}: {}", options.backend, ours.conclusion.sentence));
    tally.note(format!(
        "{}: {}",
        options.reference_backend, reference.conclusion.sentence
    ));
    Ok(tally.finish())
}
