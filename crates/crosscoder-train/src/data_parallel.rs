//! Data-parallel training on the devices of one machine through burn's collective operations
//! (`burn-collective`, the all-reduce burn's own data-parallel learner uses): every replica holds the
//! whole crosscoder, steps on its share of each batch, and before clipping and Adam the replicas'
//! gradients are averaged by `burn_collective::all_reduce` (mean), and the latents that fired are
//! merged (sum, so a latent is alive if it fired on any replica). With equal shares the averaged
//! gradient is the gradient of the whole batch, so the replicas take the same steps as one process
//! with the whole batch (to floating-point summation order).
//!
//! Only objectives whose loss is a mean of per-row terms split this way: the L1 recipes. BatchTopK
//! keeps the top `k x rows` activations of the whole batch, which no replica sees, and a geometric
//! median decoder-bias initialisation needs the whole first batch; both are refused.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{
    all_reduce, finish_collective, register, CollectiveConfig, PeerId, ReduceOperation,
};
use std::sync::mpsc;
use std::thread::JoinHandle;

use ndarray::{s, Array3, ArrayView3};

use crate::config::{DecoderBiasInit, Objective};
use crate::{CrosscoderTrainer, StepMetrics, TrainConfig, TrainerState};
use crosscoder::{BackendKind, CrosscoderError, Result};

/// How a replica names its failure when another replica's step failed (the group then reports the
/// failing replica's own error).
pub(crate) const OTHER_REPLICAS: &str = "the data-parallel step of";

/// Whether `error` only says that another replica failed.
fn is_collateral(error: &CrosscoderError) -> bool {
    matches!(error, CrosscoderError::Diverged { what, .. } if what.starts_with(OTHER_REPLICAS))
}

/// This replica's place in a data-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// This replica, `0..replicas`.
    pub index: usize,
    /// Replicas in the group.
    pub replicas: usize,
}

fn collective_error(what: &str, e: burn_collective::CollectiveError) -> CrosscoderError {
    CrosscoderError::Device(format!("data-parallel {what} failed: {e:?}"))
}

/// Refuses configurations whose steps do not split by rows (see the module docs).
pub(crate) fn check_splittable(config: &TrainConfig, step: usize) -> Result<()> {
    if !matches!(config.objective, Objective::L1 { .. }) {
        return Err(CrosscoderError::InvalidOption(format!(
            "data-parallel training needs a loss that is a mean over rows (the L1 objectives); {} \
             selects latents over the whole batch",
            config.objective.name()
        )));
    }
    if step == 0 && config.decoder_bias_init == DecoderBiasInit::GeometricMedian {
        return Err(CrosscoderError::InvalidOption(
            "data-parallel training cannot start with a geometric-median decoder bias (it needs the \
             whole first batch): start with --decoder-bias-init zeros, or resume after step 0"
                .into(),
        ));
    }
    Ok(())
}

/// Joins the group as `replica` on `device` (burn's local collective: one call per replica, each
/// from its own thread).
pub(crate) fn join<B: Backend>(replica: Replica, device: &B::Device) -> Result<()> {
    let config = CollectiveConfig::default().with_num_devices(replica.replicas);
    register::<B>(PeerId::from(replica.index), device.clone(), config)
        .map_err(|e| collective_error("registration", e))
}

/// Leaves the group.
pub(crate) fn leave<B: Backend>(replica: Replica) -> Result<()> {
    finish_collective::<B>(PeerId::from(replica.index)).map_err(|e| collective_error("leaving", e))
}

/// The mean (or sum) of `tensor` over the group.
pub(crate) fn reduce<B: Backend>(
    replica: Replica,
    tensor: Tensor<B, 2>,
    op: ReduceOperation,
) -> Result<Tensor<B, 2>> {
    let reduced = all_reduce::<B>(
        PeerId::from(replica.index),
        tensor.into_primitive().tensor(),
        op,
    )
    .map_err(|e| collective_error("all-reduce", e))?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
}

