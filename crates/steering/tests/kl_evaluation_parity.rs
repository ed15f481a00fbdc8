//! The KL evaluation against science-of-finetuning's reference (`fixtures/steering/generate_kl_fixtures.py`:
//! HF transformers for the models, the paper's tokenisation masks, half-step patches and metrics, two
//! dictionary_learning crosscoders): the token ids, the assistant and control masks, the prediction
//! subsets, and KL(p_chat || p_patched) and the NLL at every scored position of every set-up.

use std::path::PathBuf;
use std::sync::Arc;

use crosscoder::{BackendKind, Crosscoder, CrosscoderLoader};
use gemma_model::{load_dir, ChatMessage, GemmaTokenizer, HookPoint, LoadOptions};
use model_pair::TokenizedPrompt;
use safetensors::{Dtype, SafeTensors};
use steering::kl_evaluation::{score_batch, Patch, PatchSetup, PositionSubset, PredictionMasks};
use steering::SteeringModels;

const HOOK: HookPoint = HookPoint::ResidPost(1);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn manifest() -> serde_json::Value {
    let path = fixtures().join("steering/kl_evaluation/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A tensor of the fixture as f64 values (any of the dtypes the generator writes) and its shape.
fn tensor(file: &SafeTensors<'_>, name: &str) -> (Vec<f64>, Vec<usize>) {
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::U8 => bytes.iter().map(|b| *b as f64).collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (values, view.shape().to_vec())
}

fn conversations() -> Vec<Vec<ChatMessage>> {
    serde_json::from_value(manifest()["conversations"].clone()).unwrap()
}

fn setups(manifest: &serde_json::Value) -> Vec<PatchSetup> {
    let set = |name: &str| -> Vec<usize> {
        serde_json::from_value(manifest["latent_sets"][name].clone()).unwrap()
    };
    vec![
        PatchSetup::new("base", Patch::Base),
        PatchSetup::new("all_latents", Patch::AllLatents),
        PatchSetup::new("chat_error", Patch::ChatError),
        PatchSetup::new(
            "chosen",
            Patch::Latents {
                latents: set("chosen"),
            },
        ),
        PatchSetup::new(
            "other",
            Patch::Latents {
                latents: set("other"),
            },
        ),
    ]
}

fn subset_name(subset: PositionSubset) -> &'static str {
    match subset {
        PositionSubset::All => "all",
        PositionSubset::KFirst => "k_first",
        PositionSubset::PostKFirst => "post_k_first",
    }
}

/// The tokenized conversations with their masks, checked against the reference's.
fn tokenized(
    tokenizer: &GemmaTokenizer,
    file: &SafeTensors<'_>,
    k: usize,
) -> (Vec<TokenizedPrompt>, Vec<PredictionMasks>) {
    let (ids, shape) = tensor(file, "input_ids");
    let (attention, _) = tensor(file, "attention_mask");
    let (assistant, _) = tensor(file, "assistant_mask");
    let (ctrl, _) = tensor(file, "ctrl_mask");
    let width = shape[1];
    let mut prompts = Vec::new();
    let mut masks = Vec::new();
    for (c, conversation) in conversations().iter().enumerate() {
        let row = c * width..(c + 1) * width;
        let len = attention[row.clone()].iter().filter(|a| **a == 1.0).count();
        let prompt = TokenizedPrompt::new(
            tokenizer,
            tokenizer.encode_chat(conversation, false).unwrap(),
        );
        let want_ids: Vec<u32> = ids[row.start..row.start + len]
            .iter()
            .map(|x| *x as u32)
            .collect();
        assert_eq!(prompt.ids, want_ids, "conversation {c}: token ids");
        let flags = |v: &[f64]| {
            v[row.start..row.start + len]
                .iter()
                .map(|x| *x == 1.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            prompt.assistant,
            flags(&assistant),
            "conversation {c}: assistant mask"
        );
        assert_eq!(
            prompt.template,
            flags(&ctrl),
            "conversation {c}: control mask"
        );
        let m = PredictionMasks::new(&prompt, k);
        for subset in PositionSubset::ALL {
            let (want, _) = tensor(file, &format!("pred_{}", subset_name(subset)));
            assert_eq!(
                m.of(subset),
                &flags(&want)[..],
                "conversation {c}: {subset:?} prediction mask"
            );
        }
        prompts.push(prompt);
        masks.push(m);
    }
    (prompts, masks)
}

fn check_variant(variant: &str) {
    let manifest = manifest();
    let k = manifest["k_first"].as_u64().unwrap() as usize;
    let dir = fixtures().join("steering/kl_evaluation").join(variant);
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let base = load_dir(
        fixtures().join("demo/base"),
        &LoadOptions::for_hooks(&[HOOK]),
    )
    .unwrap();
    let chat = load_dir(fixtures().join("demo/chat"), &LoadOptions::default()).unwrap();
    let tokenizer = chat.tokenizer.clone().unwrap();
    let crosscoder: Arc<dyn Crosscoder> = Arc::from(
        CrosscoderLoader::new(dir.to_str().unwrap())
            .backend(BackendKind::Flex)
            .load()
            .unwrap(),
    );
    let models = SteeringModels {
        base: base.model.as_ref(),
        chat: chat.model.as_ref(),
        tokenizer: &tokenizer,
        crosscoder,
        hook: HOOK,
    };
    let (prompts, masks) = tokenized(&tokenizer, &file, k);
    let setups = setups(&manifest);
    let scores = score_batch(&models, &prompts, &masks, &setups, 0).unwrap();
    for (setup, per_conversation) in setups.iter().zip(&scores.setups) {
        let mut series: Vec<(String, Vec<f64>)> = PositionSubset::ALL
            .into_iter()
            .map(|subset| {
                let got = per_conversation
                    .iter()
                    .zip(&masks)
                    .flat_map(|(s, m)| {
                        m.of(subset)
                            .iter()
                            .enumerate()
                            .filter(|(_, on)| **on)
                            .map(|(p, _)| s.kl[p])
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (format!("kl_{}_{}", setup.name, subset_name(subset)), got)
            })
            .collect();
        series.push((
            format!("nll_{}_all", setup.name),
            per_conversation
                .iter()
                .zip(&masks)
                .flat_map(|(s, m)| {
                    m.assistant
                        .iter()
                        .enumerate()
                        .filter(|(_, on)| **on)
                        .map(|(p, _)| s.nll[p])
                        .collect::<Vec<_>>()
                })
                .collect(),
        ));
        for (name, got) in series {
            let (want, _) = tensor(&file, &name);
            assert_eq!(got.len(), want.len(), "{variant} {name}: scored positions");
            let mean = want.iter().sum::<f64>() / want.len() as f64;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Per token to 2e-5 of the set-up's mean (float32 models on both sides).
                assert!(
                    (g - w).abs() <= 2e-5 * mean.abs().max(1e-3) + 1e-6,
                    "{variant} {name}[{i}]: {g} vs reference {w} (mean {mean})"
                );
            }
            let got_mean = got.iter().sum::<f64>() / got.len() as f64;
            assert!(
                (got_mean - mean).abs() <= 1e-5 * mean.abs() + 1e-7,
                "{variant} {name}: mean {got_mean} vs reference {mean}"
            );
        }
    }
}

#[test]
fn relu_crosscoder_matches_the_reference() {
    check_variant("relu");
}

#[test]
fn batchtopk_crosscoder_matches_the_reference() {
    check_variant("batchtopk");
}
