//! Golden tests: every fixture made by the reference Python code (`fixtures/crosscoder/generate_fixtures.py`,
//! dictionary_learning at a pinned commit, and plain PyTorch for the ckkissane layout) is loaded through the
//! public API and must reproduce the reference's latents, scaled latents, reconstructions, decoder norms,
//! relative norms, cosine similarities and metrics to 1e-5 relative, on both CPU backends. Every code
//! normalisation of the reference is covered: CROSSCODER, SAE, MIXED (non-default weights) and NONE.

mod common;

use common::{assert_close, fixtures, read_f32};
use crosscoder::{
    Activation, BackendKind, CheckpointFormat, CodeNormalization, Crosscoder, CrosscoderCheckpoint,
    CrosscoderConfig, CrosscoderLoader, DecoderAnalysis, InputNormalizer, RelativeNormThresholds,
    SparseLatents, BASE, CHAT,
};
use ndarray::{Array3, Ix3};

struct Case {
    /// What to hand the loader.
    source: &'static str,
    /// Where `expected.safetensors` is.
    expected_dir: &'static str,
    scaling_factors: Option<Vec<f32>>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            source: "dl_relu",
            expected_dir: "dl_relu",
            scaling_factors: None,
        },
        Case {
            source: "dl_batchtopk",
            expected_dir: "dl_batchtopk",
            scaling_factors: None,
        },
        Case {
            source: "dl_normalizer",
            expected_dir: "dl_normalizer",
            scaling_factors: None,
        },
        Case {
            source: "dl_pt_batchtopk/model_final.pt",
            expected_dir: "dl_pt_batchtopk",
            scaling_factors: None,
        },
        Case {
            source: "dl_pt_compiled/checkpoint_123.pt",
            expected_dir: "dl_pt_compiled",
            scaling_factors: None,
        },
        Case {
            source: "dl_mixed",
            expected_dir: "dl_mixed",
            scaling_factors: None,
        },
        Case {
            source: "dl_none",
            expected_dir: "dl_none",
            scaling_factors: None,
        },
        Case {
            source: "ckkissane/blocks.14.hook_resid_pre",
            expected_dir: "ckkissane/blocks.14.hook_resid_pre",
            scaling_factors: Some(vec![0.37, 1.9]),
        },
    ]
}

fn load(case: &Case, backend: BackendKind) -> Box<dyn Crosscoder> {
    let mut loader =
        CrosscoderLoader::new(fixtures().join(case.source).to_string_lossy()).backend(backend);
    if let Some(f) = &case.scaling_factors {
        loader = loader.scaling_factors(f.clone());
    }
    loader
        .load()
        .unwrap_or_else(|e| panic!("{}: {e}", case.source))
}

