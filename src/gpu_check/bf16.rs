//! bf16 on the machine under test: Gemma-2 with `--dtype bf16` on the backend (CUDA: burn's bf16
//! matmul) against HF transformers' own bf16 run (`golden-bf16.safetensors`) and the f32 goldens,
//! and the host bf16 kernels of `stereo_core::matmul` on this machine's CPU: `vdpbf16ps` where the
//! CPU has AVX512-BF16 (GPU hosts often do; the development machines do not), the widening kernel
//! everywhere, each against a naive product of the same bf16 inputs on odd shapes.

use gemma_model::{
    load_dir, ComputeDtype, GemmaError, HookPoint, LoadOptions, RunRequest, TokenBatch,
};
use stereo_core::matmul::{
    bf16_matmul_with, rounded_through_bf16, to_bf16, Bf16Kernel, WeightLayout,
};

use super::golden::{read_golden, relative_error, tensor};
use super::{CheckError, CheckOptions, CheckRecord};

/// Prompts of each golden model (`generate_fixtures.py` writes five).
const PROMPTS: usize = 5;

pub fn check(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    let mut details = Vec::new();
    let mut passed = true;
    for model_name in super::gemma_parity::MODELS {
        let (ok, line) = model_against_hf_bf16(options, model_name)?;
        passed &= ok;
        details.push(line);
    }
    for kernel in [Bf16Kernel::DotProduct, Bf16Kernel::Widening] {
        let (ok, line) = kernel_against_naive(kernel);
        passed &= ok;
        details.push(line);
    }
    Ok(CheckRecord {
        name: "bf16".into(),
        passed,
        summary: format!(
            "bf16 models within HF-bf16's own distance from f32; host kernels exact on this CPU ({})",
            Bf16Kernel::fastest().name()
        ),
        tolerance: None,
        worst_relative_error: None,
        details,
        seconds: 0.0,
    })
}

/// stereo-bf16 no further from f32 than HF-bf16, and within 1.5 times that of HF-bf16 (the
/// criteria of `crates/gemma-model/tests/bf16_parity.rs`), on resid_post of every layer and logits.
fn model_against_hf_bf16(
    options: &CheckOptions,
    model_name: &str,
) -> Result<(bool, String), CheckError> {
    let dir = options.fixtures.join("gemma").join(model_name);
    let (f32_path, bf16_path) = (
        dir.join("golden.safetensors"),
        dir.join("golden-bf16.safetensors"),
    );
    let (f32_golden, bf16_golden) = (read_golden(&f32_path)?, read_golden(&bf16_path)?);
    let load = LoadOptions {
        dtype: ComputeDtype::Bf16,
        ..LoadOptions::default().with_backend(options.backend)
    };
    let loaded = match load_dir(&dir, &load) {
        // burn-ndarray has no bf16 tensors: the refusal by name is the documented behaviour.
        Err(GemmaError::UnsupportedDtype { backend, .. }) if backend == "ndarray" => {
            return Ok((
                true,
                format!("{model_name}: ndarray refuses bf16 by name (ok)"),
            ));
        }
        other => other?,
    };
    let hooks: Vec<HookPoint> = (0..loaded.model.config().num_hidden_layers)
        .map(HookPoint::ResidPost)
        .collect();
    let request = RunRequest::capture(hooks.iter().copied()).with_logits();
    let (mut ours_to_f32, mut ours_to_hf, mut hf_to_f32) = (0f64, 0f64, 0f64);
    for i in 0..PROMPTS {
        let key = |name: &str| format!("prompt.{i}.{name}");
        let ids: Vec<u32> = tensor(&f32_golden, &f32_path, &key("input_ids"))?
            .values
            .iter()
            .map(|v| *v as u32)
            .collect();
        let out = loaded.model.run(&TokenBatch::single(ids)?, &request)?;
        let mut ours: Vec<(String, Vec<f32>)> = hooks
            .iter()
            .map(|h| (h.to_string(), out.activations[h].iter().copied().collect()))
            .collect();
        if let Some(logits) = &out.logits {
            ours.push(("logits".into(), logits.iter().copied().collect()));
        }
        for (name, actual) in ours {
            let exact = tensor(&f32_golden, &f32_path, &key(&name))?;
            let hf = tensor(&bf16_golden, &bf16_path, &key(&name))?;
            ours_to_f32 = ours_to_f32.max(relative_error(&actual, &exact.values));
            ours_to_hf = ours_to_hf.max(relative_error(&actual, &hf.values));
            hf_to_f32 = hf_to_f32.max(relative_error(&hf.to_f32(), &exact.values));
        }
    }
    let ok = ours_to_f32 <= hf_to_f32 && ours_to_hf <= 1.5 * hf_to_f32;
    Ok((
        ok,
        format!(
            "{model_name} in bf16 on {}: to f32 {ours_to_f32:.3e}, to HF-bf16 {ours_to_hf:.3e}, HF-bf16 to f32 {hf_to_f32:.3e} ({})",
            options.backend,
            if ok { "ok" } else { "FAIL" }
        ),
    ))
}

/// `kernel` against a naive f64 product of the rounded inputs, both layouts, odd shapes.
fn kernel_against_naive(kernel: Bf16Kernel) -> (bool, String) {
    if !kernel.is_available() {
        return (true, format!("{}: not on this CPU", kernel.name()));
    }
    let shapes = [(13, 17, 31), (29, 33, 100), (67, 300, 129), (130, 2304, 97)];
    let mut worst = 0f64;
    for (rows, k, n) in shapes {
        let x = values(rows * k, 1);
        let w = to_bf16(&values(k * n, 2));
        let w_t: Vec<_> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
        let x_rounded = rounded_through_bf16(&x);
        for (layout, stored) in [(WeightLayout::InOut, &w), (WeightLayout::OutIn, &w_t)] {
            let got = bf16_matmul_with(kernel, &x, stored, layout, (rows, k, n));
            for r in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|i| x_rounded[r * k + i] as f64 * w[i * n + j].to_f64())
                        .sum();
                    worst = worst.max((got[r * n + j] as f64 - want).abs() / k as f64);
                }
            }
        }
    }
    let ok = worst <= 2e-6;
    (
        ok,
        format!(
            "{} kernel: worst |error| / k {worst:.2e} over {} shapes x 2 layouts ({})",
            kernel.name(),
            shapes.len(),
            if ok { "ok" } else { "FAIL" }
        ),
    )
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32 ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761);
            (h >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