/// Which latents fired on any replica, from this replica's `fired`.
pub(crate) fn merge_fired<B: Backend>(
    replica: Replica,
    fired: &[bool],
    device: &B::Device,
) -> Result<Vec<bool>> {
    let local: Vec<f32> = fired.iter().map(|&f| f32::from(u8::from(f))).collect();
    let tensor = Tensor::<B, 1>::from_floats(local.as_slice(), device).reshape([1, fired.len()]);
    let any = reduce(replica, tensor, ReduceOperation::Sum)?;
    let any =
        stereo_core::host::download2(any).map_err(|e| CrosscoderError::Device(e.to_string()))?;
    Ok(any.iter().map(|&c| c > 0.0).collect())
}

/// What the group asks of a replica's thread.
enum Command {
    Step(Array3<f32>),
    State,
}

/// What a replica's thread answers.
enum Reply {
    Ready(Result<()>),
    Step(Result<StepMetrics>),
    State(Box<Result<TrainerState>>),
}

/// One replica: its thread and the channels to it.
struct ReplicaThread {
    commands: Option<mpsc::Sender<Command>>,
    replies: mpsc::Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

/// A [`CrosscoderTrainer`] that trains on `replicas` devices at once (see the module docs): each
/// step cuts the batch into `replicas` equal row blocks, replica `i` (a thread with its own trainer on
/// device `i`) steps on block `i`, and burn's collective all-reduce averages the gradients. Metrics
/// are replica 0's (its block's loss and FVU); the state is replica 0's (every replica holds the same
/// parameters). Use it wherever a trainer goes ([`crate::fit`], [`crate::store::train_on_store`]).
pub struct DataParallelTrainer {
    config: TrainConfig,
    backend: BackendKind,
    step: usize,
    replicas: Vec<ReplicaThread>,
}

impl std::fmt::Debug for DataParallelTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallelTrainer")
            .field("backend", &self.backend)
            .field("replicas", &self.replicas.len())
            .field("step", &self.step)
            .finish()
    }
}

impl DataParallelTrainer {
    /// Starts `replicas` replicas of `state` on devices `0..replicas` of `backend` (the first GPUs for
    /// CUDA; the CPU, shared, for the CPU backends) and forms the group.
    ///
    /// # Errors
    /// [`CrosscoderError::InvalidOption`] for zero replicas or an objective that does not split by
    /// rows; a replica's build or registration error.
    pub fn new(state: TrainerState, backend: BackendKind, replicas: usize) -> Result<Self> {
        if replicas == 0 {
            return Err(CrosscoderError::InvalidOption(
                "data-parallel training needs at least one replica".into(),
            ));
        }
        check_splittable(&state.config, state.step)?;
        if !state.config.batch_size.is_multiple_of(replicas) {
            return Err(CrosscoderError::InvalidOption(format!(
                "batch size {} does not split into {replicas} equal data-parallel shares",
                state.config.batch_size
            )));
        }
        let (config, step) = (state.config.clone(), state.step);
        let threads: Vec<ReplicaThread> = (0..replicas)
            .map(|index| spawn_replica(state.clone(), backend, Replica { index, replicas }))
            .collect();
        let mut trainer = DataParallelTrainer {
            config,
            backend,
            step,
            replicas: threads,
        };
        let ready: Vec<Result<()>> = trainer
            .replicas
            .iter()
            .map(|r| match r.replies.recv() {
                Ok(Reply::Ready(result)) => result,
                _ => Err(replica_lost()),
            })
            .collect();
        for result in ready {
            if let Err(e) = result {
                trainer.stop();
                return Err(e);
            }
        }
        Ok(trainer)
    }

    /// Sends `command` to every replica and collects the answers.
    fn ask(&self, mut command: impl FnMut(usize) -> Command) -> Vec<Option<Reply>> {
        for (i, replica) in self.replicas.iter().enumerate() {
            if let Some(commands) = &replica.commands {
                let _ = commands.send(command(i));
            }
        }
        self.replicas
            .iter()
            .map(|r| r.replies.recv().ok())
            .collect()
    }

