//! Training on synthetic activations with a known ground truth: a sparse dictionary of true features, some
//! in both models (with the same or a rotated direction), some only in model 0 (base), some only in model 1
//! (chat). A trained crosscoder must recover most true features (decoder cosine > 0.9) and classify the
//! exclusive ones by relative decoder norm, with both objectives. Also: an interrupted run resumed from its
//! checkpoint equals an uninterrupted one, bit for bit.

use crosscoder::{BackendKind, CrosscoderError, BASE, CHAT};
use crosscoder_train::{
    fit, FitOptions, Objective, Reconstruction, StepMetrics, TrainConfig, TrainerState,
};
use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const D: usize = 32;
const SHARED_SAME: usize = 12;
const SHARED_ROTATED: usize = 12;
const BASE_ONLY: usize = 8;
const CHAT_ONLY: usize = 8;
const N_TRUE: usize = SHARED_SAME + SHARED_ROTATED + BASE_ONLY + CHAT_ONLY;

/// Which models a true feature lives in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Shared,
    BaseOnly,
    ChatOnly,
}

/// The ground truth: per feature, its kind and its direction in each model (zero where absent).
struct Truth {
    kinds: Vec<Kind>,
    /// `[2, N_TRUE, D]`.
    directions: Array3<f32>,
}

fn unit(rng: &mut ChaCha8Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..D).map(|_| StandardNormal.sample(rng)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn truth() -> Truth {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut directions = Array3::<f32>::zeros((2, N_TRUE, D));
    let mut kinds = Vec::new();
    for i in 0..N_TRUE {
        let kind = if i < SHARED_SAME + SHARED_ROTATED {
            Kind::Shared
        } else if i < SHARED_SAME + SHARED_ROTATED + BASE_ONLY {
            Kind::BaseOnly
        } else {
            Kind::ChatOnly
        };
        let base = unit(&mut rng);
        // Rotated shared features point elsewhere in the chat model.
        let chat = if (SHARED_SAME..SHARED_SAME + SHARED_ROTATED).contains(&i) {
            unit(&mut rng)
        } else {
            base.clone()
        };
        for k in 0..D {
            if kind != Kind::ChatOnly {
                directions[[BASE, i, k]] = base[k];
            }
            if kind != Kind::BaseOnly {
                directions[[CHAT, i, k]] = chat[k];
            }
        }
        kinds.push(kind);
    }
    Truth { kinds, directions }
}

/// A batch `[rows, 2, D]`: each feature fires with probability 0.06 and magnitude in [0.5, 1.5).
fn batch(truth: &Truth, rows: usize, seed: u64) -> Array3<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array3::<f32>::zeros((rows, 2, D));
    for r in 0..rows {
        for i in 0..N_TRUE {
            if rng.random::<f32>() < 0.06 {
                let a = 0.5 + rng.random::<f32>();
                for m in 0..2 {
                    for k in 0..D {
                        x[[r, m, k]] += a * truth.directions[[m, i, k]];
                    }
                }
            }
        }
    }
    x
}

