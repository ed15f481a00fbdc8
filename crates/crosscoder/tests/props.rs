//! Properties over random crosscoders: encode is row-independent, latents are non-negative, decode is affine
//! in f, save/load round-trips exactly, BatchTopK never keeps a value at or below its threshold.

use crosscoder::{
    Activation, BackendKind, CodeNormalization, CrosscoderCheckpoint, CrosscoderConfig,
    CrosscoderLoader, CrosscoderWeights, InputNormalizer,
};
use ndarray::{s, Array1, Array2, Array3};
use proptest::prelude::*;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    crosscoder::throughput::uniform(len, seed, 1.0)
}

#[derive(Debug, Clone)]
struct Spec {
    n: usize,
    d: usize,
    f: usize,
    seed: u64,
    activation: u8,
    code_norm: u8,
    normalizer: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1usize..=3,
        1usize..=9,
        1usize..=13,
        any::<u64>(),
        0u8..2,
        0u8..4,
        0u8..3,
    )
        .prop_map(|(n, d, f, seed, activation, code_norm, normalizer)| Spec {
            n,
            d,
            f,
            seed,
            activation,
            code_norm,
            normalizer,
        })
}

fn checkpoint(s: &Spec) -> CrosscoderCheckpoint {
    let (n, d, f) = (s.n, s.d, s.f);
    let weights = CrosscoderWeights {
        w_enc: Array3::from_shape_vec((n, d, f), values(n * d * f, s.seed)).expect("shape"),
        b_enc: Array1::from_vec(values(f, s.seed ^ 1)) * 0.3,
        w_dec: Array3::from_shape_vec((n, f, d), values(n * d * f, s.seed ^ 2)).expect("shape"),
        b_dec: Array2::from_shape_vec((n, d), values(n * d, s.seed ^ 3)).expect("shape"),
    };
    let code_normalization = match s.code_norm {
        0 => CodeNormalization::Crosscoder,
        1 => CodeNormalization::Sae,
        2 => CodeNormalization::Mixed {
            alpha_sae: 1.0,
            alpha_cc: 0.1,
        },
        _ => CodeNormalization::None,
    };
    let activation = match s.activation {
        0 => Activation::Relu,
        _ => Activation::BatchTopK {
            k: 3,
            threshold: values(1, s.seed ^ 4)[0].abs() * 0.5,
        },
    };
    let normalizer = match s.normalizer {
        0 => InputNormalizer::Identity,
        1 => InputNormalizer::ScalingFactors(
            values(n, s.seed ^ 5)
                .iter()
                .map(|v| 0.5 + v.abs())
                .collect(),
        ),
        _ => InputNormalizer::mean_std(
            Array2::from_shape_vec((n, d), values(n * d, s.seed ^ 6)).expect("shape"),
            Array2::from_shape_vec((n, d), values(n * d, s.seed ^ 7))
                .expect("shape")
                .mapv(|v| 0.5 + v.abs()),
            1.5,
        ),
    };
    let config = CrosscoderConfig {
        activation,
        code_normalization,
        models: (0..n).map(|m| format!("model-{m}")).collect(),
        hook: Some(stereo_core::hook::HookPoint::ResidPost(3)),
        layer: Some(3),
        source: Some("proptest".into()),
        ..CrosscoderConfig::relu(n, d, f)
    };
    CrosscoderCheckpoint::new(config, weights, normalizer).expect("valid")
}

