//! Known ground truth: paired "activations" with planted effects. The hunt must find exactly the
//! planted latents, and with the labels shuffled nothing may survive FDR at 5% in at least 95% of
//! seeds (the null test).

use diff_analysis::{hunt, ContrastName, FeatureKind, HuntOptions, PairedFeatures};
use ndarray::Array2;

/// SplitMix64 + Box-Muller, so the test data do not depend on any crate's RNG.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const UP: [usize; 3] = [7, 42, 199];
const DOWN: usize = 100;

/// Sparse ReLU-like latents with an item effect shared by both variants (what makes pairing pay),
/// latents `UP` more active on the positive variant, `DOWN` on the negative one.
fn planted(items: usize, features: usize, seed: u64) -> PairedFeatures {
    let mut rng = Rng(seed);
    let mut pos = Array2::<f32>::zeros((items, features));
    let mut neg = Array2::<f32>::zeros((items, features));
    for i in 0..items {
        for j in 0..features {
            let item_effect = rng.normal() * 0.8;
            let p = (item_effect + rng.normal() * 0.5 - 0.3).max(0.0);
            let n = (item_effect + rng.normal() * 0.5 - 0.3).max(0.0);
            pos[[i, j]] = p as f32;
            neg[[i, j]] = n as f32;
        }
        for &j in UP.iter().filter(|j| **j < features) {
            pos[[i, j]] += (1.0 + 0.3 * rng.normal()).max(0.1) as f32;
        }
        if DOWN < features {
            neg[[i, DOWN]] += (1.0 + 0.3 * rng.normal()).max(0.1) as f32;
        }
    }
    PairedFeatures::new(
        (0..items).map(|i| format!("item_{i:03}")).collect(),
        pos,
        neg,
    )
    .unwrap()
}

fn contrast() -> ContrastName {
    ContrastName {
        category: "expertise_level".into(),
        positive: "novice".into(),
        negative: "expert".into(),
    }
}

fn significant(features: &PairedFeatures, options: &HuntOptions) -> Vec<usize> {
    let h = hunt(
        &contrast(),
        features,
        FeatureKind::CrosscoderLatent,
        None,
        options,
    )
    .unwrap();
    h.ranked_stats().map(|s| s.feature).collect()
}

#[test]
fn the_hunt_finds_the_planted_latents_monte_carlo_regime() {
    // 24 items > 16: Monte Carlo p-values; 300 latents.
    let f = planted(24, 300, 1);
    let h = hunt(
        &contrast(),
        &f,
        FeatureKind::CrosscoderLatent,
        None,
        &HuntOptions::default(),
    )
    .unwrap();
    assert!(h.is_resolvable());
    let candidates: Vec<usize> = h.candidate_stats().map(|s| s.feature).collect();
    let mut sorted = candidates.clone();
    sorted.sort();
    assert_eq!(sorted, UP.to_vec(), "candidates {candidates:?}");
    let ranked: Vec<usize> = h.ranked_stats().map(|s| s.feature).collect();
    assert!(
        ranked.contains(&DOWN),
        "the latent more active on the negative variant is significant"
    );
    let false_positives: Vec<usize> = ranked
        .iter()
        .copied()
        .filter(|j| !UP.contains(j) && *j != DOWN)
        .collect();
    assert!(
        false_positives.len() <= 1,
        "false positives {false_positives:?}"
    );
    let best = h.candidate_stats().next().unwrap();
    assert!(!best.permutation.exact);
    assert!(best.summary.effect_size > 2.0 && best.summary.sign_fraction == 1.0);
    // Candidates come by effect size.
    let effects: Vec<f64> = h.candidate_stats().map(|s| s.summary.effect_size).collect();
    assert!(effects.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn the_hunt_finds_the_planted_latents_exact_regime() {
    // 12 items: exact p-values, floor 2 / 4096; 60 latents keep the BH cut within reach.
    let f = planted(12, 60, 2);
    let h = hunt(
        &contrast(),
        &f,
        FeatureKind::CrosscoderLatent,
        None,
        &HuntOptions::default(),
    )
    .unwrap();
    assert!(h.is_resolvable());
    let mut candidates: Vec<usize> = h.candidate_stats().map(|s| s.feature).collect();
    candidates.sort();
    assert_eq!(candidates, vec![7, 42]);
    assert!(h
        .candidate_stats()
        .all(|s| s.permutation.exact && s.p_value == 2.0 / 4096.0));
}

#[test]
fn too_few_items_for_many_latents_is_flagged_unresolvable() {
    let f = planted(8, 300, 3);
    let h = hunt(
        &contrast(),
        &f,
        FeatureKind::CrosscoderLatent,
        None,
        &HuntOptions::default(),
    )
    .unwrap();
    assert!(!h.is_resolvable());
    assert!(h.ranked.is_empty());
}

#[test]
fn null_no_latent_survives_fdr_in_at_least_95_percent_of_seeds() {
    // Labels shuffled (each item's variants swapped with probability 1/2): the sign-flip null.
    for (items, features) in [(24, 200), (14, 40)] {
        let seeds = 100u64;
        let mut with_discoveries = 0;
        for seed in 0..seeds {
            let f = planted(items, features, 1000 + seed).with_shuffled_labels(seed);
            let options = HuntOptions {
                permutation: diff_analysis::PermutationOptions {
                    seed,
                    ..Default::default()
                },
                ..HuntOptions::default()
            };
            if !significant(&f, &options).is_empty() {
                with_discoveries += 1;
            }
        }
        assert!(
            with_discoveries * 20 <= seeds,
            "{items} items x {features} latents: discoveries in {with_discoveries} of {seeds} shuffled seeds"
        );
        println!("{items} items x {features} latents: {with_discoveries}/{seeds} seeds with a false discovery");
    }
}

#[test]
fn the_notebook_ranking_is_fooled_where_the_test_is_not() {
    // One huge outlier item makes a null latent top the notebook's ranking.
    let mut f = planted(24, 300, 4);
    f.positive[[0, 250]] += 40.0;
    f.positive[[1, 250]] += 40.0;
    let nb = diff_analysis::notebook_ranking(&f, 10, false);
    assert_eq!(nb[0].feature_idx, 250);
    assert!(nb[0].n_pairs < 6, "seen in only a few of the 24 items");
    let h = hunt(
        &contrast(),
        &f,
        FeatureKind::CrosscoderLatent,
        None,
        &HuntOptions::default(),
    )
    .unwrap();
    assert!(!h.stats_of(250).unwrap().significant);
}
