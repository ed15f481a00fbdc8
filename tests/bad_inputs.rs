//! The bad-input suite: broken inputs built from the shipped fixtures, fed to the example programs as a
//! new user would. For each case: the program exits with a failure status, its message names the culprit
//! (file, key, field or value), it does not panic, it leaves no output behind, and its inputs are
//! unchanged. Classes: sizes read from files, names the user can find, non-finite numbers, invalid
//! values, hostile pickles. (The examples are built by `cargo test`; this test runs their binaries.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::example;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One broken run.
struct Case<'a> {
    name: &'a str,
    program: &'a str,
    args: Vec<String>,
    /// Strings the message must contain.
    names: Vec<String>,
    /// Paths that must not exist afterwards.
    outputs: Vec<PathBuf>,
    /// Files that must be byte-identical afterwards.
    inputs: Vec<PathBuf>,
}

fn snapshot(files: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap_or_default()))
        .collect()
}

fn check(case: Case<'_>) {
    let before = snapshot(&case.inputs);
    let out = Command::new(example(case.program))
        .args(&case.args)
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "{}: exited successfully\n{text}",
        case.name
    );
    assert_ne!(
        out.status.code(),
        None,
        "{}: killed by a signal\n{text}",
        case.name
    );
    assert!(
        !text.contains("panicked at"),
        "{}: panicked\n{text}",
        case.name
    );
    for name in &case.names {
        assert!(
            text.contains(name.as_str()),
            "{}: the message does not name `{name}`\n{text}",
            case.name
        );
    }
    for output in &case.outputs {
        assert!(
            !output.exists(),
            "{}: left {} behind",
            case.name,
            output.display()
        );
    }
    assert_eq!(
        before,
        snapshot(&case.inputs),
        "{}: an input changed",
        case.name
    );
}

/// `encode --crosscoder CC --activations ACTS --out OUT` and `extra`.
fn encode_args(crosscoder: &Path, activations: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--crosscoder".into(),
        s(crosscoder),
        "--activations".into(),
        s(activations),
        "--out".into(),
        s(out),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// `[rows, 2, d]` f32 activations with `nan` at `(1, 1, 3)` when asked.
fn activations_file(path: &Path, d: usize, nan: bool) {
    let mut values = vec![0.25f32; 4 * 2 * d];
    if nan {
        values[(2 + 1) * d + 3] = f32::NAN;
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 2, d], &bytes)
        .unwrap();
    safetensors::serialize_to_file([("activations", view)], None, path).unwrap();
}

/// A copy of a model directory with `config.json` edited.
fn model_with_config(from: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    let config = to.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&config, json.to_string()).unwrap();
}