    /// Ends the replicas' threads (they leave the group).
    fn stop(&mut self) {
        for replica in &mut self.replicas {
            replica.commands = None;
        }
        for replica in &mut self.replicas {
            if let Some(thread) = replica.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for DataParallelTrainer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn replica_lost() -> CrosscoderError {
    CrosscoderError::Device("a data-parallel replica stopped".into())
}

/// Starts replica `replica`'s thread: build, join, then answer commands until the channel closes.
fn spawn_replica(state: TrainerState, backend: BackendKind, replica: Replica) -> ReplicaThread {
    let (command_sender, commands) = mpsc::channel::<Command>();
    let (reply_sender, replies) = mpsc::channel::<Reply>();
    let thread = std::thread::spawn(move || {
        let trainer = state
            .build_on(backend, replica.index)
            .and_then(|mut trainer| {
                trainer.join_data_parallel(replica)?;
                Ok(trainer)
            });
        let mut trainer = match trainer {
            Ok(trainer) => {
                let _ = reply_sender.send(Reply::Ready(Ok(())));
                trainer
            }
            Err(e) => {
                let _ = reply_sender.send(Reply::Ready(Err(e)));
                return;
            }
        };
        for command in commands {
            let reply = match command {
                Command::Step(block) => Reply::Step(trainer.step(block.view())),
                Command::State => Reply::State(Box::new(trainer.state())),
            };
            if reply_sender.send(reply).is_err() {
                break;
            }
        }
        let _ = trainer.leave_data_parallel();
    });
    ReplicaThread {
        commands: Some(command_sender),
        replies,
        thread: Some(thread),
    }
}

impl CrosscoderTrainer for DataParallelTrainer {
    fn config(&self) -> &TrainConfig {
        &self.config
    }

    fn backend(&self) -> BackendKind {
        self.backend
    }

    fn step_index(&self) -> usize {
        self.step
    }

    fn step(&mut self, batch: ArrayView3<'_, f32>) -> Result<StepMetrics> {
        let (rows, replicas) = (batch.dim().0, self.replicas.len());
        if rows == 0 || !rows.is_multiple_of(replicas) {
            return Err(CrosscoderError::TrainingData {
                step: self.step,
                reason: format!(
                    "{rows} rows are not a positive multiple of the {replicas} data-parallel replicas"
                ),
            });
        }
        let share = rows / replicas;
        let replies = self.ask(|i| {
            Command::Step(
                batch
                    .slice(s![i * share..(i + 1) * share, .., ..])
                    .to_owned(),
            )
        });
        let results: Vec<Result<StepMetrics>> = replies
            .into_iter()
            .map(|reply| match reply {
                Some(Reply::Step(result)) => result,
                _ => Err(replica_lost()),
            })
            .collect();
        // A failing replica fails them all: report its own error, not the others' echo of it.
        if results.iter().any(Result::is_err) {
            let mut errors: Vec<CrosscoderError> =
                results.into_iter().filter_map(Result::err).collect();
            let own = errors.iter().position(|e| !is_collateral(e)).unwrap_or(0);
            return Err(errors.swap_remove(own));
        }
        let metrics = results
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(replica_lost()))?;
        self.step += 1;
        Ok(metrics)
    }

    fn step_with_gradients(
        &mut self,
        _batch: ArrayView3<'_, f32>,
    ) -> Result<(StepMetrics, crosscoder::CrosscoderWeights)> {
        Err(CrosscoderError::InvalidOption(
            "a data-parallel trainer does not return gradients; step a single trainer".into(),
        ))
    }

    fn state(&self) -> Result<TrainerState> {
        // Every replica holds the same state: replica 0's is read.
        let first = &self.replicas[0];
        let sent = first.commands.as_ref().map(|c| c.send(Command::State));
        match (sent, first.replies.recv()) {
            (Some(Ok(())), Ok(Reply::State(state))) => *state,
            _ => Err(replica_lost()),
        }
    }

    fn join_data_parallel(&mut self, _replica: Replica) -> Result<()> {
        Err(CrosscoderError::InvalidOption(
            "a data-parallel trainer is already a group".into(),
        ))
    }

    fn leave_data_parallel(&mut self) -> Result<()> {
        Ok(())
    }
}
