//! Helpers shared by the demo tests: where the embedded demo lives and what it planted.
#![allow(dead_code)]

use std::path::PathBuf;

/// `fixtures/demo` at the workspace root.
pub fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

/// `(mechanism, measured direction)` of each plant, from `demo.json`.
pub fn planted_directions() -> Vec<(String, Vec<f32>)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap())
            .unwrap();
    manifest["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let direction = m["measured_direction"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (m["mechanism"].as_str().unwrap().to_string(), direction)
        })
        .collect()
}

pub mod browser;