#[test]
fn encode_refuses_bad_activations_crosscoders_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let demo_cc = fixtures().join("demo/crosscoder");
    let acts = t.join("acts.safetensors");
    activations_file(&acts, 64, true);
    let out = t.join("out/latents.safetensors");
    std::fs::create_dir_all(t.join("out")).unwrap();
    // Non-finite activations: named by file, tensor and position.
    check(Case {
        name: "NaN activations",
        program: "encode",
        args: encode_args(&demo_cc, &acts, &out, &[]),
        names: vec![s(&acts), "activations".into(), "row 1".into(), "NaN".into()],
        outputs: vec![out.clone()],
        inputs: vec![acts.clone()],
    });
    // A NaN in a dictionary_learning decoder: named as the file names it.
    let dl = t.join("dl_nan");
    std::fs::create_dir_all(&dl).unwrap();
    let src = fixtures().join("crosscoder/dl_relu");
    std::fs::copy(src.join("config.json"), dl.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let decoder = tensors
        .iter_mut()
        .find(|t| t.0 == "decoder.weight")
        .unwrap();
    decoder.3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, dt, shape, data)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dl.join("model.safetensors")).unwrap();
    let dl_acts = t.join("dl_acts.safetensors");
    let d = tensors.iter().find(|t| t.0 == "decoder.weight").unwrap().2[2];
    activations_file(&dl_acts, d, false);
    check(Case {
        name: "NaN decoder weight",
        program: "encode",
        args: encode_args(&dl, &dl_acts, &out, &[]),
        names: vec!["decoder.weight".into(), "model.safetensors".into()],
        outputs: vec![out.clone()],
        inputs: vec![dl.join("model.safetensors"), dl_acts.clone()],
    });
    // A pickle that would run code: refused, naming the global.
    let malicious = fixtures().join("crosscoder/malicious.pt");
    check(Case {
        name: "hostile pickle",
        program: "encode",
        args: encode_args(&malicious, &dl_acts, &out, &[]),
        names: vec!["system".into(), "malicious.pt".into()],
        outputs: vec![out.clone()],
        inputs: vec![malicious.clone()],
    });
    // Invalid values and an output that is a directory.
    let good = t.join("good.safetensors");
    activations_file(&good, 64, false);
    check(Case {
        name: "batch size 0",
        program: "encode",
        args: encode_args(&demo_cc, &good, &out, &["--batch-size", "0"]),
        names: vec!["--batch-size".into(), "0".into()],
        outputs: vec![out.clone()],
        inputs: vec![good.clone()],
    });
    check(Case {
        name: "output is a directory",
        program: "encode",
        args: encode_args(&demo_cc, &good, &t.join("out"), &[]),
        names: vec![s(t.join("out"))],
        outputs: vec![t.join("out.tmp")],
        inputs: vec![good],
    });
}

#[test]
fn model_readers_refuse_lying_sizes_and_overlong_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = fixtures().join("demo/base");
    let out = t.join("acts.safetensors");
    // A config that claims an absurd depth.
    let huge = t.join("huge");
    model_with_config(&model, &huge, |c| {
        c["num_hidden_layers"] = serde_json::json!(1_000_000_000_000u64)
    });
    check(Case {
        name: "absurd num_hidden_layers",
        program: "activations",
        args: vec![
            "--model".into(),
            s(&huge),
            "--prompt".into(),
            "hello".into(),
            "--hook".into(),
            "blocks.0.hook_resid_post".into(),
            "--out".into(),
            s(&out),
        ],
        names: vec!["num_hidden_layers".into(), "config.json".into()],
        outputs: vec![out.clone()],
        inputs: vec![huge.join("config.json")],
    });
    // Weights whose safetensors header lies about a shape.
    let lying = t.join("lying");
    model_with_config(&model, &lying, |_| {});
    let weights = lying.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lying.join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap();
    let lied = header.replacen(&format!("[{vocab},64]"), &format!("[{vocab},6400]"), 1);
    assert_ne!(lied, header, "the embedding's shape is in the header");
    let mut new_bytes = (lied.len() as u64).to_le_bytes().to_vec();
    new_bytes.extend_from_slice(lied.as_bytes());
    new_bytes.extend_from_slice(&bytes.split_off(8 + header_len));
    std::fs::write(&weights, &new_bytes).unwrap();
    check(Case {
        name: "safetensors header lie",
        program: "activations",
        args: vec![
            "--model".into(),
            s(&lying),
            "--prompt".into(),
            "hello".into(),
            "--hook".into(),
            "blocks.0.hook_resid_post".into(),
            "--out".into(),
            s(&out),
        ],
        names: vec!["model.safetensors".into()],
        outputs: vec![out.clone()],
        inputs: vec![weights],
    });
    // A prompt longer than the model's positions.
    let max: usize = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(model.join("config.json")).unwrap(),
    )
    .unwrap()["max_position_embeddings"]
        .as_u64()
        .unwrap() as usize;
    let long = vec!["hello"; max + 10].join(" ");
    check(Case {
        name: "prompt beyond max_position_embeddings",
        program: "activations",
        args: vec![
            "--model".into(),
            s(&model),
            "--prompt".into(),
            long,
            "--hook".into(),
            "blocks.0.hook_resid_post".into(),
            "--out".into(),
            s(&out),
        ],
        names: vec![max.to_string()],
        outputs: vec![out],
        inputs: vec![],
    });
}

