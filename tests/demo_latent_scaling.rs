//! Latent Scaling on the demo pair, where the truth is known: the planted user-model latents are robust
//! chat-only (nu_error < 0.2, nu_reconstruction < 0.5, relative norm >= 0.9), the shared latents are
//! not, and a synthetic artifact (a shared latent whose base decoder row is zeroed, so that it looks
//! chat-only by its decoder norm while the base model still carries its direction: the "complete
//! shrinkage" case of Minder et al.) is flagged as not robust.

mod common;

use std::ops::ControlFlow;

use activation_cache::{cache_corpus, ActivationStore, CacheOptions, Corpus};
use crosscoder::{
    nearest_decoder_latent, BackendKind, Crosscoder, CrosscoderCheckpoint, CrosscoderLoader,
    DecoderAnalysis, LatentClass, LatentScaling, LatentScalingResult, RelativeNormThresholds,
    RobustThresholds, BASE, CHAT,
};
use gemma_model::{load_dir, HookPoint, LoadOptions};
use model_pair::StereoRunner;

use common::{demo_dir, planted_directions};

/// The demo corpus through the demo pair, cached in `dir`.
fn store(dir: &std::path::Path) -> ActivationStore {
    let hook: HookPoint = "blocks.1.hook_resid_post".parse().unwrap();
    let options = LoadOptions::for_hooks(&[hook]);
    let base = load_dir(demo_dir().join("base"), &options).unwrap();
    let chat = load_dir(demo_dir().join("chat"), &options).unwrap();
    let runner = StereoRunner::from_loaded(base, chat, hook).unwrap();
    let corpus = Corpus::from_path(demo_dir().join("corpus.jsonl")).unwrap();
    cache_corpus(&runner, &corpus, dir, &CacheOptions::default(), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    ActivationStore::open(dir).unwrap()
}

fn scale(cc: &dyn Crosscoder, store: &ActivationStore) -> LatentScalingResult {
    let mut pass = LatentScaling::new(cc, None).unwrap();
    let n = store.n_tokens();
    for start in (0..n).step_by(4096) {
        let rows: Vec<u64> = (start..(start + 4096).min(n)).collect();
        pass.add_batch(cc, store.read_rows(&rows).unwrap().view())
            .unwrap();
    }
    pass.result()
}

#[test]
fn planted_latents_are_robust_chat_only_and_shared_latents_and_a_shrinkage_artifact_are_not() {
    let cc = CrosscoderLoader::new(demo_dir().join("crosscoder").to_string_lossy())
        .backend(BackendKind::Flex)
        .load()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let result = scale(cc.as_ref(), &store);
    let analysis =
        DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default()).unwrap();
    let thresholds = RobustThresholds::default();
    let robust = result.robust_chat_only(&analysis.relative_norms, &thresholds);
    println!("{} rows; robust chat-only: {robust:?}", result.rows);

    // Every plant's latent is robust chat-only, and nothing else is.
    let mut planted = Vec::new();
    for (mechanism, direction) in planted_directions() {
        let (j, _) = nearest_decoder_latent(cc.as_ref(), CHAT, &direction).unwrap();
        println!(
            "{mechanism}: latent #{j}, relative norm {:.3}, nu_error {:.3}, nu_reconstruction {:.3}",
            analysis.relative_norms[j], result.nu_error[j], result.nu_reconstruction[j]
        );
        assert!(robust.contains(&j), "{mechanism}: latent {j} is not robust");
        planted.push(j);
    }
    planted.sort_unstable();
    assert_eq!(robust, planted);

    // Shared latents that fire: the base model carries them as much as the chat model.
    let shared: Vec<usize> = (0..cc.dict_size())
        .filter(|&j| analysis.classes[j] == LatentClass::Shared && result.sum_f2[j] > 0.0)
        .collect();
    let mut nu: Vec<f32> = shared.iter().map(|&j| result.nu_error[j]).collect();
    nu.sort_by(f32::total_cmp);
    let median = nu[nu.len() / 2];
    println!(
        "{} firing shared latents, median nu_error {median:.3}",
        shared.len()
    );
    assert!(
        median > 0.5,
        "shared latents look chat-only: median nu_error {median}"
    );

    // The artifact: the most active shared latent with its base decoder row zeroed is chat-only by
    // its norm, and Latent Scaling sees through it.
    let j = *shared
        .iter()
        .max_by(|a, b| result.sum_f2[**a].total_cmp(&result.sum_f2[**b]))
        .unwrap();
    let (config, mut weights, normalizer) = cc.to_checkpoint().unwrap().into_parts();
    weights.w_dec.slice_mut(ndarray::s![BASE, j, ..]).fill(0.0);
    let artifact = CrosscoderCheckpoint::new(config, weights, normalizer)
        .unwrap()
        .build(BackendKind::Flex)
        .unwrap();
    let artifact_analysis = DecoderAnalysis::new(
        artifact.as_ref(),
        BASE,
        CHAT,
        RelativeNormThresholds::default(),
    )
    .unwrap();
    assert_eq!(artifact_analysis.classes[j], LatentClass::ChatOnly);
    let artifact_result = scale(artifact.as_ref(), &store);
    println!(
        "artifact latent #{j}: nu_error {:.3}, nu_reconstruction {:.3}",
        artifact_result.nu_error[j], artifact_result.nu_reconstruction[j]
    );
    let flagged = artifact_result.robust_chat_only(&artifact_analysis.relative_norms, &thresholds);
    assert!(
        !flagged.contains(&j),
        "the shrinkage artifact passed as robust"
    );
    assert!(artifact_result.nu_error[j] > 0.5);
}
