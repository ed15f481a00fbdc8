//! The activations file (`gemma_model::activations_file`, what the `activations` example writes) against the
//! HF golden fixtures: a padded batch of the golden prompts is written, read back as a plain safetensors
//! file, and every hook's real positions equal HF transformers' values; names, dtypes, shapes, padding zeros,
//! ids, mask and metadata are the documented ones.

mod common;

use common::*;
use gemma_model::activations_file::{write_activations, ActivationsSource};
use gemma_model::{load_dir, HookPoint, LoadOptions, PaddingSide, RunRequest, TokenBatch};
use safetensors::{Dtype, SafeTensors};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn a_padded_batch_is_written_with_the_stable_names_and_equals_hf() {
    let model_name = "tiny-window";
    let dir = fixture(model_name);
    let golden = read_tensors(&dir.join("golden.safetensors"));
    let meta = golden_meta(model_name);
    let loaded = load_dir(&dir, &LoadOptions::default()).unwrap();
    let sequences: Vec<Vec<u32>> = meta
        .prompts
        .iter()
        .map(|p| golden_ids(&golden, p.index))
        .collect();
    let pad = loaded.model.config().pad_token_id;
    let batch = TokenBatch::new(&sequences, pad, PaddingSide::Right).unwrap();
    let hooks = [
        HookPoint::Embed,
        HookPoint::AttnOut(1),
        HookPoint::ResidPost(3),
    ];
    let output = loaded
        .model
        .run(&batch, &RunRequest::capture(hooks).with_logits())
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("acts.safetensors");
    let source = ActivationsSource {
        model: "tiny-window".into(),
        revision: None,
        chat_template: false,
    };
    let written = write_activations(&path, &batch, &output, &source).unwrap();
    assert_eq!(written, hooks.len() + 3);

    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    assert_eq!(metadata["model"], "tiny-window");
    assert_eq!(metadata["revision"], "");
    assert_eq!(metadata["chat_template"], "false");
    assert_eq!(metadata["padding"], "right");
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
    names.sort();
    let mut expected: Vec<String> = hooks.iter().map(|h| h.to_string()).collect();
    expected.extend(["logits", "input_ids", "attention_mask"].map(String::from));
    expected.sort();
    assert_eq!(names, expected);

    let (b, t) = (batch.batch_size(), batch.seq_len());
    let ids = file.tensor("input_ids").unwrap();
    assert_eq!((ids.dtype(), ids.shape()), (Dtype::I64, &[b, t][..]));
    let mask = i64s(file.tensor("attention_mask").unwrap().data());
    let ids = i64s(ids.data());
    for (i, seq) in sequences.iter().enumerate() {
        for pos in 0..t {
            let real = pos < seq.len();
            assert_eq!(mask[i * t + pos], i64::from(real));
            assert_eq!(
                ids[i * t + pos],
                if real { seq[pos] as i64 } else { pad as i64 }
            );
        }
    }
    for name in hooks
        .iter()
        .map(|h| h.to_string())
        .chain(["logits".to_string()])
    {
        let view = file.tensor(&name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let width = view.shape()[2];
        assert_eq!(&view.shape()[..2], &[b, t], "{name}");
        let values = f32s(view.data());
        for (i, p) in meta.prompts.iter().enumerate() {
            let n = sequences[i].len();
            let row = &values[i * t * width..(i + 1) * t * width];
            let err = relative_error(
                &row[..n * width],
                golden[&format!("prompt.{}.{name}", p.index)]
                    .as_slice()
                    .unwrap(),
            );
            assert!(
                err <= 1e-4,
                "{name} prompt {}: relative error {err:.2e}",
                p.index
            );
            assert!(
                row[n * width..].iter().all(|v| *v == 0.0),
                "{name}: padding is zero"
            );
        }
    }
}
