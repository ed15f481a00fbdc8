//! Encoding and decoding in bf16: bf16 weights and product inputs, f32 sums, f32 biases and
//! activation; checked against an f64 reference computed from the same bf16-rounded numbers, on
//! both the host kernels' path (burn-flex) and the f32 result, and refused where bf16 cannot run.

use crosscoder::throughput::{random_checkpoint, uniform};
use crosscoder::{BackendKind, CrosscoderError};
use ndarray::Array3;
use stereo_core::matmul::{rounded_through_bf16, to_bf16};
use stereo_core::ComputeDtype;

/// `relu(bf16(x) @ bf16(W_enc) + b_enc)` in f64.
fn reference_encode(
    x: &[f32],
    w_enc: &[f32],
    b_enc: &[f32],
    rows: usize,
    inner: usize,
) -> Vec<f64> {
    let (x, w) = (rounded_through_bf16(x), rounded_through_bf16(w_enc));
    let f = b_enc.len();
    let mut out = vec![0f64; rows * f];
    for r in 0..rows {
        for j in 0..f {
            let mut sum = b_enc[j] as f64;
            for i in 0..inner {
                sum += x[r * inner + i] as f64 * w[i * f + j] as f64;
            }
            out[r * f + j] = sum.max(0.0);
        }
    }
    out
}

#[test]
fn bf16_encode_equals_the_rounded_reference_for_skinny_and_large_batches() {
    let (n, d, f) = (2, 48, 200);
    let checkpoint = random_checkpoint(n, d, f, 5).unwrap();
    let w_enc: Vec<f32> = checkpoint.weights().w_enc.iter().copied().collect();
    let b_enc = checkpoint.weights().b_enc.to_vec();
    let f32_model = checkpoint.clone().build(BackendKind::Flex).unwrap();
    let bf16_model = checkpoint
        .build_in(BackendKind::Flex, ComputeDtype::Bf16)
        .unwrap();
    // 3 rows: the one-pass product of a decoding step; 77 rows: the GEMM.
    for rows in [3, 77] {
        let x = uniform(rows * n * d, rows as u64, 2.0);
        let x3 = Array3::from_shape_vec((rows, n, d), x.clone()).unwrap();
        let ours = bf16_model.encode(x3.view()).unwrap();
        let exact = f32_model.encode(x3.view()).unwrap();
        let want = reference_encode(&x, &w_enc, &b_enc, rows, n * d);
        let (mut worst, mut from_f32) = (0f64, 0f64);
        for ((got, want), exact) in ours.iter().zip(&want).zip(exact.iter()) {
            worst = worst.max((*got as f64 - want).abs());
            from_f32 = from_f32.max((got - exact).abs() as f64);
        }
        // f32 sums of 96 terms of size about 0.3: rounding far below 1e-5.
        assert!(
            worst < 1e-5,
            "{rows} rows: {worst:e} from the bf16 reference"
        );
        // And it is bf16: the inputs' rounding shows against the f32 encode.
        assert!(from_f32 > 1e-4, "{rows} rows: {from_f32:e} from f32");
    }
}

