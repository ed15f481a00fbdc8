//! Two training steps of every objective against the reference trainers (dictionary_learning's
//! `CrossCoderTrainer` and `BatchTopKCrossCoderTrainer`, and the ckkissane recipe in PyTorch), from the same
//! initial weights and batches: loss parts, gradients before clipping, Adam moments and parameters after
//! each step, BatchTopK's threshold, k and dead-latent counters. Fixtures:
//! `fixtures/crosscoder/training/generate_training_fixtures.py`.

#[path = "../../crosscoder/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;

use crosscoder::{BackendKind, CrosscoderWeights};
use crosscoder_train::{
    BatchTopKObjective, LrSchedule, Objective, Reconstruction, StepMetrics, TrainConfig,
    TrainerState,
};
use ndarray::{ArrayD, Ix1, Ix2, Ix3};
use serde_json::Value;

use common::{fixtures, read_f32, rel_err};

/// Tolerance on loss parts, gradients, moments and parameters (relative to the tensor's largest value).
const TOL: f64 = 1e-5;
/// Tolerance on the parameter change of a step (`after - before`), relative to its largest value: Adam's
/// first steps move every entry by about `lr`, so this checks the update itself, not just the weights.
const STEP_TOL: f64 = 1e-3;

struct Case {
    json: Value,
    tensors: HashMap<String, ArrayD<f32>>,
}

fn load(case: &str) -> Case {
    let dir = fixtures().join("training");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{case}.json"))).expect("fixture json"),
    )
    .expect("json");
    let tensors = read_f32(&dir.join(format!("{case}.safetensors")));
    Case { json, tensors }
}

impl Case {
    fn weights(&self, prefix: &str) -> CrosscoderWeights {
        let t = |name: &str| self.tensors[&format!("{prefix}.{name}")].clone();
        CrosscoderWeights {
            w_enc: t("encoder.weight").into_dimensionality::<Ix3>().unwrap(),
            b_enc: t("encoder.bias").into_dimensionality::<Ix1>().unwrap(),
            w_dec: t("decoder.weight").into_dimensionality::<Ix3>().unwrap(),
            b_dec: t("decoder.bias").into_dimensionality::<Ix2>().unwrap(),
        }
    }

    fn hyper(&self, key: &str) -> &Value {
        &self.json["hyperparameters"][key]
    }

    fn update(&self, i: usize) -> &Value {
        &self.json["updates"][i]
    }
}

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32
}

#[track_caller]
fn close_scalar(what: &str, actual: f32, expected: f32) {
    let err = ((actual - expected).abs() / expected.abs().max(1e-12)) as f64;
    eprintln!("{what}: {actual} vs {expected} (relative {err:.1e})");
    assert!(err <= TOL, "{what}: {actual} vs reference {expected}");
}

#[track_caller]
fn close_weights(what: &str, actual: &CrosscoderWeights, expected: &CrosscoderWeights) {
    for (name, a, e) in [
        (
            "encoder.weight",
            actual.w_enc.view().into_dyn(),
            expected.w_enc.view().into_dyn(),
        ),
        (
            "encoder.bias",
            actual.b_enc.view().into_dyn(),
            expected.b_enc.view().into_dyn(),
        ),
        (
            "decoder.weight",
            actual.w_dec.view().into_dyn(),
            expected.w_dec.view().into_dyn(),
        ),
        (
            "decoder.bias",
            actual.b_dec.view().into_dyn(),
            expected.b_dec.view().into_dyn(),
        ),
    ] {
        assert_eq!(a.shape(), e.shape(), "{what} {name}: shape");
        let a: Vec<f32> = a.iter().copied().collect();
        let e: Vec<f32> = e.iter().copied().collect();
        let err = rel_err(&a, &e);
        eprintln!("{what} {name}: relative error {err:.2e}");
        assert!(err <= TOL, "{what} {name}: relative error {err:.3e}");
    }
}

