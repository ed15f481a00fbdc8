//! Dashboards of known values: every statistic checked by hand, context windows that stop at document
//! edges, one context per document, interval samples inside their interval, and typed errors.

use std::path::PathBuf;

use gemma_model::GemmaTokenizer;
use latent_dashboard::{
    build_dashboards, dashboards_page, DashboardError, DashboardOptions, PrecomputedValues,
};
use model_pair::{TokenMeta, TokenRole};
use ndarray::Array2;

fn tokenizer() -> GemmaTokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gemma/tiny-window/tokenizer.json");
    GemmaTokenizer::from_file(path).unwrap()
}

/// Two documents of 6 and 4 tokens: `<bos>`, then user tokens; document 1's last two tokens are the
/// assistant's.
fn tokens() -> Vec<TokenMeta> {
    let mut out = Vec::new();
    for (prompt, len) in [(0usize, 6usize), (1, 4)] {
        for position in 0..len {
            out.push(TokenMeta {
                prompt,
                position,
                token_id: 10 + position as u32,
                is_bos: position == 0,
                is_pad: false,
                is_template: false,
                is_assistant: prompt == 1 && position >= 2,
            });
        }
    }
    out
}

/// Latent 7: 0, 1, 0, 4, 2, 0 | 0, 3, 0.5, 0 (the `<bos>` rows are 0); latent 9 never fires.
fn values() -> PrecomputedValues {
    let v7 = [0.0, 1.0, 0.0, 4.0, 2.0, 0.0, 0.0, 3.0, 0.5, 0.0];
    let values = Array2::from_shape_fn((10, 2), |(r, c)| if c == 0 { v7[r] } else { 0.0 });
    PrecomputedValues::new(tokens(), vec![7, 9], values).unwrap()
}

#[test]
fn statistics_contexts_and_intervals_of_known_values() {
    let options = DashboardOptions {
        top_contexts: 5,
        intervals: 2,
        per_interval: 2,
        window_before: 2,
        window_after: 1,
        histogram_bins: 4,
        ..DashboardOptions::default()
    };
    let dashboards = build_dashboards(&values(), &[7, 9], &tokenizer(), &options, false).unwrap();
    let d = &dashboards[0];
    assert_eq!(d.latent, 7);
    // <bos> rows are left out: 8 tokens, 5 firings.
    assert_eq!((d.tokens, d.firing), (8, 5));
    assert!((d.density - 5.0 / 8.0).abs() < 1e-12);
    assert_eq!(d.max_activation, 4.0);
    assert!((d.mean_when_firing - 10.5 / 5.0).abs() < 1e-9);
    // Bins of width 1 over (0, 4]: 0.5, 1 | 2 | 3 | 4 (a value on an edge goes up, the max in the last).
    assert_eq!(d.histogram.counts, vec![1, 1, 1, 2]);
    let role = |r: TokenRole| d.roles.iter().find(|x| x.role == r).unwrap();
    assert_eq!(role(TokenRole::User).tokens, 6);
    assert_eq!(role(TokenRole::Assistant).tokens, 2);
    assert!((role(TokenRole::User).share - 10.0 / 10.5).abs() < 1e-9);
    assert!((role(TokenRole::Assistant).share - 0.5 / 10.5).abs() < 1e-9);
    assert_eq!(role(TokenRole::Bos).tokens, 0);

    // One context per document, strongest first: row 3 (4.0) then row 7 (3.0).
    let top: Vec<(usize, u64, f32)> = d
        .top_contexts
        .iter()
        .map(|c| (c.document, c.row, c.value))
        .collect();
    assert_eq!(top, vec![(0, 3, 4.0), (1, 7, 3.0)]);
    // Row 3's window: rows 1..=4; row 7's stops at its document's start (row 6 is its <bos>).
    let c = &d.top_contexts[0];
    assert_eq!((c.peak, c.tokens.len()), (2, 4));
    assert_eq!(
        c.tokens.iter().map(|t| t.value).collect::<Vec<_>>(),
        vec![1.0, 0.0, 4.0, 2.0]
    );
    let c = &d.top_contexts[1];
    assert_eq!((c.peak, c.tokens.len(), c.position), (1, 3, 1));
    assert_eq!(c.tokens[0].role, TokenRole::Bos);
    assert_eq!(c.tokens[2].role, TokenRole::Assistant);

    // Intervals (0, 2] and (2, 4]: firings 1, 2, 0.5 and 4, 3.
    assert_eq!(d.intervals.len(), 2);
    assert_eq!((d.intervals[0].low, d.intervals[0].high), (0.0, 2.0));
    assert_eq!(d.intervals[0].firings, 3);
    assert_eq!(d.intervals[1].firings, 2);
    for interval in &d.intervals {
        for c in &interval.contexts {
            assert!(c.value > interval.low && c.value <= interval.high);
        }
    }

    // A latent that never fires has an empty but valid dashboard, and the page says so.
    let silent = &dashboards[1];
    assert_eq!((silent.firing, silent.max_activation), (0, 0.0));
    assert!(silent.top_contexts.is_empty());
    assert!(silent.roles.iter().all(|r| r.share == 0.0));
    let page = dashboards_page("known values", &dashboards);
    assert!(page.contains("never fires"));
    assert!(page.contains("id=\"latent-7\"") && page.contains("id=\"latent-9\""));
}

#[test]
fn bad_requests_are_typed_errors() {
    let tok = tokenizer();
    let bad = |r: Result<Vec<latent_dashboard::LatentDashboard>, DashboardError>, needle: &str| {
        let e = r.unwrap_err();
        assert!(matches!(e, DashboardError::InvalidInput { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    };
    let options = DashboardOptions::default();
    bad(
        build_dashboards(&values(), &[], &tok, &options, false),
        "no latent",
    );
    bad(
        build_dashboards(&values(), &[8], &tok, &options, false),
        "latent 8",
    );
    let zero = DashboardOptions {
        intervals: 0,
        ..DashboardOptions::default()
    };
    bad(
        build_dashboards(&values(), &[7], &tok, &zero, false),
        "intervals",
    );
    let e = PrecomputedValues::new(tokens(), vec![7], Array2::zeros((3, 1))).unwrap_err();
    assert!(e.to_string().contains("10 tokens"), "{e}");
}
