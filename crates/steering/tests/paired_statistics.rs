//! The forced choice's paired statistics equal SciPy's on fixed numbers
//! (`fixtures/steering/paired_statistics.json`, written by `generate_paired_fixture.py` beside it):
//! mean, sd, the 95% t interval (`ttest_1samp(d).confidence_interval`), the sign-flip p-value
//! (`permutation_test(..., permutation_type='samples')`, exact up to 20 items), and `t.ppf`.

use serde_json::Value;
use steering::{PairedStats, EXACT_SIGN_FLIP_MAX_ITEMS, SIGN_FLIP_RESAMPLES};
use stereo_core::paired::t_quantile;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/steering/paired_statistics.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1.0)
}

#[test]
fn paired_statistics_equal_scipy() {
    let f = fixture();
    assert_eq!(
        f["exact_max_items"].as_u64().unwrap() as usize,
        EXACT_SIGN_FLIP_MAX_ITEMS
    );
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let d: Vec<f64> = case["d"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let stats = PairedStats::of_changes(&d);
        let field = |k: &str| case[k].as_f64().unwrap();
        assert_eq!(stats.n, d.len(), "{name}");
        for (ours, key) in [
            (stats.mean, "mean"),
            (stats.sd, "sd"),
            (stats.ci_low, "ci_low"),
            (stats.ci_high, "ci_high"),
        ] {
            assert!(
                close(ours, field(key), 1e-10),
                "{name} {key}: {ours} vs SciPy {}",
                field(key)
            );
        }
        let exact = case["p_exact"].as_bool().unwrap();
        assert_eq!(stats.exact, exact, "{name}");
        if exact {
            assert!(
                close(stats.p_value, field("p_value"), 1e-12),
                "{name} p: {} vs SciPy {}",
                stats.p_value,
                field("p_value")
            );
        } else {
            // Two Monte Carlo estimates (ours 200,000 draws, SciPy's 2,000,000): within 5 standard errors.
            let p = field("p_value");
            let se = (p * (1.0 - p) / SIGN_FLIP_RESAMPLES as f64).sqrt();
            assert!(
                (stats.p_value - p).abs() < 5.0 * se,
                "{name} p: {} vs SciPy {p}",
                stats.p_value
            );
        }
    }
    let cauchy = t_quantile(0.975, 1.0);
    assert!((cauchy - (0.475 * std::f64::consts::PI).tan()).abs() < 1e-12);
}

#[test]
fn t_quantiles_equal_scipy() {
    for q in fixture()["t_quantiles"].as_array().unwrap() {
        let (p, df, t) = (
            q["p"].as_f64().unwrap(),
            q["df"].as_f64().unwrap(),
            q["t"].as_f64().unwrap(),
        );
        let ours = t_quantile(p, df);
        // 1e-10: at df = 1 SciPy (Boost) gives 12.706204736432, ours 12.706204736175, and the exact
        // Cauchy quantile tan(0.475 pi) is 12.706204736174707.
        assert!(
            close(ours, t, 1e-10),
            "t.ppf({p}, {df}): {ours} vs SciPy {t}"
        );
    }
}
