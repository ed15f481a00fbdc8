//! The relative-norm histogram is written as a PNG of the requested size, with the embedded font.

mod common;

use common::fixtures;
use crosscoder::{
    relative_norm_histogram, BackendKind, CrosscoderLoader, DecoderAnalysis, HistogramOptions,
    LatentClass, RelativeNormThresholds, BASE, CHAT,
};

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[test]
fn histogram_of_the_fixture_decoder() {
    let cc = CrosscoderLoader::new(fixtures().join("dl_relu").to_string_lossy())
        .backend(BackendKind::NdArray)
        .load()
        .expect("load");
    let diff = DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default())
        .expect("analysis");
    // The fixture's decoder (generate_fixtures.py): latent 0 decodes only into the base model, latent 3
    // only into the chat model, latents 6-8 equally into both along the same direction.
    assert_eq!(diff.classes[0], LatentClass::BaseOnly);
    assert_eq!(diff.classes[3], LatentClass::ChatOnly);
    for j in 6..9 {
        assert_eq!(diff.classes[j], LatentClass::Shared, "latent {j}");
        assert!((diff.cosine_similarity[j] - 1.0).abs() < 1e-5);
    }
    assert!((diff.cosine_similarity[9] + 1.0).abs() < 1e-5);
    let c = diff.counts();
    assert_eq!(c.shared + c.base_only + c.chat_only + c.other, 53);
    assert!(diff.latents_of(LatentClass::ChatOnly).contains(&3));
    assert!(diff.latents_of(LatentClass::BaseOnly).contains(&0));

    let tmp = tempfile::tempdir().expect("tempdir");
    let png = tmp.path().join("relative_norms.png");
    let r: Vec<f32> = diff.relative_norms.to_vec();
    for log_y in [false, true] {
        let opts = HistogramOptions {
            bins: 37,
            width: 640,
            height: 400,
            log_y,
            ..HistogramOptions::default()
        };
        let counts = relative_norm_histogram(&r, &png, &opts).expect("plot");
        assert_eq!(counts.len(), 37);
        assert_eq!(counts.iter().sum::<usize>(), 53);
        let bytes = std::fs::read(&png).expect("png");
        assert_eq!(png_size(&bytes), (640, 400));
    }
    let bad = HistogramOptions {
        bins: 0,
        ..HistogramOptions::default()
    };
    assert!(relative_norm_histogram(&r, &png, &bad).is_err());
}

/// The demo's committed `relative_norms.png` (written by `train_crosscoder`) is redrawn byte for byte from
/// the committed crosscoder: the figure code is deterministic and has not drifted.
#[test]
fn the_demo_histogram_is_redrawn_byte_for_byte() {
    let demo = fixtures().join("../demo/crosscoder");
    let cc = CrosscoderLoader::new(demo.to_string_lossy())
        .backend(BackendKind::Flex)
        .load()
        .expect("the demo crosscoder");
    let diff = DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default())
        .expect("analysis");
    let tmp = tempfile::tempdir().expect("tempdir");
    let png = tmp.path().join("relative_norms.png");
    let options = HistogramOptions {
        title: "Relative decoder norm, l1".into(),
        thresholds: Some(RelativeNormThresholds::default()),
        ..HistogramOptions::default()
    };
    relative_norm_histogram(&diff.relative_norms.to_vec(), &png, &options).expect("plot");
    assert!(
        std::fs::read(&png).unwrap() == std::fs::read(demo.join("relative_norms.png")).unwrap(),
        "the redrawn histogram differs from fixtures/demo/crosscoder/relative_norms.png"
    );
}
