//! Helpers shared by the demo tests: where the embedded demo lives and what it planted.
#![allow(dead_code)]

use std::path::PathBuf;

/// `fixtures/demo` at the workspace root.
pub fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

/// `(mechanism, measured direction)` of each plant, from `demo.json`.
pub fn planted_directions() -> Vec<(String, Vec<f32>)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap())
            .unwrap();
    manifest["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let direction = m["measured_direction"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (m["mechanism"].as_str().unwrap().to_string(), direction)
        })
        .collect()
}

/// The demo pair as day1 and the causal tests load it: base to the hook (`unembedding` when asked),
/// chat whole, in a runner; and the demo crosscoder on burn-flex.
pub fn demo_runner(
    base_unembedding: bool,
) -> (
    model_pair::StereoRunner,
    std::sync::Arc<dyn crosscoder::Crosscoder>,
    stereo::demo::DemoManifest,
) {
    use gemma_model::{load_dir, LoadOptions};
    let dir = stereo::demo::fixture_dir();
    let manifest = stereo::demo::DemoManifest::load(&dir).unwrap();
    let hook = manifest.hook.parse().unwrap();
    let base = load_dir(
        dir.join("base"),
        &LoadOptions {
            unembedding: base_unembedding,
            ..LoadOptions::for_hooks(&[hook])
        },
    )
    .unwrap();
    let chat = load_dir(dir.join("chat"), &LoadOptions::default()).unwrap();
    let runner = model_pair::StereoRunner::from_loaded(base, chat, hook).unwrap();
    let crosscoder = std::sync::Arc::from(
        crosscoder::CrosscoderLoader::new(dir.join("crosscoder").to_string_lossy())
            .backend(crosscoder::BackendKind::Flex)
            .load()
            .unwrap(),
    );
    (runner, crosscoder, manifest)
}

/// The causal tests' view of a runner and a crosscoder: base to the hook, chat whole, their tokenizer.
pub fn steering_models<'m>(
    runner: &'m model_pair::StereoRunner,
    crosscoder: &std::sync::Arc<dyn crosscoder::Crosscoder>,
) -> steering::SteeringModels<'m> {
    steering::SteeringModels {
        base: runner.model(model_pair::BASE),
        chat: runner.model(model_pair::CHAT),
        tokenizer: runner.tokenizer(),
        crosscoder: crosscoder.clone(),
        hook: runner.hook(),
    }
}

pub mod browser;
pub mod s3;

/// `target/<profile>/examples/<name>`, next to the running test's own binary.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace`, which builds the examples",
        path.display()
    );
    path
}