fn check_case(case: &Case, backend: BackendKind) {
    let exp = read_f32(
        &fixtures()
            .join(case.expected_dir)
            .join("expected.safetensors"),
    );
    let cc = load(case, backend);
    let x: Array3<f32> = exp["activations"]
        .clone()
        .into_dimensionality::<Ix3>()
        .expect("rank 3");
    let tag = |what: &str| format!("{} [{backend}] {what}", case.source);

    let f = cc.encode(x.view()).expect("encode");
    assert_close(
        &tag("latents"),
        f.as_slice().expect("contiguous"),
        f.shape(),
        &exp["latents"],
    );

    let scaled = cc.encode_scaled(x.view()).expect("encode_scaled");
    assert_close(
        &tag("latents_scaled"),
        scaled.as_slice().expect("contiguous"),
        scaled.shape(),
        &exp["latents_scaled"],
    );

    let out = cc.forward(x.view()).expect("forward");
    assert_eq!(out.latents, f, "forward and encode give the same latents");
    let rec = out.reconstruction;
    assert_close(
        &tag("reconstruction"),
        rec.as_slice().expect("contiguous"),
        rec.shape(),
        &exp["reconstruction"],
    );
    let dec = cc.decode(f.view()).expect("decode");
    assert_close(
        &tag("decode(f)"),
        dec.as_slice().expect("contiguous"),
        dec.shape(),
        &exp["reconstruction"],
    );

    let norms = cc.decoder_norms();
    assert_close(
        &tag("decoder_norms"),
        norms.as_slice().expect("contiguous"),
        norms.shape(),
        &exp["decoder_norms"],
    );
    let w = cc.code_normalization_weights();
    assert_close(
        &tag("code_normalization"),
        w.as_slice().expect("contiguous"),
        w.shape(),
        &exp["code_normalization"],
    );

    let diff = DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default())
        .expect("analysis");
    let r = &diff.relative_norms;
    assert_close(
        &tag("relative_norms"),
        r.as_slice().expect("contiguous"),
        r.shape(),
        &exp["relative_norms"],
    );
    let cos = &diff.cosine_similarity;
    assert_close(
        &tag("cosine_similarity"),
        cos.as_slice().expect("contiguous"),
        cos.shape(),
        &exp["cosine_similarity"],
    );

    let m = cc.evaluate(x.view()).expect("evaluate");
    assert_close(&tag("mse"), &m.mse, &[2], &exp["metrics_mse"]);
    assert_close(&tag("fvu"), &m.fvu, &[2], &exp["metrics_fvu"]);
    assert_close(&tag("l0"), &[m.l0], &[1], &exp["metrics_l0"]);
    assert_close(
        &tag("frac_variance_explained"),
        &[m.frac_variance_explained],
        &[1],
        &exp["metrics_fve"],
    );

    // Sparse top-k: with k = F it is the dense matrix; with small k, the largest values of each row.
    let all = cc.encode_top_k(x.view(), cc.dict_size()).expect("top-k");
    assert_eq!(all.to_dense(), f);
    let top3 = cc.encode_top_k(x.view(), 3).expect("top-k");
    assert_eq!(top3, SparseLatents::from_dense(f.view(), 3));
}

#[test]
fn golden_fixtures_match_the_reference_on_ndarray() {
    for case in cases() {
        check_case(&case, BackendKind::NdArray);
    }
}

#[test]
fn golden_fixtures_match_the_reference_on_flex() {
    for case in cases() {
        check_case(&case, BackendKind::Flex);
    }
}

#[test]
fn fixtures_are_read_with_the_right_settings() {
    let ck = |source: &str| {
        CrosscoderLoader::new(fixtures().join(source).to_string_lossy())
            .load_checkpoint()
            .expect(source)
    };
    let relu = ck("dl_relu");
    assert_eq!(relu.config().activation, Activation::Relu);
    assert_eq!(
        relu.config().code_normalization,
        CodeNormalization::Crosscoder
    );
    assert_eq!(
        (
            relu.config().n_models,
            relu.config().d_model,
            relu.config().dict_size
        ),
        (2, 37, 53)
    );
    assert_eq!(relu.normalizer(), &InputNormalizer::Identity);

    let topk = ck("dl_batchtopk");
    let exp = read_f32(&fixtures().join("dl_batchtopk/expected.safetensors"));
    assert_eq!(
        topk.config().activation,
        Activation::BatchTopK {
            k: 7,
            threshold: exp["threshold"][[0]]
        }
    );

    // config.json says `activation_mean: null`; the buffers in model.safetensors win.
    let norm = ck("dl_normalizer");
    match norm.normalizer() {
        InputNormalizer::MeanStd { target_rms, .. } => assert_eq!(*target_rms, 2.5),
        other => panic!("expected the mean/std normaliser, got {other:?}"),
    }

    let pt = ck("dl_pt_batchtopk/model_final.pt");
    assert_eq!(pt.config().code_normalization, CodeNormalization::Sae);
    assert_eq!(
        pt.config().layer,
        Some(13),
        "layer from the trainer config.json beside the .pt"
    );
    assert_eq!(
        pt.config().hook.map(|h| h.to_string()).as_deref(),
        Some("blocks.13.hook_resid_post")
    );
    assert!(matches!(
        pt.config().activation,
        Activation::BatchTopK { k: 5, .. }
    ));

    let compiled = ck("dl_pt_compiled/checkpoint_123.pt");
    assert_eq!(
        compiled.config().code_normalization,
        CodeNormalization::Crosscoder,
        "missing id => CROSSCODER"
    );

    let mixed = ck("dl_mixed");
    assert_eq!(
        mixed.config().code_normalization,
        CodeNormalization::Mixed {
            alpha_sae: 0.7,
            alpha_cc: 0.4
        }
    );
    let exp = read_f32(&fixtures().join("dl_mixed/expected.safetensors"));
    assert_eq!(
        mixed.config().activation,
        Activation::BatchTopK {
            k: 6,
            threshold: exp["threshold"][[0]]
        }
    );
    assert_eq!(
        ck("dl_none").config().code_normalization,
        CodeNormalization::None
    );

    let kiss = ck("ckkissane/blocks.14.hook_resid_pre");
    assert_eq!(
        kiss.config().hook.map(|h| h.to_string()).as_deref(),
        Some("blocks.14.hook_resid_pre")
    );
    assert_eq!(kiss.config().layer, Some(14));
    assert_eq!(
        kiss.config().models,
        vec!["google/gemma-2-2b", "google/gemma-2-2b-it"]
    );
    // The same weights through the bare .pt file.
    let bare = ck("ckkissane/blocks.14.hook_resid_pre/cc_weights.pt");
    assert_eq!(bare.weights(), kiss.weights());
}