#[test]
fn bf16_reconstructions_stay_close_to_f32() {
    let (n, d, f) = (2, 32, 96);
    let checkpoint = random_checkpoint(n, d, f, 9).unwrap();
    let f32_model = checkpoint.clone().build(BackendKind::Flex).unwrap();
    let bf16_model = checkpoint
        .build_in(BackendKind::Flex, ComputeDtype::Bf16)
        .unwrap();
    let x = Array3::from_shape_vec((20, n, d), uniform(20 * n * d, 4, 1.0)).unwrap();
    let (ours, exact) = (
        bf16_model.forward(x.view()).unwrap(),
        f32_model.forward(x.view()).unwrap(),
    );
    let scale = exact
        .reconstruction
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .reconstruction
        .iter()
        .zip(exact.reconstruction.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // Two products with bf16 inputs: a few bf16 steps (2^-8 relative) of the largest value.
    assert!(worst <= 0.02 * scale, "{worst} vs scale {scale}");
}

#[test]
fn bf16_on_ndarray_is_refused_by_name() {
    let checkpoint = random_checkpoint(2, 8, 16, 1).unwrap();
    match checkpoint.build_in(BackendKind::NdArray, ComputeDtype::Bf16) {
        Err(CrosscoderError::DtypeOnBackend { dtype, backend }) => {
            assert_eq!((dtype.as_str(), backend.as_str()), ("bf16", "ndarray"));
        }
        other => panic!("expected DtypeOnBackend, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn latent_scaling_on_a_bf16_crosscoder_agrees_with_f32() {
    use crosscoder::LatentScaling;
    let (n, d, f) = (2, 32, 64);
    let checkpoint = random_checkpoint(n, d, f, 11).unwrap();
    let f32_model = checkpoint.clone().build(BackendKind::Flex).unwrap();
    let bf16_model = checkpoint
        .build_in(BackendKind::Flex, ComputeDtype::Bf16)
        .unwrap();
    let x = Array3::from_shape_vec((300, n, d), uniform(300 * n * d, 8, 1.0)).unwrap();
    let nu = |model: &dyn crosscoder::Crosscoder| {
        let mut scaling = LatentScaling::new(model, None).unwrap();
        scaling.add_batch(model, x.view()).unwrap();
        scaling.result()
    };
    let (exact, ours) = (nu(f32_model.as_ref()), nu(bf16_model.as_ref()));
    assert_eq!(exact.latents, ours.latents);
    // Betas are ratios of sums over 300 rows: bf16 inputs move them by well under 5%.
    let mut compared = 0;
    for (a, b) in exact.nu_error.iter().zip(ours.nu_error.iter()) {
        if a.is_finite() && b.is_finite() && a.abs() > 0.1 {
            assert!((a - b).abs() <= 0.05 * a.abs(), "{a} vs {b}");
            compared += 1;
        }
    }
    assert!(compared > 5, "only {compared} latents compared");
}

/// bf16 rows (a bf16 store's) encode to exactly what their f32 values encode to, on every route:
/// straight into the bf16 products (bf16 weights, no normaliser), widened first (a normaliser, or
/// f32 weights), and on burn-ndarray; for the skinny product and the GEMM alike.
#[test]
fn bf16_rows_encode_and_forward_exactly_as_their_f32_values() {
    let (n, d, f) = (2, 40, 150);
    let plain = random_checkpoint(n, d, f, 13).unwrap();
    let scaled = plain.clone().with_scaling_factors(vec![0.5, 3.0]).unwrap();
    let models = [
        (
            "bf16",
            plain
                .clone()
                .build_in(BackendKind::Flex, ComputeDtype::Bf16),
        ),
        (
            "bf16, scaled",
            scaled
                .clone()
                .build_in(BackendKind::Flex, ComputeDtype::Bf16),
        ),
        ("f32", plain.clone().build(BackendKind::Flex)),
        ("ndarray", scaled.build(BackendKind::NdArray)),
    ];
    for (name, model) in models {
        let model = model.unwrap();
        for rows in [0, 3, 77] {
            let x = uniform(rows * n * d, rows as u64 + 1, 2.0);
            let x = Array3::from_shape_vec((rows, n, d), to_bf16(&x)).unwrap();
            let widened = x.mapv(|v| v.to_f32());
            assert_eq!(
                model.encode_bf16(x.view()).unwrap(),
                model.encode(widened.view()).unwrap(),
                "{name}, {rows} rows: encode"
            );
            let (ours, exact) = (
                model.forward_bf16(x.view()).unwrap(),
                model.forward(widened.view()).unwrap(),
            );
            assert_eq!(ours, exact, "{name}, {rows} rows: forward");
        }
        // A strided view of the rows (every other one) too.
        let x = Array3::from_shape_vec((40, n, d), to_bf16(&uniform(40 * n * d, 3, 1.0))).unwrap();
        let every_other = x.slice(ndarray::s![..;2, .., ..]);
        assert_eq!(
            model.encode_bf16(every_other).unwrap(),
            model
                .encode(every_other.mapv(|v| v.to_f32()).view())
                .unwrap(),
            "{name}: strided rows"
        );
        // And the shape is checked first.
        let wrong = Array3::from_elem((2, n, d + 1), half::bf16::ONE);
        assert!(matches!(
            model.encode_bf16(wrong.view()),
            Err(CrosscoderError::ActivationShape { .. })
        ));
    }
}

#[test]
fn latent_scaling_of_bf16_rows_equals_that_of_their_f32_values() {
    use crosscoder::LatentScaling;
    let (n, d, f) = (2, 32, 64);
    let model = random_checkpoint(n, d, f, 17)
        .unwrap()
        .build_in(BackendKind::Flex, ComputeDtype::Bf16)
        .unwrap();
    let x = to_bf16(&uniform(200 * n * d, 6, 1.0));
    let x = Array3::from_shape_vec((200, n, d), x).unwrap();
    let mut from_bf16 = LatentScaling::new(model.as_ref(), None).unwrap();
    from_bf16.add_batch_bf16(model.as_ref(), x.view()).unwrap();
    let mut from_f32 = LatentScaling::new(model.as_ref(), None).unwrap();
    from_f32
        .add_batch(model.as_ref(), x.mapv(|v| v.to_f32()).view())
        .unwrap();
    assert_eq!(from_bf16.state(), from_f32.state());
}
