//! Data-parallel training through burn's collective all-reduce: replicas on the CPU (burn's CPU
//! backends have one device, which the replicas share) take the same steps, step for step, as one
//! trainer with the whole batch; objectives that do not split by rows are refused; a replica that
//! fails makes every replica fail instead of leaving them waiting.
//!
//! One test function: burn's local collective is one per backend type and process.

use std::sync::mpsc;
use std::time::Duration;

use crosscoder::{BackendKind, CrosscoderError, CrosscoderWeights};
use crosscoder_train::data_parallel::DataParallelTrainer;
use crosscoder_train::{fit, CrosscoderTrainer, FitOptions, TrainConfig, TrainerState};
use ndarray::Array3;
use stereo_core::rng::SplitMix64;

const D: usize = 16;
const F: usize = 48;
const ROWS: usize = 24;
const STEPS: usize = 6;

fn batch(step: usize) -> Array3<f32> {
    let mut rng = SplitMix64::new(1000 + step as u64);
    Array3::from_shape_fn((ROWS, 2, D), |(_, m, k)| {
        (rng.uniform() as f32 - 0.5) * 2.0 + if m == 1 && k % 3 == 0 { 0.7 } else { 0.0 }
    })
}

fn config() -> TrainConfig {
    let mut config = TrainConfig::ckkissane(2, D, F, STEPS);
    config.batch_size = ROWS;
    config.lr = 5e-3;
    config
}

/// The largest difference between two sets of weights, relative to the largest weight.
fn relative_difference(a: &CrosscoderWeights, b: &CrosscoderWeights) -> f32 {
    let flat = |w: &CrosscoderWeights| -> Vec<f32> {
        w.w_enc
            .iter()
            .chain(w.b_enc.iter())
            .chain(w.w_dec.iter())
            .chain(w.b_dec.iter())
            .copied()
            .collect()
    };
    let (mut diff, mut scale) = (0f32, 0f32);
    for (p, q) in flat(a).iter().zip(flat(b)) {
        diff = diff.max((p - q).abs());
        scale = scale.max(p.abs());
    }
    diff / scale
}

/// Runs `f` with a deadline: a hang (replicas waiting on each other) fails the test.
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || send.send(f()).ok());
    receive
        .recv_timeout(Duration::from_secs(seconds))
        .expect("the data-parallel run did not finish (replicas waiting on each other?)")
}

fn group(state: &TrainerState, replicas: usize) -> DataParallelTrainer {
    let state = state.clone();
    within(120, move || {
        DataParallelTrainer::new(state, BackendKind::Flex, replicas)
    })
    .unwrap()
}

#[test]
fn replicas_take_the_steps_of_one_trainer_with_the_whole_batch() {
    let start = TrainerState::new(config(), 7).unwrap();
    // One trainer, the whole batch, its weights after every step.
    let mut single = start.clone().build(BackendKind::Flex).unwrap();
    let mut expected = Vec::new();
    for step in 0..STEPS {
        single.step(batch(step).view()).unwrap();
        expected.push(single.state().unwrap().weights);
    }
    for replicas in [2, 3, 4] {
        let mut largest = 0f32;
        let mut trainer = group(&start, replicas);
        for (step, want) in expected.iter().enumerate() {
            let metrics = trainer.step(batch(step).view()).unwrap();
            assert_eq!(metrics.step, step);
            let state = trainer.state().unwrap();
            assert_eq!(state.step, step + 1);
            let difference = relative_difference(&state.weights, want);
            assert!(
                difference < 2e-6,
                "{replicas} replicas, step {step}: relative difference {difference}"
            );
            largest = largest.max(difference);
        }
        eprintln!(
            "{replicas} replicas: largest relative difference over {STEPS} steps {largest:e}"
        );
        // The moved weights are not the start's: the test compares real steps.
        let state = trainer.state().unwrap();
        assert!(relative_difference(&state.weights, &start.weights) > 1e-3);
    }

    // The training loop drives a group like any trainer; a resumed state continues in a new group.
    let mut trainer: Box<dyn CrosscoderTrainer> = Box::new(group(&start, 2));
    let options = FitOptions {
        until_step: Some(3),
        progress: false,
        ..FitOptions::default()
    };
    fit(trainer.as_mut(), |s| Ok(batch(s)), &options).unwrap();
    let halfway = trainer.state().unwrap();
    drop(trainer);
    let mut trainer: Box<dyn CrosscoderTrainer> = Box::new(group(&halfway, 3));
    let options = FitOptions {
        until_step: None,
        progress: false,
        ..FitOptions::default()
    };
    fit(trainer.as_mut(), |s| Ok(batch(s)), &options).unwrap();
    let state = trainer.state().unwrap();
    assert_eq!(state.step, STEPS);
    assert!(relative_difference(&state.weights, &expected[STEPS - 1]) < 2e-6);
    drop(trainer);

    // A non-finite value in the last replica's block: every replica fails the step, none waits
    // forever, and the group's state stays the last good one.
    let mut trainer = group(&start, 2);
    trainer.step(batch(0).view()).unwrap();
    let mut poisoned = batch(1);
    poisoned[[ROWS - 1, 0, 3]] = f32::NAN;
    let err = within(120, move || {
        let err = trainer.step(poisoned.view()).unwrap_err();
        (err, trainer.state().unwrap().step)
    });
    assert!(
        matches!(err.0, CrosscoderError::TrainingData { step: 1, .. }),
        "{}",
        err.0
    );
    assert_eq!(err.1, 1);

    // Refused: BatchTopK (its top-k spans the whole batch), rows that do not split, no replica.
    let top_k = TrainerState::new(TrainConfig::batch_top_k(2, D, F, STEPS, 4), 7).unwrap();
    let err = DataParallelTrainer::new(top_k, BackendKind::Flex, 2).unwrap_err();
    assert!(err.to_string().contains("mean over rows"), "{err}");
    let err = DataParallelTrainer::new(start.clone(), BackendKind::Flex, 5).unwrap_err();
    assert!(
        err.to_string().contains("5 equal data-parallel shares"),
        "{err}"
    );
    let mut trainer = group(&start, 2);
    let err = trainer
        .step(batch(0).slice(ndarray::s![..ROWS - 1, .., ..]))
        .unwrap_err();
    assert!(err.to_string().contains("multiple of the 2"), "{err}");
    assert!(DataParallelTrainer::new(start, BackendKind::Flex, 0).is_err());
}