#[test]
fn batch_top_k_never_keeps_a_value_at_or_below_its_threshold() {
    for dir in ["dl_batchtopk", "dl_pt_batchtopk/model_final.pt"] {
        let cc = CrosscoderLoader::new(fixtures().join(dir).to_string_lossy())
            .backend(BackendKind::NdArray)
            .load()
            .expect(dir);
        let Activation::BatchTopK { threshold, .. } = cc.config().activation else {
            panic!("{dir} is not BatchTopK")
        };
        let exp_dir = dir.split('/').next().unwrap_or(dir);
        let exp = read_f32(&fixtures().join(exp_dir).join("expected.safetensors"));
        let x: Array3<f32> = exp["activations"]
            .clone()
            .into_dimensionality::<Ix3>()
            .expect("rank 3");
        let scaled = cc.encode_scaled(x.view()).expect("encode");
        let kept = scaled.iter().filter(|v| **v != 0.0).count();
        assert!(kept > 0, "{dir}: the threshold keeps some latents");
        assert!(
            scaled.iter().all(|v| *v == 0.0 || *v > threshold),
            "{dir}: a kept scaled value is <= {threshold}"
        );
        assert_eq!(
            kept,
            exp["latents"].iter().filter(|v| **v > 0.0).count(),
            "{dir}: as many as the reference keeps"
        );
        // And the threshold really drops some: the same weights with a plain ReLU keep more.
        let ckpt = cc.to_checkpoint().expect("to_checkpoint");
        let (config, weights, normalizer) = ckpt.into_parts();
        let relu = CrosscoderCheckpoint::new(
            CrosscoderConfig {
                activation: Activation::Relu,
                ..config
            },
            weights,
            normalizer,
        )
        .expect("relu")
        .build(BackendKind::NdArray)
        .expect("build");
        let relu_kept = relu
            .encode(x.view())
            .expect("encode")
            .iter()
            .filter(|v| **v > 0.0)
            .count();
        assert!(
            relu_kept > kept,
            "{dir}: ReLU keeps {relu_kept}, BatchTopK {kept}"
        );
    }
}

#[test]
fn saving_in_our_format_round_trips_every_fixture() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for case in cases() {
        let mut loader = CrosscoderLoader::new(fixtures().join(case.source).to_string_lossy());
        if let Some(f) = &case.scaling_factors {
            loader = loader.scaling_factors(f.clone());
        }
        let ckpt = loader.load_checkpoint().expect(case.source);
        let dir = tmp.path().join(case.expected_dir.replace('/', "_"));
        ckpt.save(&dir).expect("save");
        let back = CrosscoderLoader::new(dir.to_string_lossy())
            .load_checkpoint()
            .expect("load ours");
        assert_eq!(back, ckpt, "{}: directory round trip", case.source);
        assert_eq!(back.config(), ckpt.config());
        let file = CrosscoderLoader::new(dir.join("crosscoder.safetensors").to_string_lossy())
            .load_checkpoint()
            .expect("load file");
        assert_eq!(
            file, ckpt,
            "{}: bare safetensors round trip (embedded config)",
            case.source
        );
        // The rebuilt model computes the same thing.
        let exp = read_f32(
            &fixtures()
                .join(case.expected_dir)
                .join("expected.safetensors"),
        );
        let x: Array3<f32> = exp["activations"]
            .clone()
            .into_dimensionality::<Ix3>()
            .expect("rank 3");
        let cc = back.build(BackendKind::NdArray).expect("build");
        let f = cc.encode(x.view()).expect("encode");
        assert_close(
            &format!("{} (ours) latents", case.source),
            f.as_slice().expect("contiguous"),
            f.shape(),
            &exp["latents"],
        );
        // And the device copy reads back bit-exactly.
        assert_eq!(cc.to_checkpoint().expect("to_checkpoint"), ckpt);
    }
}

