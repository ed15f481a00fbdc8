//! Model sources and every loading error: hub cache layout, offline mode, gated repos, missing files,
//! truncated shards, mis-shaped or missing tensors, unavailable backends.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use common::*;
use gemma_model::{
    load_dir, load_model, BackendKind, ComputeDtype, GemmaError, HookPoint, HubOptions,
    LoadOptions, ModelSource, RunRequest, TokenBatch,
};
use safetensors::tensor::TensorView;
use stereo_core::hub::{seed_cache, HubError};

fn options_with(hub: HubOptions) -> LoadOptions {
    LoadOptions {
        hub,
        ..LoadOptions::default()
    }
}

#[test]
fn a_hub_id_resolves_through_the_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny-gqa-bf16");
    let names = [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let files: Vec<(&str, std::path::PathBuf)> = names.iter().map(|n| (*n, src.join(n))).collect();
    let refs: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    seed_cache(
        &tmp.path().join("hub"),
        "tiny-org/tiny-gqa",
        "0123abcd",
        &refs,
    )
    .unwrap();
    let source = ModelSource::parse("tiny-org/tiny-gqa").unwrap();
    let loaded = load_model(
        &source,
        &options_with(HubOptions::offline_cache(tmp.path().join("hub"))),
    )
    .unwrap();
    assert_eq!(loaded.revision.as_deref(), Some("0123abcd"));
    assert!(loaded.tokenizer.is_some());
    let local = load_dir(&src, &LoadOptions::default()).unwrap();
    let batch = TokenBatch::single(vec![2, 300, 301, 302]).unwrap();
    let req = RunRequest::capture([HookPoint::ResidPost(2)]);
    assert_eq!(
        loaded.model.run(&batch, &req).unwrap().activations,
        local.model.run(&batch, &req).unwrap().activations
    );
}

#[test]
fn offline_without_the_files_names_them() {
    let tmp = tempfile::tempdir().unwrap();
    let source = ModelSource::parse("google/gemma-2-2b").unwrap();
    let err = load_model(
        &source,
        &options_with(HubOptions::offline_cache(tmp.path())),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, GemmaError::Hub(HubError::NotCached { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("google/gemma-2-2b") && err.to_string().contains("config.json"),
        "{err}"
    );
}

/// A local stand-in for the hub that answers every request like a gated repo without a token.
fn gated_hub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "Access to model google/gemma-2-2b is restricted. You must have access to it and be authenticated to access it. Please log in.";
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Error-Code: GatedRepo\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_gated_repo_without_a_token_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubOptions {
        cache_dir: tmp.path().to_path_buf(),
        token: None,
        offline: false,
        endpoint: Some(gated_hub()),
        progress: false,
    };
    let err = load_model(
        &ModelSource::parse("google/gemma-2-2b").unwrap(),
        &options_with(hub),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, GemmaError::Hub(HubError::Gated { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
}

#[test]
fn a_missing_path_or_bad_id_is_an_error() {
    assert!(ModelSource::parse("/no/such/dir/../x").is_err());
    let err = load_dir("/definitely/not/here", &LoadOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("/definitely/not/here"), "{err}");
}

#[test]
fn missing_config_or_weights_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-window"), tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = load_dir(tmp.path(), &LoadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let err = load_dir(tmp.path(), &LoadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn a_truncated_shard_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gqa-bf16"), tmp.path());
    let shard = tmp.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_dir(tmp.path(), &LoadOptions::default()).err().unwrap();
    assert!(matches!(err, GemmaError::CorruptWeights { .. }), "{err}");
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

/// Rewrites `model.safetensors` of a copy of tiny-window with `edit` applied to the tensor list.
fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn a_mis_shaped_tensor_is_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-window"), tmp.path());
    let key = "model.layers.1.mlp.up_proj.weight";
    rewrite_weights(tmp.path(), |tensors| {
        let t = tensors.iter_mut().find(|t| t.0 == key).unwrap();
        t.2.reverse();
    });
    let err = load_dir(tmp.path(), &LoadOptions::default()).err().unwrap();
    match &err {
        GemmaError::TensorShape {
            key: k,
            expected,
            actual,
            ..
        } => {
            assert_eq!(k, key);
            assert_eq!(
                expected.iter().rev().collect::<Vec<_>>(),
                actual.iter().collect::<Vec<_>>()
            );
        }
        other => panic!("expected TensorShape, got {other}"),
    }
}

#[test]
fn a_missing_tensor_is_named_but_unneeded_layers_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-window"), tmp.path());
    let key = "model.layers.3.self_attn.k_proj.weight";
    rewrite_weights(tmp.path(), |tensors| tensors.retain(|t| t.0 != key));
    let err = load_dir(tmp.path(), &LoadOptions::default()).err().unwrap();
    assert!(
        matches!(&err, GemmaError::MissingTensor { key: k, .. } if k == key),
        "{err}"
    );
    // A run that stops at layer 1 never reads layer 3.
    let options = LoadOptions::for_hooks(&[HookPoint::ResidPost(1)]);
    assert!(load_dir(tmp.path(), &options).is_ok());
}

#[test]
fn an_unknown_architecture_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-window"), tmp.path());
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"gemma2\"", "\"llama\"");
    std::fs::write(&path, text).unwrap();
    let err = load_dir(tmp.path(), &LoadOptions::default()).err().unwrap();
    assert!(
        matches!(err, GemmaError::UnsupportedArchitecture { .. }),
        "{err}"
    );
}

#[test]
fn unavailable_backends_and_dtypes_are_errors_not_panics() {
    let cuda = LoadOptions::default().with_backend(BackendKind::Cuda);
    if BackendKind::Cuda.ensure_available().is_err() {
        let err = load_dir(fixture("tiny-window"), &cuda).err().unwrap();
        assert!(matches!(err, GemmaError::Backend(_)), "{err}");
    }
    let bf16 = LoadOptions {
        dtype: ComputeDtype::Bf16,
        ..LoadOptions::default()
    }
    .with_backend(BackendKind::NdArray);
    let err = load_dir(fixture("tiny-window"), &bf16).err().unwrap();
    assert!(matches!(err, GemmaError::UnsupportedDtype { .. }), "{err}");
}

#[test]
fn both_config_dialects_of_the_real_gemma_2_2b_parse_to_the_preset() {
    let mut preset = gemma_model::Gemma2Config::gemma_2_2b();
    for file in [
        "gemma-2-2b.config.json",
        "gemma-2-2b.transformers5.config.json",
    ] {
        let c = gemma_model::Gemma2Config::from_file(fixture("hub-configs").join(file)).unwrap();
        preset.torch_dtype = c.torch_dtype.clone();
        assert_eq!(c, preset, "{file}");
    }
    let it = gemma_model::Gemma2Config::from_file(fixture("hub-configs/gemma-2-2b-it.config.json"))
        .unwrap();
    assert_eq!(it.eos_token_ids, vec![1, 107]);
    assert_eq!(it.torch_dtype.as_deref(), Some("bfloat16"));
}
