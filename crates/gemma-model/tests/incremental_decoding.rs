//! Incremental decoding (prefill, then one position per step through the KV cache) equals a full
//! re-forward of prompt + generated tokens, on both fixture models (a sliding window of 5 and of 4,
//! so prompt + generation crosses it; GQA; BF16 shards), both kernel paths, a left-padded batch of
//! prompts of different lengths, with and without an intervention at every position, and with an
//! intervention on the prompt or the generated positions only.

mod common;

use common::fixture;
use gemma_model::generation::{
    generate, score_continuations, GenerationConfig, InterventionScope, ModelStepper, Sampling,
    SamplingParams,
};
use gemma_model::{
    load_dir, HookPoint, Intervention, LanguageModel, LoadOptions, RunRequest, TokenBatch,
};
use ndarray::{s, Array3};
use std::sync::Arc;

const NEW_TOKENS: usize = 9;

/// Prompts of different lengths, with `<bos>` first.
fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    let ids = |seed: u32, n: usize| {
        let mut v = vec![2u32];
        v.extend((0..n).map(|i| 110 + (seed * 37 + i as u32 * 91) % (vocab as u32 - 120)));
        v
    };
    vec![ids(1, 2), ids(2, 7), ids(3, 4)]
}

/// Adds a fixed vector to every position (a steering-like edit).
fn push(d: usize) -> Intervention {
    let direction: Vec<f32> = (0..d).map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.6).collect();
    Intervention {
        hook: HookPoint::ResidPost(1),
        edit: Arc::new(move |x: &mut Array3<f32>| {
            for mut row in x.rows_mut() {
                row.iter_mut().zip(&direction).for_each(|(v, d)| *v += d);
            }
        }),
    }
}

/// The logits of a full forward of `ids` alone, the intervention applied to positions `edited`.
fn full_logits(
    model: &dyn LanguageModel,
    ids: &[u32],
    edited: std::ops::Range<usize>,
) -> ndarray::Array2<f32> {
    let mut request = RunRequest::default().with_logits();
    if !edited.is_empty() {
        let d = model.config().hidden_size;
        let inner = push(d);
        request = request.with_intervention(HookPoint::ResidPost(1), move |x| {
            let mut part = x.slice(s![.., edited.clone(), ..]).to_owned();
            (inner.edit)(&mut part);
            x.slice_mut(s![.., edited.clone(), ..]).assign(&part);
        });
    }
    let out = model
        .run(&TokenBatch::single(ids.to_vec()).unwrap(), &request)
        .unwrap();
    out.logits.unwrap().slice(s![0, .., ..]).to_owned()
}