#[track_caller]
fn close_steps(
    what: &str,
    before: &CrosscoderWeights,
    actual: &CrosscoderWeights,
    expected: &CrosscoderWeights,
) {
    let delta = |a: &CrosscoderWeights| -> Vec<f32> {
        let mut v: Vec<f32> = (&a.w_enc - &before.w_enc).iter().copied().collect();
        v.extend((&a.b_enc - &before.b_enc).iter());
        v.extend((&a.w_dec - &before.w_dec).iter());
        v.extend((&a.b_dec - &before.b_dec).iter());
        v
    };
    let (a, e) = (delta(actual), delta(expected));
    if e.iter().all(|v| *v == 0.0) {
        assert!(
            a.iter().all(|v| *v == 0.0),
            "{what}: the reference did not move, we did"
        );
        return;
    }
    let err = rel_err(&a, &e);
    eprintln!("{what} (parameter change): relative error {err:.2e}");
    assert!(err <= STEP_TOL, "{what}: parameter change off by {err:.3e}");
}

/// Runs the case's two updates and checks everything the fixture recorded. `config` must reproduce the
/// case's hyperparameters; `prepare` sets the state the reference started from.
fn run_case(
    case_name: &str,
    config: TrainConfig,
    prepare: impl FnOnce(&mut TrainerState, &Case),
) -> Vec<StepMetrics> {
    let case = load(case_name);
    let mut state = TrainerState::from_weights(config, case.weights("init")).unwrap();
    state.step = case.hyper("update_steps")[0].as_u64().unwrap() as usize;
    prepare(&mut state, &case);
    let mut all = Vec::new();
    for backend in [BackendKind::NdArray, BackendKind::Flex] {
        eprintln!("== {case_name} on {backend}");
        let mut trainer = state.clone().build(backend).unwrap();
        let mut before = case.weights("init");
        for i in 0..2 {
            let expected = case.update(i);
            let step = expected["step"].as_u64().unwrap() as usize;
            if trainer.step_index() != step {
                // The reference's second update may skip steps (only schedules depend on it).
                let mut s = trainer.state().unwrap();
                s.step = step;
                trainer = s.build(backend).unwrap();
            }
            let x = case.tensors[&format!("x.{i}")]
                .clone()
                .into_dimensionality::<Ix3>()
                .unwrap();
            let (metrics, grads) = trainer.step_with_gradients(x.view()).unwrap();
            let tag = format!("{case_name}[{backend}] update {i}");
            close_scalar(
                &format!("{tag} lr"),
                metrics.lr.max(1e-30),
                f(&expected["lr"]).max(1e-30),
            );
            close_scalar(&format!("{tag} loss"), metrics.loss, f(&expected["loss"]));
            if let Some(l2) = expected
                .get("l2_loss")
                .filter(|_| !case_name.contains("ckkissane"))
            {
                close_scalar(&format!("{tag} l2_loss"), metrics.l2_loss, f(l2));
                close_scalar(
                    &format!("{tag} mse_loss"),
                    metrics.mse_loss,
                    f(&expected["mse_loss"]),
                );
            } else {
                // ckkissane's l2_loss is the squared error summed over models: n_models * mse.
                close_scalar(
                    &format!("{tag} squared-sum"),
                    metrics.mse_loss * 2.0,
                    f(&expected["l2_loss"]),
                );
            }
            if let Some(s) = expected.get("sparsity_loss").or(expected.get("l1_loss")) {
                close_scalar(
                    &format!("{tag} sparsity"),
                    metrics.sparsity_loss.unwrap(),
                    f(s),
                );
            }
            if let Some(a) = expected.get("auxk_loss") {
                let ours = metrics.auxk_loss.unwrap();
                if f(a) == 0.0 {
                    assert_eq!(ours, 0.0, "{tag} auxk");
                } else {
                    close_scalar(&format!("{tag} auxk"), ours, f(a));
                }
            }
            if let Some(c) = expected.get("l1_coeff").or(expected.get("l1_penalty")) {
                close_scalar(&format!("{tag} lambda"), metrics.lambda.unwrap(), f(c));
            }
            close_scalar(
                &format!("{tag} grad norm"),
                metrics.grad_norm,
                f(&expected["grad_norm"]),
            );
            assert_eq!(
                metrics.clipped,
                expected["clipped"].as_bool().unwrap(),
                "{tag} clipped"
            );
            if let Some(k) = expected.get("k") {
                assert_eq!(metrics.k, Some(k.as_u64().unwrap() as usize), "{tag} k");
                close_scalar(
                    &format!("{tag} threshold"),
                    metrics.threshold.unwrap(),
                    f(&expected["threshold_after"]),
                );
                assert_eq!(
                    metrics.l0 * 32.0,
                    f(&expected["nonzero_f"]),
                    "{tag} kept entries"
                );
                let counters: Vec<u64> = expected["num_tokens_since_fired"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(
                    trainer.state().unwrap().tokens_since_fired,
                    counters,
                    "{tag} dead counters"
                );
            }

            close_weights(
                &format!("{tag} gradients"),
                &grads,
                &case.weights(&format!("grad.{i}")),
            );
            let state = trainer.state().unwrap();
            close_weights(
                &format!("{tag} Adam exp_avg"),
                &state.adam_m,
                &case.weights(&format!("adam.{i}.exp_avg")),
            );
            close_weights(
                &format!("{tag} Adam exp_avg_sq"),
                &state.adam_v,
                &case.weights(&format!("adam.{i}.exp_avg_sq")),
            );
            let after = case.weights(&format!("after.{i}"));
            close_weights(&format!("{tag} parameters"), &state.weights, &after);
            close_steps(&tag, &before, &state.weights, &after);
            before = after;
            all.push(metrics);
        }
    }
    all
}

fn l1_config(case: &Case, reconstruction: Reconstruction) -> TrainConfig {
    let mut config =
        TrainConfig::dictionary_learning_l1(2, 16, 48, 100, f(case.hyper("l1_penalty")));
    config.objective = Objective::L1 {
        reconstruction,
        lambda: f(case.hyper("l1_penalty")),
        lambda_warmup_steps: 0,
    };
    config.lr = f(case.hyper("lr"));
    config.schedule = LrSchedule {
        warmup_steps: case.hyper("warmup_steps").as_u64().unwrap() as usize,
        decay_start: None,
    };
    config
}

#[test]
fn l1_step_matches_dictionary_learning_crosscoder_trainer() {
    let case = load("l1_dictionary_learning");
    run_case(
        "l1_dictionary_learning",
        l1_config(&case, Reconstruction::L2),
        |_, _| {},
    );
}

#[test]
fn l1_mse_step_matches_dictionary_learning_with_use_mse_loss() {
    let case = load("l1_dictionary_learning_mse");
    let metrics = run_case(
        "l1_dictionary_learning_mse",
        l1_config(&case, Reconstruction::Mse),
        |_, _| {},
    );
    // The reference's first update runs at learning rate fn(0) = 0 during warm-up: moments move, weights
    // do not (checked above against `after.0 == init`).
    assert_eq!(metrics[0].lr, 0.0);
}

#[test]
fn l1_step_matches_the_ckkissane_recipe() {
    let case = load("l1_ckkissane");
    let mut config = TrainConfig::ckkissane(
        2,
        16,
        48,
        case.hyper("total_steps").as_u64().unwrap() as usize,
    );
    config.lr = f(case.hyper("lr"));
    assert_eq!(
        config.objective,
        Objective::L1 {
            reconstruction: Reconstruction::SquaredSum,
            lambda: f(case.hyper("l1_coeff")),
            lambda_warmup_steps: 5,
        }
    );
    let metrics = run_case("l1_ckkissane", config, |_, _| {});
    assert!(
        metrics.iter().all(|m| m.clipped),
        "the fixture exercises clipping"
    );
}

fn batch_top_k_config(case: &Case) -> TrainConfig {
    let u = |k: &str| case.hyper(k).as_u64().unwrap() as usize;
    let mut config = TrainConfig::batch_top_k(2, 16, 48, u("steps"), u("k"));
    config.lr = f(case.hyper("lr"));
    config.schedule = LrSchedule {
        warmup_steps: u("warmup_steps"),
        decay_start: None,
    };
    config.objective = Objective::BatchTopK(BatchTopKObjective {
        k: u("k"),
        k_initial: u("k_initial"),
        k_annealing_steps: u("k_annealing_steps"),
        auxk_alpha: f(case.hyper("auxk_alpha")),
        top_k_aux: u("top_k_aux"),
        dead_tokens: case.hyper("dead_feature_threshold").as_u64().unwrap(),
        threshold_beta: case.hyper("threshold_beta").as_f64().unwrap(),
        threshold_start_step: case.hyper("threshold_start_step").as_i64().unwrap(),
    });
    config.grad_clip = Some(f(case.hyper("clip")));
    config
}

fn set_initial_batch_top_k_state(state: &mut TrainerState, case: &Case) {
    let init = &case.json["initial_state"];
    state.threshold = f(&init["threshold"]);
    state.tokens_since_fired = init["num_tokens_since_fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
}

#[test]
fn batch_top_k_step_zero_matches_dictionary_learning_with_geometric_median_and_threshold_init() {
    let case = load("batch_topk_step0");
    let metrics = run_case(
        "batch_topk_step0",
        batch_top_k_config(&case),
        set_initial_batch_top_k_state,
    );
    assert_eq!(metrics[0].auxk_loss, Some(0.0));
}

#[test]
fn batch_top_k_auxk_and_k_annealing_match_dictionary_learning() {
    let case = load("batch_topk_auxk_anneal");
    let metrics = run_case(
        "batch_topk_auxk_anneal",
        batch_top_k_config(&case),
        set_initial_batch_top_k_state,
    );
    assert!(metrics[0].auxk_loss.unwrap() > 0.0);
    assert_eq!(metrics[0].dead_latents, 12);
}

#[test]
fn lr_and_k_schedules_match_the_reference_functions() {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("training/lr_schedules.json")).unwrap(),
    )
    .unwrap();
    // Each table is `{"s" | "step": [...], "factor" | "k": [...]}`.
    let table = |key: &str| -> Vec<(usize, f32)> {
        let v = &json[key];
        let steps = v
            .get("s")
            .or(v.get("step"))
            .unwrap_or_else(|| panic!("{key}: {v}"));
        let values = v
            .get("factor")
            .or(v.get("k"))
            .unwrap_or_else(|| panic!("{key}: {v}"));
        let steps = steps
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap() as usize);
        steps
            .zip(values.as_array().unwrap().iter().map(f))
            .collect()
    };
    let check = |key: &str, schedule: LrSchedule, total: usize| {
        for (s, expected) in table(key) {
            let ours = schedule.factor(s, total);
            assert!(
                (ours - expected).abs() <= 1e-6,
                "{key} step {s}: {ours} vs {expected}"
            );
        }
    };
    check(
        "get_lr_schedule(100,10,80)",
        LrSchedule {
            warmup_steps: 10,
            decay_start: Some(80),
        },
        100,
    );
    check(
        "get_lr_schedule(100,0,None)",
        LrSchedule {
            warmup_steps: 0,
            decay_start: None,
        },
        100,
    );
    check(
        "CrossCoderTrainer warmup_steps=7",
        LrSchedule {
            warmup_steps: 7,
            decay_start: None,
        },
        100,
    );
    for (key, steps) in [
        (
            "BatchTopK k schedule (k_max=8, k=4, k_annealing_steps=10)",
            10,
        ),
        (
            "BatchTopK k schedule (k_max=8, k=4, k_annealing_steps=8)",
            8,
        ),
        (
            "BatchTopK k schedule (k_max=8, k=4, k_annealing_steps=0)",
            0,
        ),
    ] {
        let o = BatchTopKObjective {
            k: 4,
            k_initial: 8,
            k_annealing_steps: steps,
            auxk_alpha: 0.0,
            top_k_aux: 1,
            dead_tokens: 1,
            threshold_beta: 0.5,
            threshold_start_step: 0,
        };
        for (s, expected) in table(key) {
            assert_eq!(o.k_at(s) as f32, expected, "{key} step {s}");
        }
    }
}