fn activations(rows: usize, s: &Spec, seed: u64) -> Array3<f32> {
    Array3::from_shape_vec((rows, s.n, s.d), values(rows * s.n * s.d, seed)).expect("shape") * 2.0
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-5 * (scale + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_affine_pre_activation_is_what_encode_activates(s in spec(), rows in 1usize..12, xseed in any::<u64>(), flex in any::<bool>()) {
        let backend = if flex { BackendKind::Flex } else { BackendKind::NdArray };
        let cc = checkpoint(&s).build(backend).expect("build");
        let x = activations(rows, &s, xseed);
        let latents: Vec<usize> = (0..s.f).rev().collect();
        let (w, b) = cc.pre_activation_affine(&latents).expect("affine");
        prop_assert_eq!(w.dim(), (s.f, s.n, s.d));
        let encoded = cc.encode(x.view()).expect("encode");
        for r in 0..rows {
            for (i, &j) in latents.iter().enumerate() {
                let pre: f32 = b[i] + (0..s.n).map(|m| x.slice(s![r, m, ..]).dot(&w.slice(s![i, m, ..]))).sum::<f32>();
                let want = encoded[[r, j]];
                // BatchTopK zeroes small codes: where it keeps one, the code is the ReLU'd pre-activation.
                if matches!(cc.config().activation, Activation::Relu) || want > 0.0 {
                    let scale = 1.0 + pre.abs();
                    prop_assert!((pre.max(0.0) - want).abs() <= 1e-4 * scale, "row {} latent {}: {} vs {}", r, j, pre, want);
                }
            }
        }
    }

    #[test]
    fn encode_is_row_independent_and_non_negative(s in spec(), rows in 1usize..20, xseed in any::<u64>(), flex in any::<bool>()) {
        let backend = if flex { BackendKind::Flex } else { BackendKind::NdArray };
        let cc = checkpoint(&s).build(backend).expect("build");
        let x = activations(rows, &s, xseed);
        let batch = cc.encode(x.view()).expect("encode");
        prop_assert!(batch.iter().all(|v| *v >= 0.0));
        let scale = batch.iter().fold(0f32, |m, v| m.max(v.abs()));
        for r in 0..rows {
            let one = cc.encode(x.slice(s![r..r + 1, .., ..])).expect("encode row");
            for (a, b) in one.iter().zip(batch.row(r)) {
                prop_assert!(close(*a, *b, scale), "row {r}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn decode_is_affine_in_f(s in spec(), rows in 1usize..8, fseed in any::<u64>(), alpha in -2.0f32..2.0) {
        let cc = checkpoint(&s).build(BackendKind::NdArray).expect("build");
        let f1 = Array2::from_shape_vec((rows, s.f), values(rows * s.f, fseed)).expect("shape");
        let f2 = Array2::from_shape_vec((rows, s.f), values(rows * s.f, fseed ^ 9)).expect("shape");
        let mix = &f1 * alpha + &f2 * (1.0 - alpha);
        let lhs = cc.decode(mix.view()).expect("decode");
        let rhs = cc.decode(f1.view()).expect("decode") * alpha + cc.decode(f2.view()).expect("decode") * (1.0 - alpha);
        let scale = rhs.iter().chain(lhs.iter()).fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in lhs.iter().zip(rhs.iter()) {
            prop_assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn save_then_load_round_trips_exactly(s in spec()) {
        let ckpt = checkpoint(&s);
        let tmp = tempfile::tempdir().expect("tempdir");
        ckpt.save(tmp.path()).expect("save");
        let back = CrosscoderLoader::new(tmp.path().to_string_lossy()).load_checkpoint().expect("load");
        prop_assert_eq!(&back, &ckpt);
        prop_assert_eq!(back.config(), ckpt.config());
        // Through a backend and back, too.
        let dev = ckpt.clone().build(BackendKind::Flex).expect("build").to_checkpoint().expect("read back");
        prop_assert_eq!(&dev, &ckpt);
    }

    #[test]
    fn batch_top_k_never_keeps_a_value_at_or_below_its_threshold(mut s in spec(), rows in 1usize..16, xseed in any::<u64>()) {
        s.activation = 1;
        let cc = checkpoint(&s).build(BackendKind::NdArray).expect("build");
        let Activation::BatchTopK { threshold, .. } = cc.config().activation else { unreachable!() };
        let x = activations(rows, &s, xseed);
        let f = cc.encode(x.view()).expect("encode");
        let w = cc.code_normalization_weights();
        for row in f.rows() {
            for (v, wj) in row.iter().zip(w.iter()) {
                prop_assert!(*v == 0.0 || v * wj > threshold, "kept {v} with w_j {wj} <= threshold {threshold}");
            }
        }
    }
}
