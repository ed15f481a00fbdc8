//! Caching on many workers, as a cluster runs it: `cache_activations` processes (the example
//! binaries) on the demo pair and corpus, each caching one task into the same store, some killed
//! with SIGKILL at random moments and rerun, then `--finalize`. The store must be byte-identical
//! (shards and manifest) to a one-process local run. On a loopback S3 server (`.ci/run` starts
//! the moto server; see `common/s3.rs`) and through the Slurm array script of `deploy/slurm/`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use activation_cache::{StoreLocation, TaskManifest, TaskPartition, MANIFEST_FILE};
use bytes::Bytes;
use common::{demo_dir, example};
use stereo_core::rng::SplitMix64;

const TASKS: usize = 4;

/// The caching flags every run here shares (small shards: the demo corpus makes 21 of them).
fn cache_flags(out: &str) -> Vec<String> {
    let demo = demo_dir();
    let path = |p: &str| demo.join(p).display().to_string();
    [
        "--base",
        &path("base"),
        "--chat",
        &path("chat"),
        "--corpus",
        &path("corpus.jsonl"),
        "--hook",
        "blocks.1.hook_resid_post",
        "--dtype",
        "bf16",
        "--shard-tokens",
        "4096",
        "--backend",
        "flex",
        "--out",
        out,
    ]
    .map(String::from)
    .to_vec()
}

fn cache_command(out: &str) -> Command {
    let mut command = Command::new(example("cache_activations"));
    command.args(cache_flags(out));
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The one-process local store: its directory, and file name -> bytes (manifest and shards).
fn reference_store() -> &'static (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    static REFERENCE: OnceLock<(tempfile::TempDir, BTreeMap<String, Vec<u8>>)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        run(cache_command(&dir.path().display().to_string()));
        let files: BTreeMap<_, _> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .map(|name| (name.clone(), std::fs::read(dir.path().join(&name)).unwrap()))
            .collect();
        assert!(files.len() > TASKS * 2, "{:?}", files.keys());
        assert!(files.contains_key(MANIFEST_FILE));
        (dir, files)
    })
}

fn reference() -> &'static BTreeMap<String, Vec<u8>> {
    &reference_store().1
}

/// Asserts the store at `location` holds the reference's manifest and shards, byte for byte,
/// and nothing else but task files.
fn assert_identical_to_reference(location: &str) {
    let store = StoreLocation::parse(location).unwrap();
    let keys: Vec<String> = store
        .list("")
        .unwrap()
        .into_iter()
        .filter(|k| !k.starts_with("tasks/"))
        .collect();
    let want: Vec<&String> = reference().keys().collect();
    assert_eq!(keys.iter().collect::<Vec<_>>(), want, "{location}");
    for (name, bytes) in reference() {
        let got = store.get(name).unwrap();
        assert!(
            got[..] == bytes[..],
            "{location}/{name} differs from the one-process run"
        );
    }
}

