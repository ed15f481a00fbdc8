//! The `encode` example's file contract (`crosscoder::encode_file`): the golden fixtures' activations go
//! through a file, chunked encoding and the output file, and every tensor written under its stable name
//! must equal what the reference Python code computed. Bad input files are typed errors naming the file.

mod common;

use std::path::Path;

use common::{assert_close, fixtures, read_f32};
use crosscoder::encode_file::{
    encode_in_chunks, read_activations, write_encoded, ACTIVATIONS, DECODER_NORMS, LATENTS,
    RECONSTRUCTION,
};
use crosscoder::{BackendKind, CrosscoderError, CrosscoderLoader};
use safetensors::tensor::{Dtype, TensorView};

fn write_tensor(path: &Path, name: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) {
    let view = TensorView::new(dtype, shape.to_vec(), bytes).expect("view");
    safetensors::serialize_to_file([(name, view)], None, path).expect("write");
}

/// Reads a fixture's activations from its file, encodes them 7 rows at a time (29 rows: the last
/// chunk is short), writes the output file and compares each output tensor with the reference.
fn round_trip(source: &str, expected_dir: &str, scaling: Option<Vec<f32>>, backend: BackendKind) {
    let expected_file = fixtures().join(expected_dir).join("expected.safetensors");
    let exp = read_f32(&expected_file);
    let mut loader =
        CrosscoderLoader::new(fixtures().join(source).to_string_lossy()).backend(backend);
    if let Some(f) = scaling {
        loader = loader.scaling_factors(f);
    }
    let cc = loader.load().expect("load");

    // The reference's expected file carries the input under the same name the example reads.
    let x = read_activations(&expected_file).expect("activations");
    assert_eq!(x.shape(), exp["activations"].shape());

    let mut progress = Vec::new();
    let encoded =
        encode_in_chunks(cc.as_ref(), x.view(), 7, |done| progress.push(done)).expect("encode");
    assert_eq!(progress, [7, 14, 21, 28, 29]);

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.safetensors");
    write_encoded(&out, &encoded, cc.decoder_norms()).expect("write");
    let written = read_f32(&out);
    let mut names: Vec<&str> = written.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, [DECODER_NORMS, LATENTS, RECONSTRUCTION]);

    let tag = |what: &str| format!("{source} [{backend}] {what}");
    for (name, expected) in [
        (LATENTS, "latents"),
        (RECONSTRUCTION, "reconstruction"),
        (DECODER_NORMS, "decoder_norms"),
    ] {
        let a = &written[name];
        assert_close(
            &tag(name),
            a.as_slice().expect("contiguous"),
            a.shape(),
            &exp[expected],
        );
    }
    let m = &encoded.metrics;
    assert_close(&tag("mse"), &m.mse, &[2], &exp["metrics_mse"]);
    assert_close(&tag("fvu"), &m.fvu, &[2], &exp["metrics_fvu"]);
    assert_close(&tag("l0"), &[m.l0], &[1], &exp["metrics_l0"]);
    let fired_in_reference = exp["latents"]
        .columns()
        .into_iter()
        .filter(|c| c.iter().any(|v| *v > 0.0))
        .count();
    assert_eq!(encoded.activity.alive_count(), fired_in_reference);
}

#[test]
fn encoded_files_match_the_reference_on_both_cpu_backends() {
    for backend in [BackendKind::Flex, BackendKind::NdArray] {
        round_trip("dl_batchtopk", "dl_batchtopk", None, backend);
        round_trip("dl_normalizer", "dl_normalizer", None, backend);
        round_trip(
            "ckkissane/blocks.14.hook_resid_pre",
            "ckkissane/blocks.14.hook_resid_pre",
            Some(vec![0.37, 1.9]),
            backend,
        );
    }
}

#[test]
fn bad_activation_files_are_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");

    let missing = dir.path().join("absent.safetensors");
    match read_activations(&missing) {
        Err(CrosscoderError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io, got {other:?}"),
    }

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").expect("write");
    match read_activations(&garbage) {
        Err(CrosscoderError::Safetensors { path, .. }) => assert_eq!(path, garbage),
        other => panic!("expected Safetensors, got {other:?}"),
    }

    let wrong_name = dir.path().join("wrong_name.safetensors");
    write_tensor(&wrong_name, "acts", Dtype::F32, &[1, 2, 1], &[0; 8]);
    match read_activations(&wrong_name) {
        Err(e @ CrosscoderError::MissingTensor { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(ACTIVATIONS) && msg.contains("acts"), "{msg}");
            assert!(msg.contains("wrong_name.safetensors"), "{msg}");
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    let rank2 = dir.path().join("rank2.safetensors");
    write_tensor(&rank2, ACTIVATIONS, Dtype::F32, &[2, 3], &[0; 24]);
    match read_activations(&rank2) {
        Err(CrosscoderError::ShapeMismatch { key, actual, .. }) => {
            assert_eq!(key, ACTIVATIONS);
            assert_eq!(actual, [2, 3]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }

    let nan = dir.path().join("nan.safetensors");
    let mut values = [0.5f32; 8];
    values[5] = f32::NAN; // row 1, model 0, dimension 1 of [2, 2, 2]
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_tensor(&nan, ACTIVATIONS, Dtype::F32, &[2, 2, 2], &bytes);
    match read_activations(&nan) {
        Err(e @ CrosscoderError::NonFiniteActivation { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("nan.safetensors"), "{msg}");
            assert!(msg.contains("row 1, model 0, dimension 1"), "{msg}");
        }
        other => panic!("expected NonFiniteActivation, got {other:?}"),
    }

    let ints = dir.path().join("ints.safetensors");
    write_tensor(&ints, ACTIVATIONS, Dtype::I64, &[1, 2, 1], &[0; 16]);
    match read_activations(&ints) {
        Err(CrosscoderError::UnsupportedDtype { key, .. }) => assert_eq!(key, ACTIVATIONS),
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}

#[test]
fn activations_that_do_not_fit_the_crosscoder_are_refused_before_compute() {
    let cc = CrosscoderLoader::new(fixtures().join("dl_relu").to_string_lossy())
        .load()
        .expect("load");
    let (n, d) = (cc.n_models(), cc.d_model());
    let mut calls = 0;
    for shape in [(4, n, d + 1), (4, n + 1, d)] {
        let x = ndarray::Array3::<f32>::zeros(shape);
        match encode_in_chunks(cc.as_ref(), x.view(), 2, |_| calls += 1) {
            Err(CrosscoderError::ActivationShape { actual, .. }) => {
                assert_eq!(actual, [shape.0, shape.1, shape.2]);
            }
            other => panic!("expected ActivationShape, got {other:?}"),
        }
    }
    assert_eq!(calls, 0, "no chunk ran");
    let x = ndarray::Array3::<f32>::zeros((4, n, d));
    assert!(matches!(
        encode_in_chunks(cc.as_ref(), x.view(), 0, |_| {}),
        Err(CrosscoderError::InvalidOption(_))
    ));
}
