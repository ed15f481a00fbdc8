//! The deploy files are exercised, not just written: the Kubernetes manifests validate against the
//! Kubernetes API schemas offline (`kubernetes-validate`, strict), the Dockerfile passes `hadolint`,
//! and every program and flag the manifests, the Slurm scripts and the Dockerfile name is one the
//! tested example binaries accept. (The Slurm scripts are also run: `tests/distributed_cache.rs`.)
//!
//! The checkers come from PyPI (`.ci/python-tools.txt`); `.ci/run` installs them and sets
//! `STEREO_DEPLOY_TOOLS` to their `bin` folder. Without them those two checks are skipped with a
//! message, unless `STEREO_REQUIRE_DEPLOY_TOOLS=1`, where that is a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::example;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const MANIFESTS: [&str; 4] = [
    "settings.yaml",
    "cache-job.yaml",
    "finalize-job.yaml",
    "train-job.yaml",
];

/// `$STEREO_DEPLOY_TOOLS/<name>`, or `None` (skipped with a message).
fn tool(name: &str) -> Option<PathBuf> {
    let dir = std::env::var("STEREO_DEPLOY_TOOLS").ok().map(PathBuf::from);
    let path = dir.map(|d| d.join(name)).filter(|p| p.exists());
    if path.is_none() {
        assert!(
            std::env::var("STEREO_REQUIRE_DEPLOY_TOOLS").as_deref() != Ok("1"),
            "STEREO_REQUIRE_DEPLOY_TOOLS=1 but {name} is not in $STEREO_DEPLOY_TOOLS"
        );
        eprintln!(
            "SKIPPED the {name} check: install .ci/python-tools.txt and set STEREO_DEPLOY_TOOLS"
        );
    }
    path
}

fn validate(validator: &Path, file: &Path) -> std::process::Output {
    Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let Some(validator) = tool("kubernetes-validate") else {
        return;
    };
    for name in MANIFESTS {
        let file = root().join("deploy/kubernetes").join(name);
        let output = validate(&validator, &file);
        assert!(
            output.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The validator is not a rubber stamp: a field that does not exist is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/cache-job.yaml")).unwrap();
    std::fs::write(&broken, text.replace("completionMode:", "completionMood:")).unwrap();
    assert!(!validate(&validator, &broken).status.success());
    // The kustomization lists files that exist.
    let kustomization =
        std::fs::read_to_string(root().join("deploy/kubernetes/kustomization.yaml")).unwrap();
    for line in kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
    {
        if line.ends_with(".yaml") {
            assert!(
                root().join("deploy/kubernetes").join(line).exists(),
                "{line}"
            );
        }
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let output = Command::new(hadolint)
        .arg(root().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The examples the Dockerfile builds (its `--example` arguments).
fn dockerfile_programs() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "--example")
        .map(|w| w[1].to_string())
        .collect()
}

/// `(program, flags)` of every command in the deploy files: the Kubernetes containers' `command`
/// and `--flag` arguments, the Slurm scripts' `cache_activations` flags.
fn deploy_commands() -> Vec<(String, String, Vec<String>)> {
    let mut commands = Vec::new();
    for name in ["cache-job.yaml", "finalize-job.yaml", "train-job.yaml"] {
        let text = without_comments(
            &std::fs::read_to_string(root().join("deploy/kubernetes").join(name)).unwrap(),
        );
        let program = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("command: [\""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{name} has no command"))
            .to_string();
        commands.push((name.to_string(), program, flags_in(&text)));
    }
    for name in ["cache-array.sbatch", "finalize.sbatch"] {
        let text = std::fs::read_to_string(root().join("deploy/slurm").join(name)).unwrap();
        // The command: from its `exec` to the end.
        let body = without_comments(&text);
        let body = &body[body
            .find("exec ")
            .unwrap_or_else(|| panic!("{name} has no exec"))..];
        commands.push((name.to_string(), "cache_activations".into(), flags_in(body)));
    }
    commands
}

/// `text` without its comment lines.
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `--flag` words of `text` (without `=value`).
fn flags_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '[' || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_image_runs_the_tested_programs_with_flags_they_accept() {
    let built = dockerfile_programs();
    assert!(built.contains("cache_activations") && built.contains("train_crosscoder"));
    for program in &built {
        assert!(
            root()
                .join("examples")
                .join(format!("{program}.rs"))
                .exists(),
            "the Dockerfile builds {program}, which is not an example"
        );
    }
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let entrypoint = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT [\""))
        .and_then(|rest| rest.split('"').next())
        .expect("an ENTRYPOINT");
    assert!(built.contains(entrypoint), "{entrypoint} is not built");
    for (file, program, flags) in deploy_commands() {
        assert!(
            built.contains(&program),
            "{file} runs {program}, which the image lacks"
        );
        let help = Command::new(example(&program))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{file}: {program} has no flag {flag}"
            );
        }
    }
}
