//! The device check runs its checks on the CPU backends too, so the program the GPU node runs is tested
//! everywhere: ndarray against flex must pass every check at the CPU suite's tolerances, a tolerance of zero
//! must fail them (the comparisons are real), and the measurements run at tiny shapes.

use std::path::PathBuf;

use stereo::backend::BackendKind;
use stereo::gemma::Gemma2Config;
use stereo::gpu_check::{self, BenchShapes, CheckOptions, Tolerances};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn options(dir: &std::path::Path, tolerances: Tolerances) -> CheckOptions {
    CheckOptions {
        backend: BackendKind::NdArray,
        reference_backend: BackendKind::Flex,
        fixtures: fixtures(),
        tolerances,
        bench: None,
        reference: None,
        report_path: dir.join("gpu_report.json"),
    }
}

#[test]
fn every_check_passes_on_ndarray_against_flex_and_the_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let report = gpu_check::run(&options(dir.path(), Tolerances::F32)).unwrap();
    for c in &report.checks {
        println!("{}: {} ({:.1} s)", c.name, c.summary, c.seconds);
        for d in &c.details {
            println!("    {d}");
        }
    }
    assert_eq!(report.checks.len(), 6);
    assert!(report.all_passed, "{:#?}", report.checks);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("gpu_report.json")).unwrap())
            .unwrap();
    assert_eq!(written["all_passed"], true);
    assert_eq!(written["checks"].as_array().unwrap().len(), 6);
}

#[test]
fn the_parity_checks_fail_when_nothing_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let zero = Tolerances {
        gemma: 0.0,
        crosscoder: 0.0,
        training: 0.0,
        demo: 0.0,
    };
    let options = options(dir.path(), zero);
    let gemma = gpu_check::gemma_parity(&options).unwrap();
    assert!(!gemma.passed, "{}", gemma.summary);
    assert!(gemma.worst_relative_error.unwrap() > 0.0);
    let cc = gpu_check::crosscoder_parity(&options).unwrap();
    assert!(!cc.passed, "{}", cc.summary);
    let generation = gpu_check::generation(&options).unwrap();
    assert!(!generation.passed, "{}", generation.summary);
}

#[test]
fn the_bf16_check_runs_the_models_in_bf16_on_flex_and_the_host_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let options = CheckOptions {
        backend: BackendKind::Flex,
        ..options(dir.path(), Tolerances::F32)
    };
    let record = gpu_check::bf16_parity(&options).unwrap();
    assert!(record.passed, "{:#?}", record);
    // Both models compared (not refused), and the widening kernel checked on every CPU.
    assert_eq!(
        record
            .details
            .iter()
            .filter(|d| d.contains("to HF-bf16"))
            .count(),
        2,
        "{:#?}",
        record.details
    );
    assert!(record
        .details
        .iter()
        .any(|d| d.starts_with("widening kernel")));
}

#[test]
fn a_missing_fixture_folder_is_a_failed_check_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path(), Tolerances::F32);
    options.fixtures = dir.path().join("nowhere");
    let report = gpu_check::run(&options).unwrap();
    assert!(!report.all_passed);
    let gemma = &report.checks[0];
    assert!(gemma.summary.contains("nowhere"), "{}", gemma.summary);
}

#[test]
fn measurements_run_at_tiny_shapes_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let config = Gemma2Config::from_file(fixtures().join("gemma/tiny-window/config.json")).unwrap();
    let shapes = BenchShapes {
        d_model: 16,
        dict_sizes: vec![32],
        encode_rows: vec![8, 24],
        gemma: config,
        stop_at_layer: 1,
        forward: (2, 5),
        repeats: 2,
    };
    let mut steps = gpu_check::throughput::plan(&shapes);
    assert_eq!(steps.len(), 2);
    let forward = steps.pop().unwrap().run(BackendKind::Flex).unwrap();
    assert_eq!(forward[0].name, "forward/2x5");
    assert_eq!(forward[0].seconds.len(), 2);
    let encode = steps.pop().unwrap().run(BackendKind::Flex).unwrap();
    let names: Vec<&str> = encode.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "encode/F32/N8",
            "encode/F32/N24",
            "gemm/F32/N8",
            "gemm/F32/N24"
        ]
    );
    assert!(encode
        .iter()
        .all(|m| m.tokens_per_second > 0.0 && m.precision == "f32"));
    drop(dir);
}
