//! The statistics against SciPy's numbers for the same inputs
//! (`fixtures/diff-analysis/generate_stats_fixtures.py` -> `stats_fixtures.json`).

use diff_analysis::stats::{auroc, benjamini_hochberg, paired_summary, sign_flip_test};
use diff_analysis::PermutationOptions;
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/diff-analysis/stats_fixtures.json"
    );
    let text = std::fs::read_to_string(path).expect("stats fixtures present");
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn paired_summaries_match_scipy() {
    let f = fixtures();
    for case in f["paired"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let x = floats(&case["x"]);
        let y = floats(&case["y"]);
        let d: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
        let s = paired_summary(&d);
        assert_eq!(s.n, case["n"].as_u64().unwrap() as usize, "{name}");
        assert!(
            close(s.mean, case["mean"].as_f64().unwrap(), 1e-12),
            "{name} mean {}",
            s.mean
        );
        assert!(
            close(s.sd, case["sd"].as_f64().unwrap(), 1e-12),
            "{name} sd {}",
            s.sd
        );
        assert!(
            close(s.effect_size, case["d_z"].as_f64().unwrap(), 1e-12),
            "{name} d_z"
        );
        // d_z * sqrt(n) is scipy's paired t statistic.
        let t = s.effect_size * (s.n as f64).sqrt();
        assert!(
            close(t, case["t_statistic"].as_f64().unwrap(), 1e-10),
            "{name} t {t}"
        );
        assert!(
            close(
                s.sign_fraction,
                case["fraction_positive"].as_f64().unwrap(),
                0.0
            ),
            "{name}"
        );
    }
}

#[test]
fn exact_sign_flip_p_values_match_scipy_permutation_test() {
    let f = fixtures();
    let exact = PermutationOptions {
        exact_max_items: 20,
        ..PermutationOptions::default()
    };
    for case in f["paired"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let d: Vec<f64> = floats(&case["x"])
            .iter()
            .zip(floats(&case["y"]))
            .map(|(a, b)| a - b)
            .collect();
        let r = sign_flip_test(&d, &exact, 0);
        assert!(r.exact, "{name}");
        let expected = case["permutation_pvalue_exact"].as_f64().unwrap();
        assert!(
            close(r.p_value, expected, 1e-12),
            "{name}: {} vs scipy {expected}",
            r.p_value
        );
    }
}

#[test]
fn monte_carlo_p_value_is_within_sampling_error_of_scipy_exact() {
    let f = fixtures();
    let case = f["paired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sparse_relu_n20")
        .expect("the n = 20 case");
    let d: Vec<f64> = floats(&case["x"])
        .iter()
        .zip(floats(&case["y"]))
        .map(|(a, b)| a - b)
        .collect();
    let expected = case["permutation_pvalue_exact"].as_f64().unwrap();
    let options = PermutationOptions {
        exact_max_items: 16,
        max_resamples: 400_000,
        stop_after_exceedances: usize::MAX,
        seed: 3,
    };
    let r = sign_flip_test(&d, &options, 0);
    assert!(!r.exact);
    let se = (expected * (1.0 - expected) / r.resamples as f64).sqrt();
    assert!(
        (r.p_value - expected).abs() < 4.0 * se,
        "Monte Carlo {} vs exact {expected} (se {se})",
        r.p_value
    );
}

#[test]
fn benjamini_hochberg_matches_scipy_false_discovery_control() {
    let f = fixtures();
    for case in f["benjamini_hochberg"].as_array().unwrap() {
        let p = floats(&case["p"]);
        let expected = floats(&case["q"]);
        let q = benjamini_hochberg(&p);
        for (a, b) in q.iter().zip(&expected) {
            assert!(close(*a, *b, 1e-12), "{q:?} vs {expected:?}");
        }
    }
}

#[test]
fn auroc_matches_mann_whitney_u() {
    let f = fixtures();
    for case in f["auroc"].as_array().unwrap() {
        let a = auroc(&floats(&case["positive"]), &floats(&case["negative"])).unwrap();
        let expected = case["auroc"].as_f64().unwrap();
        assert!(close(a, expected, 1e-12), "{a} vs {expected}");
    }
}