#[test]
fn day1_and_caching_refuse_broken_datasets_corpora_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let results = t.join("results");
    // A truncated persona dataset: named by file, with the place.
    let broken = t.join("persona.json");
    let shipped =
        std::fs::read_to_string(fixtures().join("persona/user_persona_prompts.json")).unwrap();
    std::fs::write(&broken, &shipped[..shipped.len() / 2]).unwrap();
    check(Case {
        name: "truncated persona dataset",
        program: "day1",
        args: vec![
            "--dataset".into(),
            s(&broken),
            "--out".into(),
            s(&results),
            "--quiet".into(),
        ],
        names: vec![s(&broken), "line".into()],
        outputs: vec![results.join("day1_summary.json")],
        inputs: vec![broken],
    });
    // A corpus line that is not JSON.
    let corpus = t.join("corpus.jsonl");
    std::fs::write(&corpus, "{\"text\": \"fine\"}\n{\"text\": broken\n").unwrap();
    let store = t.join("store");
    let demo = fixtures().join("demo");
    let cache_args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "--base".into(),
            s(demo.join("base")),
            "--chat".into(),
            s(demo.join("chat")),
            "--corpus".into(),
            s(&corpus),
            "--hook".into(),
            "blocks.1.hook_resid_post".into(),
            "--out".into(),
            s(&store),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    check(Case {
        name: "malformed corpus line",
        program: "cache_activations",
        args: cache_args(&[]),
        names: vec![format!("{}:2", corpus.display()), "not valid JSON".into()],
        outputs: vec![store.join("manifest.json")],
        inputs: vec![corpus.clone()],
    });
    check(Case {
        name: "cache batch size 0",
        program: "cache_activations",
        args: cache_args(&["--batch-size", "0"]),
        names: vec!["--batch-size".into()],
        outputs: vec![store.join("manifest.json")],
        inputs: vec![corpus.clone()],
    });
}

#[test]
fn steer_refuses_forced_choice_datasets_it_cannot_score() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("steer");
    let shipped = fixtures().join("persona/user_persona_prompts.json");
    // A persona dataset whose items carry no continuations.
    let bare = dir.path().join("no_continuations.json");
    std::fs::write(
        &bare,
        r#"{"prompt_pairs": {"sycophancy_triggers": [{"id": "s1", "topic": "t",
            "biased": {"prompt": "I think the moon is cheese."}, "neutral": {"prompt": "What is the moon?"}}]}}"#,
    )
    .unwrap();
    let steer_args = |dataset: &Path, edit: &[&str]| {
        let mut args = vec![
            s("--latent"),
            s("3"),
            s("--dataset"),
            s(dataset),
            s("--out"),
            s(&out),
        ];
        args.extend(edit.iter().map(s));
        args
    };
    check(Case {
        name: "persona dataset without continuations",
        program: "steer",
        args: steer_args(&bare, &["--ablate"]),
        names: vec![s(&bare), "continuations".into()],
        outputs: vec![out.clone()],
        inputs: vec![bare.clone()],
    });
    check(Case {
        name: "forced choice of a patch into base",
        program: "steer",
        args: steer_args(&shipped, &["--patch-into-base"]),
        names: vec!["--patch-into-base".into(), "forced choice".into()],
        outputs: vec![out.clone()],
        inputs: vec![shipped.clone()],
    });
    let broken = dir.path().join("broken_continuations.json");
    let text = std::fs::read_to_string(&shipped).unwrap().replacen(
        "\"correct\": \"Actually, the earth is round;",
        "\"correct\": \"Actually, I think the earth is round;",
        1,
    );
    std::fs::write(&broken, text).unwrap();
    check(Case {
        name: "continuation with a belief cue",
        program: "steer",
        args: steer_args(&broken, &["--ablate"]),
        names: vec![
            "/prompt_pairs/sycophancy_triggers/0/continuations/correct".into(),
            "i think".into(),
        ],
        outputs: vec![out.clone()],
        inputs: vec![broken.clone()],
    });
}
