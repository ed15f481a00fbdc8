//! Every numeric flag of every example is validated by the argument parser (`stereo::cli`), so that a
//! bad value (`--batch-size 0`, `--top-p 1.5`, `--lr nan`) is refused before any work starts. This test
//! reads the examples' `Args` structs and fails on a numeric field whose `#[arg(...)]` has no
//! `value_parser`, unless the field is one where any value is meaningful or that is checked against a
//! file once it is read.

use std::fs;
use std::path::Path;

/// Numeric flags taken as given, and why.
const ANY_VALUE: &[(&str, &str)] = &[
    ("seed", "every seed is a seed"),
    ("control_seed", "every seed is a seed"),
    (
        "task_index",
        "0 is a task; checked against --num-tasks (TaskPartition::resolve)",
    ),
    (
        "layer",
        "checked against the model's config once it is read",
    ),
    (
        "layers",
        "checked against the model's config once it is read",
    ),
    (
        "stop_at_layer",
        "checked against the model's config once it is read",
    ),
    (
        "latents",
        "checked against the crosscoder's dictionary once it is read",
    ),
    (
        "latent",
        "checked against the crosscoder's dictionary once it is read",
    ),
    ("k_annealing_steps", "0 means no annealing"),
];

const NUMERIC: &[&str] = &["usize", "u64", "u32", "u16", "i64", "f32", "f64"];

/// `(field, attribute text)` for each field of `struct Args` in `source`.
fn args_fields(source: &str) -> Vec<(String, String)> {
    let Some(start) = source.find("struct Args {") else {
        return Vec::new();
    };
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    let mut fields = Vec::new();
    let mut attribute = String::new();
    for line in body.lines().skip(1) {
        let line = line.trim();
        if line.starts_with("///") {
            continue;
        }
        if line.starts_with("#[") || (!attribute.is_empty() && !line.contains(": ")) {
            attribute.push_str(line);
            continue;
        }
        if let Some((name, ty)) = line.split_once(": ") {
            let name = name.trim_start_matches("pub ").to_string();
            let numeric = NUMERIC.iter().any(|n| {
                ty.split(|c: char| !c.is_alphanumeric())
                    .any(|token| token == *n)
            });
            if numeric {
                fields.push((name, attribute.clone()));
            }
            attribute.clear();
        }
    }
    fields
}

#[test]
fn every_numeric_flag_of_every_example_has_a_value_parser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    let mut missing = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let source = fs::read_to_string(&path).unwrap();
        for (field, attribute) in args_fields(&source) {
            checked += 1;
            let exempt = ANY_VALUE.iter().any(|(name, _)| *name == field);
            if !exempt && !attribute.contains("value_parser = stereo::cli::") {
                missing.push(format!("{}: --{}", path.display(), field.replace('_', "-")));
            }
        }
    }
    assert!(
        checked > 30,
        "found only {checked} numeric flags: is the parser of this test broken?"
    );
    assert!(
        missing.is_empty(),
        "numeric flags without a stereo::cli value parser:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_flag_reader_sees_a_flag_without_a_parser() {
    let source = "struct Args {\n    /// Rows.\n    #[arg(long, default_value_t = 8)]\n    batch_size: usize,\n    #[arg(long, value_parser = stereo::cli::count)]\n    steps: usize,\n    name: String,\n}\n";
    let fields = args_fields(source);
    assert_eq!(fields.len(), 2);
    assert_eq!(fields[0].0, "batch_size");
    assert!(!fields[0].1.contains("value_parser"));
    assert!(fields[1].1.contains("value_parser = stereo::cli::count"));
}
