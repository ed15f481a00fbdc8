//! `gpu_report.json`: what was checked and measured, written atomically after every step.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::{CheckOptions, Tolerances};

/// The report's format tag.
pub const REPORT_FORMAT: &str = "stereo-gpu-check/1";

/// Writing the report failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report file could not be written.
    #[error("cannot write the report: {0}")]
    Write(#[from] stereo_core::atomic_file::FileError),
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRecord {
    /// The check's name (`gemma_parity`, ...).
    pub name: String,
    /// Whether everything it compared was within tolerance.
    pub passed: bool,
    /// One line for people.
    pub summary: String,
    /// The tolerance it applied (relative to each tensor's largest value), if it compares numbers.
    pub tolerance: Option<f64>,
    /// The largest relative error it saw, if it compares numbers.
    pub worst_relative_error: Option<f64>,
    /// One line per compared item.
    pub details: Vec<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl CheckRecord {
    /// A check that could not complete.
    pub fn failed(name: &str, summary: String) -> Self {
        CheckRecord {
            name: name.into(),
            passed: false,
            summary,
            tolerance: None,
            worst_relative_error: None,
            details: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// One measured workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The workload's name, shared with `gpu_reference.py` (`encode/F16384/N4096`, `forward/32x128`, ...).
    pub name: String,
    /// The backend.
    pub backend: String,
    /// Precision of the products (`tf32` on burn-cuda f32, `f32` on the CPU).
    pub precision: String,
    /// Tokens (rows) per second at the median repetition.
    pub tokens_per_second: f64,
    /// Achieved GFLOP/s of the matrix products at the median repetition, where counted.
    pub gflops: Option<f64>,
    /// Seconds of each timed repetition.
    pub seconds: Vec<f64>,
}

impl Measurement {
    /// One line for the log.
    pub fn describe(&self) -> String {
        format!(
            "{} [{} {}]: {:.0} tokens/s{}",
            self.name,
            self.backend,
            self.precision,
            self.tokens_per_second,
            self.gflops
                .map_or(String::new(), |g| format!(", {:.1} TFLOP/s", g / 1e3))
        )
    }
}

/// Ours beside PyTorch's for one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The workload.
    pub name: String,
    /// PyTorch's variant (`f32`, `tf32`, `bf16`).
    pub torch_precision: String,
    /// Our tokens/s.
    pub ours: f64,
    /// PyTorch's tokens/s.
    pub torch: f64,
    /// `ours / torch`.
    pub ratio: f64,
}

/// Everything one run of the check found.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    /// [`REPORT_FORMAT`].
    pub format: String,
    /// The backend under test.
    pub backend: String,
    /// The backend compared against where the reference is "the CPU result".
    pub reference_backend: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// The tolerances applied.
    pub tolerances: Tolerances,
    /// The checks, in order.
    pub checks: Vec<CheckRecord>,
    /// Whether every check passed (false until the run has finished).
    pub all_passed: bool,
    /// The measurements, in order.
    pub measurements: Vec<Measurement>,
    /// Measurements that failed, with why.
    pub measurement_errors: Vec<String>,
    /// `gpu_reference.py`'s JSON, as it was.
    pub torch_reference: Option<Value>,
    /// Ours beside PyTorch, per workload and PyTorch precision.
    pub comparisons: Vec<Comparison>,
}

impl GpuReport {
    /// An empty report for `options`.
    pub fn new(options: &CheckOptions) -> Self {
        GpuReport {
            format: REPORT_FORMAT.into(),
            backend: options.backend.to_string(),
            reference_backend: options.reference_backend.to_string(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            tolerances: options.tolerances,
            checks: Vec::new(),
            all_passed: false,
            measurements: Vec::new(),
            measurement_errors: Vec::new(),
            torch_reference: None,
            comparisons: Vec::new(),
        }
    }

    /// Reads `gpu_reference.py`'s JSON and pairs its measurements with ours by name. A missing or broken file
    /// is recorded as a measurement error, not fatal.
    pub fn attach_reference(&mut self, path: &Path) {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(value) => {
                self.comparisons = compare(&self.measurements, &value);
                self.torch_reference = Some(value);
            }
            Err(e) => self
                .measurement_errors
                .push(format!("PyTorch reference {}: {e}", path.display())),
        }
    }

    /// Sets [`GpuReport::all_passed`].
    pub fn finish(&mut self) {
        self.all_passed = !self.checks.is_empty() && self.checks.iter().all(|c| c.passed);
    }

    /// Writes the report (pretty JSON) through a temporary file, so a reader never sees half of it.
    ///
    /// # Errors
    /// [`ReportError::Write`] naming the path.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).expect("the report serialises");
        Ok(stereo_core::atomic_file::write_atomic(
            path,
            text.as_bytes(),
        )?)
    }
}

/// Pairs each of our measurements with PyTorch's of the same name (every precision PyTorch ran).
fn compare(ours: &[Measurement], torch: &Value) -> Vec<Comparison> {
    let Some(theirs) = torch.get("measurements").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in ours {
        for t in theirs {
            let same = t.get("name").and_then(Value::as_str) == Some(m.name.as_str());
            let rate = t.get("tokens_per_second").and_then(Value::as_f64);
            if let (true, Some(rate)) = (same, rate) {
                out.push(Comparison {
                    name: m.name.clone(),
                    torch_precision: t
                        .get("precision")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .into(),
                    ours: m.tokens_per_second,
                    torch: rate,
                    ratio: m.tokens_per_second / rate,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(name: &str, rate: f64) -> Measurement {
        Measurement {
            name: name.into(),
            backend: "cuda".into(),
            precision: "tf32".into(),
            tokens_per_second: rate,
            gflops: None,
            seconds: vec![1.0],
        }
    }

    #[test]
    fn comparisons_pair_by_name_for_every_torch_precision() {
        let torch = serde_json::json!({"measurements": [
            {"name": "encode/F16384/N4096", "precision": "f32", "tokens_per_second": 100.0},
            {"name": "encode/F16384/N4096", "precision": "tf32", "tokens_per_second": 400.0},
            {"name": "forward/32x128", "precision": "f32", "tokens_per_second": 50.0},
            {"name": "unmatched", "precision": "f32", "tokens_per_second": 1.0}
        ]});
        let ours = [
            measurement("encode/F16384/N4096", 200.0),
            measurement("forward/32x128", 25.0),
        ];
        let c = compare(&ours, &torch);
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].torch_precision.as_str(), c[0].ratio), ("f32", 2.0));
        assert_eq!((c[1].torch_precision.as_str(), c[1].ratio), ("tf32", 0.5));
        assert_eq!((c[2].name.as_str(), c[2].ratio), ("forward/32x128", 0.5));
    }

    #[test]
    fn a_broken_reference_file_is_recorded_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torch.json");
        std::fs::write(&path, "{not json").unwrap();
        let options = CheckOptions {
            backend: stereo_core::BackendKind::Flex,
            reference_backend: stereo_core::BackendKind::NdArray,
            fixtures: dir.path().into(),
            tolerances: Tolerances::F32,
            bench: None,
            reference: None,
            report_path: dir.path().join("r.json"),
        };
        let mut report = GpuReport::new(&options);
        report.attach_reference(&path);
        assert!(report.torch_reference.is_none());
        assert!(report.measurement_errors[0].contains("torch.json"));
        report.finish();
        assert!(!report.all_passed, "no checks ran");
    }
}
