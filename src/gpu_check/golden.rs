//! Golden tensors and the error measure every parity check uses.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{CheckError, CheckRecord};

/// One tensor of a golden file, widened to f64 (integers as their values).
#[derive(Debug, Clone)]
pub struct GoldenTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f64>,
}

impl GoldenTensor {
    /// The values narrowed to f32 (for inputs that were stored as f32).
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().map(|v| *v as f32).collect()
    }
}

/// Every F32, F64 and I64 tensor of a safetensors file, by name.
pub fn read_golden(path: &Path) -> Result<HashMap<String, GoldenTensor>, CheckError> {
    let bytes = std::fs::read(path).map_err(|e| CheckError::fixture(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| CheckError::fixture(path, e))?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                .collect(),
            other => {
                return Err(CheckError::fixture(
                    path,
                    format!("`{name}` has dtype {other:?}, expected F32, F64 or I64"),
                ))
            }
        };
        out.insert(
            name,
            GoldenTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// The tensor `name` of a golden file read from `path`.
pub fn tensor<'a>(
    golden: &'a HashMap<String, GoldenTensor>,
    path: &Path,
    name: &str,
) -> Result<&'a GoldenTensor, CheckError> {
    golden
        .get(name)
        .ok_or_else(|| CheckError::fixture(path, format!("no tensor `{name}`")))
}

/// Reads a JSON file into `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckError::fixture(path, e))?;
    serde_json::from_str(&text).map_err(|e| CheckError::fixture(path, e))
}

/// `max |a - b| / max |b|`: the relative error of every parity check. Infinite when the lengths differ or a
/// value is not finite.
pub fn relative_error(actual: &[f32], expected: &[f64]) -> f64 {
    if actual.len() != expected.len() {
        return f64::INFINITY;
    }
    let scale = expected.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    let mut diff = 0f64;
    for (a, b) in actual.iter().zip(expected) {
        let d = (*a as f64 - b).abs();
        if !d.is_finite() {
            return f64::INFINITY;
        }
        diff = diff.max(d);
    }
    diff / scale
}

/// Collects the comparisons of one check: the worst error, what exceeded the tolerance, and a line per item.
#[derive(Debug)]
pub struct Tally {
    name: String,
    tolerance: f64,
    worst: (f64, String),
    compared: usize,
    failures: Vec<String>,
    details: Vec<String>,
}

impl Tally {
    /// A tally for check `name` at `tolerance`.
    pub fn new(name: &str, tolerance: f64) -> Self {
        Tally {
            name: name.into(),
            tolerance,
            worst: (0.0, String::new()),
            compared: 0,
            failures: Vec::new(),
            details: Vec::new(),
        }
    }

    /// Compares one tensor (or scalar) `what`.
    pub fn compare(&mut self, what: &str, actual: &[f32], expected: &[f64]) {
        let err = relative_error(actual, expected);
        self.record(what, err);
    }

    /// Records an error measured elsewhere.
    pub fn record(&mut self, what: &str, err: f64) {
        self.compared += 1;
        if err > self.worst.0 || err.is_nan() {
            self.worst = (err, what.to_string());
        }
        if err.is_nan() || err > self.tolerance {
            self.failures
                .push(format!("{what}: relative error {err:.2e}"));
        }
    }

    /// Records a condition that must hold (a chosen latent, a status).
    pub fn require(&mut self, what: &str, holds: bool) {
        self.compared += 1;
        if !holds {
            self.failures.push(what.to_string());
        }
    }

    /// Adds a line to the details.
    pub fn note(&mut self, line: String) {
        self.details.push(line);
    }

    /// The record: passed when nothing exceeded the tolerance and every requirement held.
    pub fn finish(mut self) -> CheckRecord {
        let passed = self.failures.is_empty() && self.compared > 0;
        let summary = format!(
            "{} comparisons, worst relative error {:.2e} ({}) at tolerance {:.0e}{}",
            self.compared,
            self.worst.0,
            if self.worst.1.is_empty() {
                "-"
            } else {
                &self.worst.1
            },
            self.tolerance,
            if passed {
                String::new()
            } else {
                format!(
                    "; {} failed, first: {}",
                    self.failures.len(),
                    self.failures.first().map_or("nothing compared", |s| s)
                )
            }
        );
        self.details
            .extend(self.failures.iter().map(|f| format!("FAILED {f}")));
        CheckRecord {
            name: self.name,
            passed,
            summary,
            tolerance: Some(self.tolerance),
            worst_relative_error: Some(self.worst.0),
            details: self.details,
            seconds: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_is_scaled_by_the_largest_expected_value() {
        assert_eq!(relative_error(&[1.0, 2.0], &[1.0, 4.0]), 0.5);
        assert_eq!(relative_error(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(relative_error(&[f32::NAN], &[1.0]), f64::INFINITY);
    }

    #[test]
    fn a_tally_fails_on_any_excess_or_broken_requirement() {
        let mut t = Tally::new("x", 1e-3);
        t.compare("a", &[1.0], &[1.0]);
        assert!(t.finish().passed);
        let mut t = Tally::new("x", 1e-3);
        t.compare("a", &[1.1], &[1.0]);
        let r = t.finish();
        assert!(!r.passed);
        assert!(r.summary.contains("a: relative error"), "{}", r.summary);
        let mut t = Tally::new("x", 1e-3);
        t.require("latent 3 chosen", false);
        assert!(!t.finish().passed);
        assert!(!Tally::new("empty", 1.0).finish().passed);
    }
}
