//! Training on the device against the reference backend: each objective (the ckkissane L1 recipe,
//! dictionary_learning's L1 `CrossCoderTrainer` and its `BatchTopKCrossCoderTrainer`) runs three steps from
//! the same initial weights on the same batches on both; the losses, the gradients before clipping of every
//! step and the weights after the last step must agree. (The CPU backends themselves are held to the Python
//! trainers by `crates/crosscoder/tests/training_parity.rs`.)

use crosscoder::throughput::uniform;
use crosscoder::CrosscoderWeights;
use crosscoder_train::{StepMetrics, TrainConfig, TrainerState};
use ndarray::Array3;
use stereo_core::BackendKind;

use super::golden::Tally;
use super::{CheckError, CheckOptions, CheckRecord};

const N_MODELS: usize = 2;
const D: usize = 48;
const DICT: usize = 96;
const ROWS: usize = 64;
const STEPS: usize = 3;

/// The objectives, each with the recipe's own hyper-parameters at a small size.
fn objectives() -> [(&'static str, TrainConfig); 3] {
    [
        (
            "ckkissane L1",
            TrainConfig::ckkissane(N_MODELS, D, DICT, 100),
        ),
        (
            "dictionary_learning L1",
            TrainConfig::dictionary_learning_l1(N_MODELS, D, DICT, 100, 0.05),
        ),
        (
            "dictionary_learning BatchTopK",
            TrainConfig::batch_top_k(N_MODELS, D, DICT, 100, 8),
        ),
    ]
}

/// Step metrics and gradients of every step, and the final weights.
struct Run {
    metrics: Vec<StepMetrics>,
    gradients: Vec<CrosscoderWeights>,
    weights: CrosscoderWeights,
}

fn train(
    state: TrainerState,
    backend: BackendKind,
    batches: &[Array3<f32>],
) -> Result<Run, CheckError> {
    let mut trainer = state.build(backend)?;
    let mut metrics = Vec::new();
    let mut gradients = Vec::new();
    for batch in batches {
        let (m, g) = trainer.step_with_gradients(batch.view())?;
        metrics.push(m);
        gradients.push(g);
    }
    let weights = trainer.state()?.weights;
    Ok(Run {
        metrics,
        gradients,
        weights,
    })
}

fn flat(w: &CrosscoderWeights) -> [(&'static str, Vec<f64>); 4] {
    let v = |it: &mut dyn Iterator<Item = &f32>| it.map(|x| *x as f64).collect::<Vec<f64>>();
    [
        ("encoder.weight", v(&mut w.w_enc.iter())),
        ("encoder.bias", v(&mut w.b_enc.iter())),
        ("decoder.weight", v(&mut w.w_dec.iter())),
        ("decoder.bias", v(&mut w.b_dec.iter())),
    ]
}

fn compare_weights(
    tally: &mut Tally,
    what: &str,
    ours: &CrosscoderWeights,
    reference: &CrosscoderWeights,
) {
    for ((name, a), (_, e)) in flat(ours).into_iter().zip(flat(reference)) {
        let a: Vec<f32> = a.iter().map(|x| *x as f32).collect();
        tally.compare(&format!("{what} {name}"), &a, &e);
    }
}

pub fn check(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    let mut tally = Tally::new("training_step", options.tolerances.training);
    let batches: Vec<Array3<f32>> = (0..STEPS as u64)
        .map(|s| {
            Array3::from_shape_vec(
                (ROWS, N_MODELS, D),
                uniform(ROWS * N_MODELS * D, 100 + s, 1.0),
            )
            .expect("shape")
        })
        .collect();
    for (name, config) in objectives() {
        let state = TrainerState::new(config, 7)?;
        let ours = train(state.clone(), options.backend, &batches)?;
        let reference = train(state, options.reference_backend, &batches)?;
        for (i, (a, e)) in ours.metrics.iter().zip(&reference.metrics).enumerate() {
            let tag = format!("{name} step {i}");
            tally.compare(&format!("{tag} loss"), &[a.loss], &[e.loss as f64]);
            tally.compare(
                &format!("{tag} grad norm"),
                &[a.grad_norm],
                &[e.grad_norm as f64],
            );
            tally.require(
                &format!("{tag} clipped the same ({} vs {})", a.clipped, e.clipped),
                a.clipped == e.clipped,
            );
            compare_weights(
                &mut tally,
                &format!("{tag} gradient"),
                &ours.gradients[i],
                &reference.gradients[i],
            );
        }
        compare_weights(
            &mut tally,
            &format!("{name} weights after {STEPS} steps"),
            &ours.weights,
            &reference.weights,
        );
        let last = ours.metrics.last().expect("steps ran");
        tally.note(format!(
            "{name}: {STEPS} steps of {ROWS} x {N_MODELS} x {D} -> {DICT}, loss {:.5} ({}) vs {:.5} ({})",
            last.loss,
            options.backend,
            reference.metrics.last().expect("steps ran").loss,
            options.reference_backend
        ));
    }
    Ok(tally.finish())
}