fn max_relative_difference(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// `capacity`: the cache's initial room, by default the prompt plus the new tokens.
fn check(
    model_name: &str,
    fused_kernels: bool,
    scope: Option<InterventionScope>,
    capacity: Option<usize>,
) {
    let options = LoadOptions {
        fused_kernels,
        ..LoadOptions::default()
    };
    check_with(model_name, &options, scope, capacity, 1e-4);
}

/// [`check`] with `options`, to `tolerance`.
fn check_with(
    model_name: &str,
    options: &LoadOptions,
    scope: Option<InterventionScope>,
    capacity: Option<usize>,
    tolerance: f32,
) {
    let fused_kernels = options.fused_kernels;
    let loaded = load_dir(fixture(model_name), options).unwrap();
    let model = loaded.model.as_ref();
    let prompts = prompts(model.config().vocab_size);
    let capacity = capacity.unwrap_or(prompts.iter().map(Vec::len).max().unwrap() + NEW_TOKENS);
    let mut stepper = ModelStepper::new(model, prompts.len(), capacity).unwrap();
    if let Some(scope) = scope {
        stepper = stepper.intervene(push(model.config().hidden_size), scope);
    }
    let config = GenerationConfig {
        stop_token_ids: Vec::new(),
        keep_logits: true,
        // Sampled, so that the tiny random model does not repeat one token.
        sampling: Sampling::Sample(SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 3,
        }),
        ..GenerationConfig::greedy(NEW_TOKENS, model.config())
    };
    let generations = generate(&mut stepper, &prompts, &config, None, &mut |_, _| {}).unwrap();
    for (row, generation) in generations.iter().enumerate() {
        assert_eq!(generation.token_ids.len(), NEW_TOKENS);
        let prompt_len = generation.prompt_ids.len();
        let mut ids = generation.prompt_ids.clone();
        ids.extend(&generation.token_ids[..NEW_TOKENS - 1]);
        let edited = match scope {
            None => 0..0,
            Some(InterventionScope::All) => 0..ids.len(),
            Some(InterventionScope::PromptOnly) => 0..prompt_len,
            Some(InterventionScope::GeneratedOnly) => prompt_len..ids.len(),
        };
        let full = full_logits(model, &ids, edited);
        let stepped = generation.logits.as_ref().unwrap();
        for k in 0..NEW_TOKENS {
            let expected = full.row(prompt_len - 1 + k);
            let err = max_relative_difference(
                stepped.row(k).as_slice().unwrap(),
                expected.as_slice().unwrap(),
            );
            assert!(
                err < tolerance,
                "{model_name} fused={fused_kernels} {:?} {scope:?} row {row} step {k}: {err:e}",
                options.dtype
            );
        }
    }
}

#[test]
fn incremental_decoding_equals_a_full_forward_past_the_sliding_window() {
    for fused in [true, false] {
        check("tiny-window", fused, None, None);
    }
}

/// In bf16 a decoding step (the one-pass product) and the full forward (the GEMM) sum the same
/// bf16 inputs in different orders; where two f32 sums straddle a bf16 rounding boundary the next
/// product's input differs by one bf16 step (2^-8 relative). Measured: 1.8e-7 (no boundary
/// crossed); the tolerance leaves room for one crossing.
#[test]
fn incremental_decoding_in_bf16_equals_a_full_forward() {
    for fused in [true, false] {
        let options = LoadOptions {
            fused_kernels: fused,
            dtype: gemma_model::ComputeDtype::Bf16,
            ..LoadOptions::default()
        };
        check_with("tiny-window", &options, None, None, 1e-3);
        check_with(
            "tiny-gqa-bf16",
            &options,
            Some(InterventionScope::All),
            None,
            1e-3,
        );
    }
}

#[test]
fn the_cache_grows_when_a_session_outruns_its_capacity() {
    for fused in [true, false] {
        check("tiny-window", fused, None, Some(1));
    }
}

#[test]
fn incremental_decoding_equals_a_full_forward_with_gqa_and_bf16_shards() {
    check("tiny-gqa-bf16", true, None, None);
}

#[test]
fn interventions_apply_at_every_position_or_only_where_their_scope_says() {
    for scope in [
        InterventionScope::All,
        InterventionScope::PromptOnly,
        InterventionScope::GeneratedOnly,
    ] {
        check("tiny-window", true, Some(scope), None);
    }
}

#[test]
fn hooks_are_read_at_every_fed_position() {
    let loaded = load_dir(fixture("tiny-window"), &LoadOptions::default()).unwrap();
    let model = loaded.model.as_ref();
    let hook = HookPoint::ResidPost(2);
    let prompts = prompts(model.config().vocab_size);
    let mut stepper = ModelStepper::new(model, prompts.len(), 4)
        .unwrap()
        .capture([hook]);
    let config = GenerationConfig {
        stop_token_ids: Vec::new(),
        ..GenerationConfig::greedy(5, model.config())
    };
    let generations = generate(&mut stepper, &prompts, &config, None, &mut |_, _| {}).unwrap();
    for g in &generations {
        let mut ids = g.prompt_ids.clone();
        ids.extend(&g.token_ids[..4]);
        let full = model
            .run(
                &TokenBatch::single(ids.clone()).unwrap(),
                &RunRequest::capture([hook]),
            )
            .unwrap();
        let expected = full.activations[&hook].slice(s![0, .., ..]).to_owned();
        let read = &g.activations[&hook];
        assert_eq!(read.dim(), expected.dim());
        let err = max_relative_difference(read.as_slice().unwrap(), expected.as_slice().unwrap());
        assert!(err < 1e-4, "{err:e}");
    }
}

