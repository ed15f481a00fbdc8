//! Typed errors: malicious pickles, checkpoints whose shapes disagree with their config, unknown classes,
//! unsupported code normalisations, NaN weights, activations of the wrong shape (before any compute).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::fixtures;
use crosscoder::{
    BackendKind, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderError, CrosscoderLoader,
    CrosscoderWeights, InputNormalizer,
};
use ndarray::{Array1, Array2, Array3};
use safetensors::tensor::{Dtype, TensorView};

fn load_err(path: &Path) -> CrosscoderError {
    match CrosscoderLoader::new(path.to_string_lossy()).load_checkpoint() {
        Ok(_) => panic!("{} loaded, expected an error", path.display()),
        Err(e) => e,
    }
}

/// Copies the dl_relu fixture (config.json + model.safetensors) into `dir`, letting the caller edit the
/// config and the tensors.
fn dl_variant(
    dir: &Path,
    edit_config: impl FnOnce(&mut serde_json::Value),
    edit_tensors: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let src = fixtures().join("dl_relu");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("read"))
            .expect("json");
    edit_config(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("write");
    let bytes = std::fs::read(src.join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit_tensors(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (dt, shape, data))| {
            (
                k.clone(),
                TensorView::new(*dt, shape.clone(), data).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).expect("write");
}

fn scalar_i64(v: i64) -> (Dtype, Vec<usize>, Vec<u8>) {
    (Dtype::I64, vec![], v.to_le_bytes().to_vec())
}

#[test]
fn a_pickle_that_would_run_code_is_refused() {
    match load_err(&fixtures().join("malicious.pt")) {
        CrosscoderError::ForbiddenPickleGlobal { module, name, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("posix", "system"));
        }
        other => panic!("expected ForbiddenPickleGlobal, got {other}"),
    }
}

#[test]
fn a_file_that_is_not_a_torch_zip_is_a_typed_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("legacy.pt");
    std::fs::write(&p, b"\x80\x02not a zip").expect("write");
    assert!(matches!(load_err(&p), CrosscoderError::Pickle { .. }));
}

#[test]
fn config_disagreeing_with_tensor_shapes_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bad_dict_size");
    dl_variant(&dir, |c| c["dict_size"] = 64.into(), |_| {});
    match load_err(&dir) {
        CrosscoderError::ConfigMismatch { field, config, .. } => {
            assert_eq!(field, "dict_size");
            assert_eq!(config, "64");
        }
        other => panic!("expected ConfigMismatch, got {other}"),
    }
}

#[test]
fn tensors_disagreeing_with_each_other_are_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bad_bias");
    dl_variant(
        &dir,
        |_| {},
        |t| {
            let bias = t.get_mut("encoder.bias").expect("bias");
            bias.1 = vec![52];
            bias.2.truncate(52 * 4);
        },
    );
    match load_err(&dir) {
        CrosscoderError::ShapeMismatch { key, actual, .. } => {
            // Named as the file names it.
            assert_eq!(key, "encoder.bias");
            assert_eq!(actual, vec![52]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn an_unknown_class_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("unknown_class");
    dl_variant(
        &dir,
        |c| c["dict_class"] = "JumpReluCrossCoder".into(),
        |_| {},
    );
    match load_err(&dir) {
        CrosscoderError::UnknownDictClass { class, .. } => assert_eq!(class, "JumpReluCrossCoder"),
        other => panic!("expected UnknownDictClass, got {other}"),
    }
}

#[test]
fn decoupled_code_normalisation_is_unsupported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("decoupled");
    dl_variant(
        &dir,
        |c| c["code_normalization"] = "DECOUPLED".into(),
        |t| {
            t.insert("code_normalization_id".into(), scalar_i64(5));
        },
    );
    assert!(
        matches!(
            load_err(&dir),
            CrosscoderError::UnsupportedCodeNormalization { .. }
        ),
        "{}",
        load_err(&dir)
    );
    // An id the reference does not know either.
    let dir = tmp.path().join("id9");
    dl_variant(
        &dir,
        |c| c["code_normalization"] = serde_json::Value::Null,
        |t| {
            t.insert("code_normalization_id".into(), scalar_i64(9));
        },
    );
    assert!(matches!(
        load_err(&dir),
        CrosscoderError::UnsupportedCodeNormalization { .. }
    ));
}

#[test]
fn config_and_buffer_disagreeing_on_code_normalisation_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cn_mismatch");
    dl_variant(&dir, |c| c["code_normalization"] = "SAE".into(), |_| {});
    assert!(matches!(
        load_err(&dir),
        CrosscoderError::ConfigMismatch { .. }
    ));
}