/// Worker `task` of [`TASKS`] into `out`, its messages in `log`.
fn spawn_worker(out: &str, task: usize, log: &Path) -> Child {
    let mut command = cache_command(out);
    command
        .args([
            "--num-tasks",
            &TASKS.to_string(),
            "--task-index",
            &task.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command.spawn().unwrap()
}

#[test]
fn four_workers_on_s3_two_killed_at_random_then_rerun_give_the_one_process_store() {
    let Some(prefix) = common::s3::fresh_prefix("four-workers") else {
        return;
    };
    reference();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = SplitMix64::new(seed);
    let first = rng.below(TASKS);
    let second = (first + 1 + rng.below(TASKS - 1)) % TASKS;
    // Each victim dies once its task manifest lists `committed` shards (0 to 3 of its 5 or 6),
    // plus up to 0.4 s: before, between or during uploads and commits.
    let victims: BTreeMap<usize, (usize, Duration)> = [first, second]
        .into_iter()
        .map(|task| {
            let moment = (rng.below(4), Duration::from_millis(rng.below(400) as u64));
            (task, moment)
        })
        .collect();
    eprintln!("seed {seed}: SIGKILL to tasks {victims:?} (committed shards, then delay)");
    let store = StoreLocation::parse(&prefix).unwrap();
    let committed = |task: usize| -> usize {
        let key = TaskPartition::new(task, TASKS).unwrap().manifest_key();
        store.get_optional(&key).unwrap().map_or(0, |bytes| {
            TaskManifest::parse(&store, &key, &bytes)
                .unwrap()
                .shards
                .len()
        })
    };
    let mut due: BTreeMap<usize, Instant> = BTreeMap::new();

    let logs = tempfile::tempdir().unwrap();
    let log = |task: usize, attempt: usize| logs.path().join(format!("task-{task}-{attempt}.log"));
    let start = Instant::now();
    let mut workers: Vec<Option<Child>> = (0..TASKS)
        .map(|task| Some(spawn_worker(&prefix, task, &log(task, 0))))
        .collect();
    let mut killed = Vec::new();
    while workers.iter().any(Option::is_some) {
        for (task, slot) in workers.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(log(task, 0)).unwrap();
                assert!(
                    status.success() || killed.contains(&task),
                    "task {task}: {status}\n{text}"
                );
                *slot = None;
            } else if let Some(&(shards, delay)) = victims.get(&task) {
                if !due.contains_key(&task) && committed(task) >= shards {
                    due.insert(task, Instant::now() + delay);
                }
                if due.get(&task).is_some_and(|at| Instant::now() >= *at) {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    eprintln!(
                        "task {task} killed after {:.2}s with {} shards committed",
                        start.elapsed().as_secs_f64(),
                        committed(task)
                    );
                    killed.push(task);
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "killed mid-run: {killed:?} (a worker that finished before its moment was not killed)"
    );
    for &task in &killed {
        // Not done: finalize refuses and names a task.
        let finalize = Command::new(example("cache_activations"))
            .args(["--finalize", "--out", &prefix])
            .output()
            .unwrap();
        assert!(!finalize.status.success());
        let message = String::from_utf8_lossy(&finalize.stderr);
        assert!(message.contains("is not done"), "{message}");
        let mut rerun = cache_command(&prefix);
        rerun.args([
            "--num-tasks",
            &TASKS.to_string(),
            "--task-index",
            &task.to_string(),
        ]);
        let output = run(rerun);
        eprintln!(
            "rerun of task {task}: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        assert!(store
            .size(&format!("tasks/task-{task:05}-of-{TASKS:05}.done"))
            .unwrap()
            .is_some());
    }
    let mut finalize = Command::new(example("cache_activations"));
    finalize.args(["--finalize", "--verify-checksums", "--out", &prefix]);
    run(finalize);
    assert_identical_to_reference(&prefix);
}

#[test]
fn a_foreign_shard_on_s3_is_refused_and_finalize_names_the_missing_task() {
    let Some(prefix) = common::s3::fresh_prefix("foreign-shard") else {
        return;
    };
    let store = StoreLocation::parse(&prefix).unwrap();
    // Task 1 of 4 owns shards 5..10 of the 21; another job's object sits at shard 7.
    let foreign = Bytes::from_static(b"{\"another\": \"job\"}");
    store
        .put_if_absent("shard-00007.safetensors", foreign.clone())
        .unwrap();
    let output = cache_command(&prefix)
        .args(["--num-tasks", "4", "--task-index", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("shard-00007.safetensors") && message.contains("foreign or corrupt"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(store.get("shard-00007.safetensors").unwrap(), foreign);

    store.delete("shard-00007.safetensors").unwrap();
    for task in [0, 1, 2] {
        let mut worker = cache_command(&prefix);
        worker.args(["--num-tasks", "4", "--task-index", &task.to_string()]);
        run(worker);
    }
    let output = Command::new(example("cache_activations"))
        .args(["--finalize", "--out", &prefix])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("task 3 of 4 is not done"), "{message}");
    assert!(message.contains("never started"), "{message}");
    assert!(store.size(MANIFEST_FILE).unwrap().is_none());
}

/// `deploy/slurm/<name>`.
fn slurm_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/slurm")
        .join(name)
}

#[test]
fn the_slurm_array_script_run_once_per_task_gives_the_one_process_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("file://{}", dir.path().join("store").display());
    let demo = demo_dir();
    let with_env = |command: &mut Command| {
        command
            .env("STEREO_BIN", example("cache_activations"))
            .env("STEREO_STORE", &out)
            .env("STEREO_CORPUS", demo.join("corpus.jsonl"))
            .env("STEREO_BASE", demo.join("base"))
            .env("STEREO_CHAT", demo.join("chat"))
            .env("STEREO_HOOK", "blocks.1.hook_resid_post")
            .env("STEREO_BACKEND", "flex")
            .env("STEREO_EXTRA_ARGS", "--shard-tokens 4096")
            .env_remove("JOB_COMPLETION_INDEX");
    };
    // `--array=1-4`: ids 1..=4 with SLURM_ARRAY_TASK_MIN=1, in a shuffled order.
    for id in [3, 1, 4, 2] {
        let mut command = Command::new("bash");
        command
            .arg(slurm_script("cache-array.sbatch"))
            .env("SLURM_ARRAY_TASK_ID", id.to_string())
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_MAX", "4")
            .env("SLURM_ARRAY_TASK_COUNT", "4");
        with_env(&mut command);
        let output = run(command);
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(
            message.contains(&format!("task {} of 4", id - 1)),
            "{message}"
        );
    }
    let mut finalize = Command::new("bash");
    finalize.arg(slurm_script("finalize.sbatch"));
    with_env(&mut finalize);
    run(finalize);
    assert_identical_to_reference(&out);
}

/// `train_crosscoder` on `store` into `out` for `steps` steps (a small L1 run).
fn train_command(store: &str, out: &Path, steps: usize) -> Command {
    train_command_window(store, out, steps, "3")
}

/// [`train_command`] with `window` shards per shuffle window.
fn train_command_window(store: &str, out: &Path, steps: usize, window: &str) -> Command {
    let mut command = Command::new(example("train_crosscoder"));
    command.args([
        "--store",
        store,
        "--shuffle-buffer-shards",
        window,
        "--dict-size",
        "32",
        "--objective",
        "l1",
        "--lambda",
        "1",
        "--batch-size",
        "256",
        "--lr",
        "1e-3",
        "--steps",
        &steps.to_string(),
        "--checkpoint-every",
        "5",
        "--seed",
        "11",
        "--out",
        &out.display().to_string(),
    ]);
    command
}

#[test]
fn training_from_s3_equals_training_from_disk_step_for_step_and_resumes_after_a_kill() {
    let Some(prefix) = common::s3::fresh_prefix("train-from-s3") else {
        return;
    };
    let (local, files) = reference_store();
    let store = StoreLocation::parse(&prefix).unwrap();
    for (name, bytes) in files {
        store.put(name, bytes.clone()).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let (from_disk, from_s3) = (out.path().join("disk"), out.path().join("s3"));
    let steps = 60;
    run(train_command(
        &local.path().display().to_string(),
        &from_disk,
        steps,
    ));
    run(train_command(&prefix, &from_s3, steps));
    for file in [
        "metrics.jsonl",
        "crosscoder.safetensors",
        "training_summary.json",
    ] {
        let (a, b) = (from_disk.join(file), from_s3.join(file));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{file} differs between the local and the S3 store"
        );
    }
    let metrics = std::fs::read_to_string(from_s3.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), steps);

    // Killed (SIGKILL) once a checkpoint past step 20 is written, then resumed from the bucket.
    let killed = out.path().join("killed");
    let mut child = train_command(&prefix, &killed, steps)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = killed.join("trainer.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let lines = std::fs::read_to_string(killed.join("metrics.jsonl"))
            .map(|m| m.lines().count())
            .unwrap_or(0);
        if (checkpoint.exists() && lines > 20) || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "training never reached step 20");
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished_first = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    eprintln!(
        "killed at {} metric lines (finished before the kill: {finished_first})",
        std::fs::read_to_string(killed.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    );
    let mut resume = train_command(&prefix, &killed, steps);
    resume.arg("--resume");
    run(resume);
    assert!(
        std::fs::read(killed.join("crosscoder.safetensors")).unwrap()
            == std::fs::read(from_s3.join("crosscoder.safetensors")).unwrap(),
        "the resumed run's crosscoder differs from the uninterrupted one"
    );
    // Resuming with another window would draw other batches: refused by name.
    let mut other_window = train_command_window(&prefix, &killed, steps, "2");
    other_window.arg("--resume");
    let output = other_window.output().unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("batch order") && message.contains("windows of 3 shards"),
        "{message}"
    );
}

/// The largest difference between the tensors of two safetensors files, relative to the largest value.
fn relative_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let floats = |t: safetensors::tensor::TensorView<'_>| -> Vec<f32> {
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (mut diff, mut scale) = (0f32, 0f32);
    for (name, tensor) in a.tensors() {
        if tensor.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let other = b.tensor(&name).unwrap();
        for (x, y) in floats(tensor).iter().zip(floats(other)) {
            diff = diff.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    diff / scale
}

#[test]
fn train_crosscoder_data_parallel_takes_the_steps_of_one_trainer() {
    let (local, _) = reference_store();
    let store = local.path().display().to_string();
    let out = tempfile::tempdir().unwrap();
    let (one, two) = (out.path().join("one"), out.path().join("two"));
    run(train_command(&store, &one, 30));
    let mut replicas = train_command(&store, &two, 30);
    replicas.args(["--data-parallel", "2"]);
    run(replicas);
    let difference = relative_difference(
        &one.join("crosscoder.safetensors"),
        &two.join("crosscoder.safetensors"),
    );
    eprintln!("2 replicas vs one trainer after 30 steps: relative difference {difference:e}");
    assert!(difference < 1e-4, "relative difference {difference}");
    // BatchTopK is refused by name.
    let output = Command::new(example("train_crosscoder"))
        .args([
            "--store",
            &store,
            "--dict-size",
            "32",
            "--objective",
            "batch-topk",
            "--k",
            "4",
        ])
        .args([
            "--batch-size",
            "256",
            "--steps",
            "2",
            "--data-parallel",
            "2",
        ])
        .arg("--out")
        .arg(out.path().join("topk"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("mean over rows"), "{message}");
}

#[test]
fn an_unreachable_object_store_is_retried_then_reported_by_name() {
    // Nothing listens on port 9 of loopback (discard); two retries with backoff, then the error.
    let start = Instant::now();
    let output = cache_command("s3://stereo-unreachable/store")
        .args(["--num-tasks", "2", "--task-index", "1"])
        .env("AWS_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("STEREO_OBJECT_STORE_RETRIES", "2")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("s3://stereo-unreachable/store/tasks/task-00001-of-00002.json"),
        "{message}"
    );
    assert!(
        message.contains("after 2 retries") || message.contains("retries"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    eprintln!(
        "reported after {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        message.lines().last().unwrap_or("")
    );
}