#[test]
fn a_row_that_stops_early_does_not_disturb_the_others() {
    let loaded = load_dir(fixture("tiny-window"), &LoadOptions::default()).unwrap();
    let model = loaded.model.as_ref();
    let prompts = prompts(model.config().vocab_size);
    let run = |stop: Vec<u32>| {
        let mut stepper = ModelStepper::new(model, prompts.len(), 16).unwrap();
        let config = GenerationConfig {
            stop_token_ids: stop,
            ..GenerationConfig::greedy(6, model.config())
        };
        generate(&mut stepper, &prompts, &config, None, &mut |_, _| {}).unwrap()
    };
    let free = run(Vec::new());
    // A token of row 0 becomes a stop token: each row ends at its first occurrence, and is otherwise
    // unchanged by the rows that stopped before it.
    let stop = free[0].token_ids[1];
    let stopped = run(vec![stop]);
    for row in 0..prompts.len() {
        let free_row = &free[row].token_ids;
        let end = free_row
            .iter()
            .position(|t| *t == stop)
            .map_or(free_row.len(), |i| i + 1);
        assert_eq!(
            stopped[row].token_ids,
            free_row[..end].to_vec(),
            "row {row}"
        );
    }
}

#[test]
fn teacher_forced_scores_equal_a_full_forward() {
    let loaded = load_dir(fixture("tiny-window"), &LoadOptions::default()).unwrap();
    let model = loaded.model.as_ref();
    let prompts = prompts(model.config().vocab_size);
    let continuations = vec![vec![300, 301, 302, 303], vec![400], vec![500, 501]];
    let mut stepper = ModelStepper::new(model, prompts.len(), 16).unwrap();
    let scored = score_continuations(&mut stepper, &prompts, &continuations, 0).unwrap();
    for ((prompt, continuation), logits) in prompts.iter().zip(&continuations).zip(&scored) {
        let mut ids = prompt.clone();
        ids.extend(continuation);
        let full = full_logits(model, &ids, 0..0);
        for (k, row) in logits.rows().into_iter().enumerate() {
            let expected = full.row(prompt.len() - 1 + k);
            let err =
                max_relative_difference(row.as_slice().unwrap(), expected.as_slice().unwrap());
            assert!(err < 1e-4, "{err:e}");
        }
    }
}

#[test]
fn sequences_longer_than_the_model_positions_are_refused_with_both_lengths() {
    let loaded = load_dir(fixture("tiny-window"), &LoadOptions::default()).unwrap();
    let model = loaded.model.as_ref();
    let max = model.config().max_position_embeddings;
    assert_eq!(max, 512, "the fixture's config.json");
    let message = |e: gemma_model::GemmaError| {
        assert!(
            matches!(e, gemma_model::GemmaError::SequenceTooLong { .. }),
            "{e}"
        );
        e.to_string()
    };
    let err = message(ModelStepper::new(model, 1, max + 1).err().unwrap());
    assert!(err.contains("513 tokens") && err.contains("(512)"), "{err}");
    let ids = vec![model.config().bos_token_id; max + 1];
    let err = message(
        model
            .run(
                &TokenBatch::single(ids).unwrap(),
                &RunRequest::default().with_logits(),
            )
            .unwrap_err(),
    );
    assert!(err.contains("the batch is 513 tokens"), "{err}");
    // At the limit it runs.
    assert!(ModelStepper::new(model, 1, max).is_ok());
}