#[test]
fn nan_in_weights_is_an_error_naming_the_tensor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nan");
    dl_variant(
        &dir,
        |_| {},
        |t| {
            let w = t.get_mut("decoder.weight").expect("decoder");
            w.2[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
        },
    );
    // Named as the user's file names it (not our internal `W_dec`), with the file.
    let err = load_err(&dir);
    let message = err.to_string();
    match err {
        CrosscoderError::NonFiniteWeight {
            key, index, value, ..
        } => {
            assert_eq!(key, "decoder.weight");
            assert_eq!(index, 10);
            assert!(value.is_nan());
        }
        other => panic!("expected NonFiniteWeight, got {other}"),
    }
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn partly_nan_normaliser_buffers_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("half_nan");
    dl_variant(
        &dir,
        |_| {},
        |t| {
            let mean = t.get_mut("activation_mean").expect("mean");
            let mut values: Vec<u8> = (0..mean.2.len() / 4)
                .flat_map(|_| 0.5f32.to_le_bytes())
                .collect();
            values[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
            mean.2 = values;
            let std = t.get_mut("activation_std").expect("std");
            std.2 = (0..std.2.len() / 4)
                .flat_map(|_| 1.0f32.to_le_bytes())
                .collect();
        },
    );
    assert!(matches!(
        load_err(&dir),
        CrosscoderError::NonFiniteWeight { .. }
    ));
}

#[test]
fn a_missing_tensor_names_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("missing");
    dl_variant(
        &dir,
        |_| {},
        |t| {
            t.remove("decoder.bias");
        },
    );
    match load_err(&dir) {
        CrosscoderError::MissingTensor { key, available, .. } => {
            assert_eq!(key, "decoder.bias");
            assert!(available.contains("encoder.weight"));
        }
        other => panic!("expected MissingTensor, got {other}"),
    }
}

#[test]
fn batch_top_k_class_without_its_buffers_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("topk_no_threshold");
    dl_variant(
        &dir,
        |c| c["dict_class"] = "BatchTopKCrossCoder".into(),
        |_| {},
    );
    assert!(matches!(
        load_err(&dir),
        CrosscoderError::ConfigMismatch { .. }
    ));
}

#[test]
fn unrecognised_directories_and_missing_paths_are_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        load_err(tmp.path()),
        CrosscoderError::UnrecognizedFormat { .. }
    ));
    assert!(matches!(
        load_err(&tmp.path().join("nope.pt")),
        CrosscoderError::Io { .. }
    ));
}

fn tiny(n: usize, d: usize, f: usize) -> CrosscoderCheckpoint {
    let w = CrosscoderWeights {
        w_enc: Array3::from_elem((n, d, f), 0.1),
        b_enc: Array1::zeros(f),
        w_dec: Array3::from_elem((n, f, d), 0.1),
        b_dec: Array2::zeros((n, d)),
    };
    CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(n, d, f),
        w,
        InputNormalizer::Identity,
    )
    .expect("valid")
}

#[test]
fn activations_of_the_wrong_shape_are_refused_before_compute() {
    let cc = tiny(2, 5, 7).build(BackendKind::NdArray).expect("build");
    for shape in [(3, 2, 6), (3, 1, 5), (3, 3, 5)] {
        match cc.encode(Array3::zeros(shape).view()) {
            Err(CrosscoderError::ActivationShape {
                n_models: 2,
                d_model: 5,
                actual,
            }) => {
                assert_eq!(actual, vec![shape.0, shape.1, shape.2]);
            }
            other => panic!("expected ActivationShape, got {other:?}"),
        }
        assert!(cc.forward(Array3::zeros(shape).view()).is_err());
        assert!(cc.encode_top_k(Array3::zeros(shape).view(), 2).is_err());
        assert!(cc.evaluate(Array3::zeros(shape).view()).is_err());
    }
    assert!(matches!(
        cc.decode(Array2::zeros((3, 8)).view()),
        Err(CrosscoderError::LatentShape { dict_size: 7, .. })
    ));
    assert!(matches!(
        cc.decoder_cosine_similarity(0, 2),
        Err(CrosscoderError::ModelIndex { index: 2, .. })
    ));
    // Zero rows are fine.
    assert_eq!(
        cc.encode(Array3::zeros((0, 2, 5)).view())
            .expect("empty")
            .dim(),
        (0, 7)
    );
}