/// For each true feature, the best latent's concatenated-decoder cosine and that latent's relative norm
/// `n_chat / (n_base + n_chat)`.
fn match_features(truth: &Truth, w_dec: &Array3<f32>) -> Vec<(f32, f32)> {
    let f = w_dec.dim().1;
    let latent: Array2<f32> = Array2::from_shape_fn((f, 2 * D), |(j, c)| w_dec[[c / D, j, c % D]]);
    let norms: Vec<[f32; 2]> = (0..f)
        .map(|j| {
            let n = |m: usize| (0..D).map(|k| w_dec[[m, j, k]].powi(2)).sum::<f32>().sqrt();
            [n(BASE), n(CHAT)]
        })
        .collect();
    (0..N_TRUE)
        .map(|i| {
            let t: Vec<f32> = (0..2 * D)
                .map(|c| truth.directions[[c / D, i, c % D]])
                .collect();
            let tn = t.iter().map(|v| v * v).sum::<f32>().sqrt();
            let (best, cos) = (0..f)
                .map(|j| {
                    let row = latent.row(j);
                    let dot: f32 = row.iter().zip(&t).map(|(a, b)| a * b).sum();
                    let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    (j, dot / (n * tn))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            let [nb, nc] = norms[best];
            (cos, nc / (nb + nc))
        })
        .collect()
}

/// Trains `config` on fresh synthetic batches and checks recovery and classification.
fn train_and_check(config: TrainConfig, name: &str) {
    let truth = truth();
    let rows = config.batch_size;
    let mut trainer = TrainerState::new(config, 1)
        .unwrap()
        .build(BackendKind::Flex)
        .unwrap();
    let options = FitOptions {
        progress: false,
        ..FitOptions::default()
    };
    let summary = fit(
        trainer.as_mut(),
        |step| Ok(batch(&truth, rows, 1000 + step as u64)),
        &options,
    )
    .unwrap();
    let last = summary.last.unwrap();
    eprintln!("{name}: final {last:?}");
    let trained = trainer.crosscoder().unwrap();
    let matches = match_features(&truth, &trained.weights().w_dec);
    let recovered = matches.iter().filter(|(cos, _)| *cos > 0.9).count();
    eprintln!("{name}: recovered {recovered}/{N_TRUE}");
    for (i, ((cos, r), kind)) in matches.iter().zip(&truth.kinds).enumerate() {
        eprintln!("  feature {i:2} {kind:?}: cos {cos:.3} relative norm {r:.3}");
    }
    assert!(
        recovered * 10 >= N_TRUE * 9,
        "{name}: only {recovered}/{N_TRUE} features recovered"
    );
    for ((cos, r), kind) in matches.iter().zip(&truth.kinds) {
        if *cos <= 0.9 {
            continue;
        }
        match kind {
            Kind::ChatOnly => assert!(
                *r > 0.9,
                "{name}: a chat-only feature's latent has relative norm {r}"
            ),
            Kind::BaseOnly => assert!(
                *r < 0.1,
                "{name}: a base-only feature's latent has relative norm {r}"
            ),
            Kind::Shared => assert!(
                (0.1..0.9).contains(r),
                "{name}: a shared feature's latent has relative norm {r}"
            ),
        }
    }
    assert!(
        last.fvu.iter().all(|v| *v < 0.2),
        "{name}: FVU {:?}",
        last.fvu
    );
}

#[test]
fn l1_recovers_shared_and_exclusive_features() {
    let mut config = TrainConfig::ckkissane(2, D, 96, 3000);
    config.batch_size = 256;
    config.lr = 3e-3;
    config.objective = Objective::L1 {
        reconstruction: Reconstruction::SquaredSum,
        lambda: 0.3,
        lambda_warmup_steps: 150,
    };
    train_and_check(config, "l1");
}

#[test]
fn batch_top_k_recovers_shared_and_exclusive_features() {
    let mut config = TrainConfig::batch_top_k(2, D, 96, 3000, 3);
    config.batch_size = 256;
    config.lr = 3e-3;
    if let Objective::BatchTopK(o) = &mut config.objective {
        o.dead_tokens = 50_000;
    }
    train_and_check(config, "batch-topk");
}

/// Runs `config` from scratch to `until`, with a batch source that fails at `fail_at` (a simulated crash).
fn run(
    config: &TrainConfig,
    dir: &std::path::Path,
    until: usize,
    fail_at: Option<usize>,
    resume: bool,
) -> Result<Vec<StepMetrics>, CrosscoderError> {
    let truth = truth();
    let checkpoint = dir.join("trainer.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let state = if resume {
        TrainerState::load(&checkpoint)?
    } else {
        TrainerState::new(config.clone(), 3)?
    };
    let mut trainer = state.build(BackendKind::Flex)?;
    let options = FitOptions {
        until_step: Some(until),
        checkpoint: Some(checkpoint),
        checkpoint_every: 10,
        metrics: Some(metrics.clone()),
        progress: false,
    };
    fit(
        trainer.as_mut(),
        |step| {
            if Some(step) == fail_at {
                return Err(CrosscoderError::TrainingData {
                    step,
                    reason: "simulated crash".into(),
                });
            }
            Ok(batch(&truth, 64, 50 + step as u64))
        },
        &options,
    )?;
    Ok(std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

#[test]
fn resumed_training_equals_uninterrupted_training() {
    for config in [
        TrainConfig::batch_top_k(2, D, 48, 40, 3),
        TrainConfig::ckkissane(2, D, 48, 40),
    ] {
        let mut config = config;
        config.lr = 1e-2;
        if let Objective::BatchTopK(o) = &mut config.objective {
            o.dead_tokens = 256; // so AuxK and its counters take part
        }
        let straight = tempfile::tempdir().unwrap();
        let expected = run(&config, straight.path(), 40, None, false).unwrap();

        let crashed = tempfile::tempdir().unwrap();
        // Crash at step 13: the checkpoint says step 10, the metrics file already has steps 0..=12.
        let err = run(&config, crashed.path(), 40, Some(13), false).unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        assert_eq!(
            TrainerState::load(crashed.path().join("trainer.safetensors"))
                .unwrap()
                .step,
            10
        );
        let resumed = run(&config, crashed.path(), 40, None, true).unwrap();

        assert_eq!(resumed.len(), 40, "each step once in the metrics");
        assert_eq!(resumed, expected, "{} metrics", config.objective.name());
        let a = TrainerState::load(straight.path().join("trainer.safetensors")).unwrap();
        let b = TrainerState::load(crashed.path().join("trainer.safetensors")).unwrap();
        assert_eq!(a, b, "{}: final state", config.objective.name());
        // The trained crosscoder loads through the same loader as every other format.
        let out = crashed.path().join("crosscoder");
        b.crosscoder().unwrap().save(&out).unwrap();
        let loaded = crosscoder::CrosscoderLoader::new(out.to_string_lossy())
            .load_checkpoint()
            .unwrap();
        assert_eq!(loaded.weights(), &b.weights);
    }
}

#[test]
fn bad_batches_and_checkpoints_are_typed_errors() {
    let config = TrainConfig::batch_top_k(2, D, 48, 10, 3);
    let mut trainer = TrainerState::new(config, 0)
        .unwrap()
        .build(BackendKind::NdArray)
        .unwrap();
    let err = trainer
        .step(Array3::<f32>::zeros((4, 2, D + 1)).view())
        .unwrap_err();
    assert!(err.to_string().contains("d=32"), "{err}");
    let mut bad = Array3::<f32>::zeros((4, 2, D));
    bad[[0, 1, 2]] = f32::NAN;
    let err = trainer.step(bad.view()).unwrap_err();
    assert!(err.to_string().contains("(0, 1, 2)"), "{err}");
    // Activations whose squares overflow: the loss is infinite, the step is refused and nothing changes.
    let before = trainer.state().unwrap();
    let huge = Array3::<f32>::from_elem((4, 2, D), 1e30);
    let err = trainer.step(huge.view()).unwrap_err();
    assert!(
        matches!(err, CrosscoderError::Diverged { step: 0, .. }),
        "{err}"
    );
    assert_eq!(trainer.state().unwrap(), before);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trainer.safetensors");
    trainer.state().unwrap().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = TrainerState::load(&path).unwrap_err();
    assert!(err.to_string().contains("trainer.safetensors"), "{err}");
    // A crosscoder checkpoint is not a trainer checkpoint.
    let cc = dir.path().join("cc");
    trainer.crosscoder().unwrap().save(&cc).unwrap();
    let err = TrainerState::load(cc.join("crosscoder.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("not a trainer checkpoint"),
        "{err}"
    );
}

#[test]
fn resuming_on_other_training_data_is_refused() {
    let models = vec![
        "google/gemma-2-2b".to_string(),
        "google/gemma-2-2b-it".into(),
    ];
    let hook = stereo_core::hook::HookPoint::ResidPost(13);
    let state = TrainerState::new(TrainConfig::ckkissane(2, D, 48, 10), 0)
        .unwrap()
        .with_metadata(models.clone(), Some(hook));
    state.check_same_data(&models, Some(hook), D).unwrap();
    let refused = |models: &[String], hook: Option<_>, d: usize, field: &str| match state
        .check_same_data(models, hook, d)
    {
        Err(CrosscoderError::ResumeMismatch { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected a mismatch in {field}, got {other:?}"),
    };
    refused(&models, Some(hook), D + 1, "d_model");
    let swapped = vec![models[1].clone(), models[0].clone()];
    refused(&swapped, Some(hook), D, "models[0]");
    refused(&models[..1], Some(hook), D, "the model count");
    let other = stereo_core::hook::HookPoint::ResidPre(14);
    refused(&models, Some(other), D, "hook");
    refused(&models, None, D, "hook");
    let err = state.check_same_data(&models, Some(other), D).unwrap_err();
    assert!(
        err.to_string().contains("blocks.14.hook_resid_pre"),
        "{err}"
    );
    // A state without recorded metadata checks the width only.
    let bare = TrainerState::new(TrainConfig::ckkissane(2, D, 48, 10), 0).unwrap();
    bare.check_same_data(&swapped, None, D).unwrap();
}