#[test]
fn formats_are_detected() {
    use crosscoder::formats::ours;
    let detect = |p: &str| {
        let path = fixtures().join(p);
        let ckpt = CrosscoderLoader::new(path.to_string_lossy())
            .load_checkpoint()
            .expect(p);
        ckpt.config().source.clone().unwrap_or_default()
    };
    assert!(detect("dl_relu").starts_with("dictionary_learning CrossCoder"));
    assert!(detect("dl_relu/model.safetensors").starts_with("dictionary_learning CrossCoder"));
    assert!(detect("dl_pt_batchtopk").starts_with("dictionary_learning BatchTopKCrossCoder"));
    assert!(detect("ckkissane/blocks.14.hook_resid_pre").starts_with("ckkissane"));
    assert_eq!(ours::CONFIG_FILE, "crosscoder_config.json");
    assert_eq!(CheckpointFormat::Ckkissane.to_string(), "ckkissane");
}

#[test]
fn decoder_and_encoder_vectors_are_the_checkpoint_rows() {
    let ckpt = CrosscoderLoader::new(fixtures().join("dl_relu").to_string_lossy())
        .load_checkpoint()
        .expect("load");
    let w = ckpt.weights().clone();
    for backend in [BackendKind::NdArray, BackendKind::Flex] {
        let cc = ckpt.clone().build(backend).expect("build");
        let dv = cc.decoder_vectors(&[52, 0, 7]).expect("decoder vectors");
        assert_eq!(dv.dim(), (3, 2, 37));
        for (i, j) in [52usize, 0, 7].into_iter().enumerate() {
            for m in 0..2 {
                assert_eq!(
                    dv.slice(ndarray::s![i, m, ..]),
                    w.w_dec.slice(ndarray::s![m, j, ..])
                );
            }
        }
        let ev = cc.encoder_vectors(&[3]).expect("encoder vectors");
        for m in 0..2 {
            assert_eq!(
                ev.slice(ndarray::s![0, m, ..]),
                w.w_enc.slice(ndarray::s![m, .., 3])
            );
        }
        assert_eq!(cc.decoder_bias(), w.b_dec);
        assert!(cc.decoder_vectors(&[53]).is_err());
        assert_eq!(cc.decoder_vectors(&[]).expect("empty").dim(), (0, 2, 37));
    }
}

#[test]
fn a_training_directory_without_model_final_loads_its_latest_checkpoint() {
    let fixture = fixtures().join("dl_pt_compiled");
    let from_file = CrosscoderLoader::new(fixture.join("checkpoint_123.pt").to_string_lossy())
        .load_checkpoint()
        .expect("file");
    let from_dir = CrosscoderLoader::new(fixture.to_string_lossy())
        .load_checkpoint()
        .expect("directory");
    assert_eq!(from_dir.weights(), from_file.weights());

    // Steps compare as numbers: 1000 is later than 999 (which would win as text, and is not a checkpoint).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixture.join("checkpoint_123.pt"),
        dir.path().join("checkpoint_1000.pt"),
    )
    .expect("copy");
    std::fs::write(dir.path().join("checkpoint_999.pt"), b"not a checkpoint").expect("write");
    std::fs::write(dir.path().join("checkpoint_final.pt"), b"no step").expect("write");
    let latest = CrosscoderLoader::new(dir.path().to_string_lossy())
        .load_checkpoint()
        .expect("the latest checkpoint");
    assert_eq!(latest.weights(), from_file.weights());
}