#[test]
fn malformed_weights_and_scaling_factors_are_refused() {
    let w = CrosscoderWeights {
        w_enc: Array3::zeros((2, 5, 7)),
        b_enc: Array1::zeros(6),
        w_dec: Array3::zeros((2, 7, 5)),
        b_dec: Array2::zeros((2, 5)),
    };
    assert!(matches!(
        CrosscoderCheckpoint::new(
            CrosscoderConfig::relu(2, 5, 7),
            w,
            InputNormalizer::Identity
        ),
        Err(CrosscoderError::ShapeMismatch { .. })
    ));
    let ck = tiny(2, 5, 7);
    assert!(matches!(
        ck.clone().with_scaling_factors(vec![1.0]),
        Err(CrosscoderError::ScalingFactors { .. })
    ));
    assert!(matches!(
        ck.clone().with_scaling_factors(vec![1.0, 0.0]),
        Err(CrosscoderError::ScalingFactors { .. })
    ));
    assert!(matches!(
        ck.clone().with_scaling_factors(vec![1.0, f32::NAN]),
        Err(CrosscoderError::ScalingFactors { .. })
    ));
    let norm = CrosscoderLoader::new(fixtures().join("dl_normalizer").to_string_lossy())
        .scaling_factors(vec![1.0, 2.0])
        .load_checkpoint();
    assert!(matches!(norm, Err(CrosscoderError::NormalizerConflict(_))));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_typed_error() {
    assert!(matches!(
        tiny(2, 3, 4).build(BackendKind::Cuda),
        Err(CrosscoderError::Backend(_))
    ));
}

/// Copies a fixture directory (files only) into `dir`.
fn copy_dir(src: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
    }
}

/// Rewrites one field of a JSON file.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(path, v.to_string()).expect("write");
}

#[test]
fn ckkissane_cfg_disagreeing_with_the_weights_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (field, value) in [("d_in", 36), ("dict_size", 54)] {
        let dir = tmp.path().join(field);
        copy_dir(&fixtures().join("ckkissane/blocks.14.hook_resid_pre"), &dir);
        edit_json(&dir.join("cfg.json"), |c| c[field] = value.into());
        match load_err(&dir) {
            CrosscoderError::ConfigMismatch {
                path,
                field: f,
                config,
                ..
            } => {
                assert_eq!(path, dir.join("cfg.json"));
                assert_eq!((f.as_str(), config), (field, value.to_string()));
            }
            other => panic!("{field}: expected ConfigMismatch, got {other}"),
        }
    }
}

#[test]
fn a_hook_name_that_is_not_a_hook_is_an_error_naming_the_file_and_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("kiss");
    copy_dir(&fixtures().join("ckkissane/blocks.14.hook_resid_pre"), &dir);
    edit_json(&dir.join("cfg.json"), |c| {
        c["hook_point"] = "blocks.14.hook_resid".into()
    });
    match load_err(&dir) {
        CrosscoderError::UnknownHook { path, field, name } => {
            assert_eq!(path, dir.join("cfg.json"));
            assert_eq!(
                (field.as_str(), name.as_str()),
                ("hook_point", "blocks.14.hook_resid")
            );
        }
        other => panic!("expected UnknownHook, got {other}"),
    }
    // Our own format stores the hook by name and refuses a broken one when it is read.
    let ours = tmp.path().join("ours");
    tiny(2, 5, 7).save(&ours).expect("save");
    let config_file = ours.join(crosscoder::formats::ours::CONFIG_FILE);
    edit_json(&config_file, |c| {
        c["hook"] = "blocks.1.hook_resid_post".into()
    });
    crosscoder::load(ours.to_string_lossy()).expect("a valid hook loads");
    edit_json(&config_file, |c| c["hook"] = "layer 1".into());
    let err = match crosscoder::load(ours.to_string_lossy()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a broken hook name was accepted"),
    };
    assert!(err.contains("layer 1"), "{err}");
}

#[test]
fn our_format_refuses_a_config_that_disagrees_with_its_tensors_or_a_newer_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let original = tmp.path().join("ours");
    tiny(2, 5, 7).save(&original).expect("save");
    let config_file = crosscoder::formats::ours::CONFIG_FILE;

    let wider = tmp.path().join("wider");
    copy_dir(&original, &wider);
    edit_json(&wider.join(config_file), |c| c["dict_size"] = 8.into());
    let err = load_err(&wider);
    assert!(
        matches!(
            err,
            CrosscoderError::ConfigMismatch { .. } | CrosscoderError::ShapeMismatch { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains('7') && err.to_string().contains('8'),
        "{err}"
    );

    let newer = tmp.path().join("newer");
    copy_dir(&original, &newer);
    edit_json(&newer.join(config_file), |c| c["format_version"] = 2.into());
    match load_err(&newer) {
        CrosscoderError::UnrecognizedFormat { path, reason } => {
            assert_eq!(path, newer.join(config_file));
            assert!(reason.contains("version 2"), "{reason}");
        }
        other => panic!("expected UnrecognizedFormat, got {other}"),
    }
}
