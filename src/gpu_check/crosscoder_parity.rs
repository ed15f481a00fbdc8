//! Crosscoders against the reference code (`fixtures/crosscoder/generate_fixtures.py`: dictionary_learning at
//! a pinned commit, plain PyTorch for the ckkissane layout): every checkpoint format and code normalisation.

use crosscoder::{CrosscoderLoader, DecoderAnalysis, RelativeNormThresholds, BASE, CHAT};
use ndarray::Array3;

use super::golden::{read_golden, tensor, Tally};
use super::{CheckError, CheckOptions, CheckRecord};

/// `(what to hand the loader, where expected.safetensors is, scaling factors)` under `fixtures/crosscoder`.
pub const CASES: [(&str, &str, Option<[f32; 2]>); 8] = [
    ("dl_relu", "dl_relu", None),
    ("dl_batchtopk", "dl_batchtopk", None),
    ("dl_normalizer", "dl_normalizer", None),
    ("dl_pt_batchtopk/model_final.pt", "dl_pt_batchtopk", None),
    ("dl_pt_compiled/checkpoint_123.pt", "dl_pt_compiled", None),
    ("dl_mixed", "dl_mixed", None),
    ("dl_none", "dl_none", None),
    (
        "ckkissane/blocks.14.hook_resid_pre",
        "ckkissane/blocks.14.hook_resid_pre",
        Some([0.37, 1.9]),
    ),
];

pub fn check(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    let root = options.fixtures.join("crosscoder");
    let mut tally = Tally::new("crosscoder_parity", options.tolerances.crosscoder);
    for (source, expected_dir, factors) in CASES {
        let expected_path = root.join(expected_dir).join("expected.safetensors");
        let exp = read_golden(&expected_path)?;
        let get = |name: &str| tensor(&exp, &expected_path, name);
        let mut loader =
            CrosscoderLoader::new(root.join(source).to_string_lossy()).backend(options.backend);
        if let Some(f) = factors {
            loader = loader.scaling_factors(f.to_vec());
        }
        let cc = loader.load()?;
        let input = get("activations")?;
        let shape: [usize; 3] = input.shape.clone().try_into().map_err(|_| {
            CheckError::fixture(&expected_path, "`activations` is not [batch, n_models, d]")
        })?;
        let x = Array3::from_shape_vec(shape, input.to_f32())
            .map_err(|e| CheckError::fixture(&expected_path, e))?;
        let tag = |what: &str| format!("{source} {what}");
        let mut compare = |what: &str, actual: &[f32]| -> Result<(), CheckError> {
            tally.compare(&tag(what), actual, &get(what)?.values);
            Ok(())
        };
        let slice = |a: &ndarray::ArrayD<f32>| a.iter().copied().collect::<Vec<f32>>();

        let f = cc.encode(x.view())?;
        compare("latents", &slice(&f.clone().into_dyn()))?;
        let scaled = cc.encode_scaled(x.view())?;
        compare("latents_scaled", &slice(&scaled.into_dyn()))?;
        let out = cc.forward(x.view())?;
        compare("reconstruction", &slice(&out.reconstruction.into_dyn()))?;
        let dec = cc.decode(f.view())?;
        tally.compare(
            &tag("decode(f)"),
            &slice(&dec.into_dyn()),
            &get("reconstruction")?.values,
        );
        let mut compare = |what: &str, actual: &[f32]| -> Result<(), CheckError> {
            tally.compare(&tag(what), actual, &get(what)?.values);
            Ok(())
        };
        compare(
            "decoder_norms",
            &slice(&cc.decoder_norms().clone().into_dyn()),
        )?;
        compare(
            "code_normalization",
            &slice(&cc.code_normalization_weights().clone().into_dyn()),
        )?;
        let diff =
            DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default())?;
        compare(
            "relative_norms",
            &slice(&diff.relative_norms.clone().into_dyn()),
        )?;
        compare(
            "cosine_similarity",
            &slice(&diff.cosine_similarity.clone().into_dyn()),
        )?;
        let m = cc.evaluate(x.view())?;
        compare("metrics_mse", &m.mse)?;
        compare("metrics_fvu", &m.fvu)?;
        compare("metrics_l0", &[m.l0])?;
        compare("metrics_fve", &[m.frac_variance_explained])?;
    }
    tally.note(format!(
        "{} checkpoints (dictionary_learning ReLU / BatchTopK / normaliser / .pt / compiled / MIXED / NONE, ckkissane)",
        CASES.len()
    ));
    Ok(tally.finish())
}
