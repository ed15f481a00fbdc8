//! `day1 --circuits` on the embedded demo: every verified candidate gets its circuit (the planted writer
//! heads, the planted reader MLPs) in the summary, the terminal summary, the report and its own directory.

mod common;

use circuits::{CircuitModels, CircuitOptions, Component};
use diff_analysis::circuit_step::map_verified_circuits;
use diff_analysis::{Day1, Day1Options};
use model_pair::{BASE, CHAT};
use persona_dataset::PersonaDataset;

#[test]
fn verified_candidates_get_their_circuits_in_every_output() {
    let (runner, crosscoder, manifest) = common::demo_runner(false);
    let dataset = PersonaDataset::shipped();
    let mut results = Day1::new(&runner, Some(crosscoder.as_ref()), &dataset)
        .options(Day1Options {
            progress: false,
            latent_scaling: false,
            ..Day1Options::default()
        })
        .run()
        .unwrap();
    let passed: Vec<(String, usize)> = results
        .verifications
        .iter()
        .filter(|v| v.passed)
        .map(|v| (v.contrast.clone(), v.feature))
        .collect();
    assert!(!passed.is_empty());
    let n = map_verified_circuits(
        &mut results,
        CircuitModels {
            models: [runner.model(BASE), runner.model(CHAT)],
            tokenizer: runner.tokenizer(),
            crosscoder: crosscoder.as_ref(),
            crosscoder_name: "demo crosscoder",
        },
        &dataset,
        &CircuitOptions::default(),
    )
    .unwrap();
    assert_eq!(n, passed.len());
    let reader_layers: Vec<usize> = manifest.reader.as_ref().unwrap().layers.clone();
    for c in &results.circuits {
        // The writer chat training changed is a planted layer-1 head (2: child, 3: belief).
        let top = c.writers.components[0].component;
        assert!(
            matches!(
                top,
                Component::Head {
                    layer: 1,
                    head: 2 | 3
                }
            ),
            "#{}: {top:?}",
            c.latent
        );
        assert_eq!(c.writers.stands_out, vec![top]);
        if top == (Component::Head { layer: 1, head: 2 }) {
            let reader = c.readers.as_ref().unwrap().components[0].component;
            assert!(
                reader_layers
                    .iter()
                    .any(|l| reader == Component::Mlp { layer: *l }),
                "{reader:?}"
            );
        }
    }
    let terminal = results.terminal_summary();
    assert!(terminal.contains("top writer L1H2"), "{terminal}");

    let out = tempfile::tempdir().unwrap();
    let files = results.write(out.path()).unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("day1_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["circuits"].as_array().unwrap().len(), n);
    assert_eq!(json["circuits"][0]["schema_version"], 1);
    let first = &results.circuits[0];
    let sub = out
        .path()
        .join("circuits")
        .join(diff_analysis::output::circuit_dir(first));
    for name in ["circuit.json", "writers.png", "readers.png", "circuit.html"] {
        assert!(files.contains(&sub.join(name)), "{name}: {files:?}");
    }
    let report = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(report.contains(&format!("Circuit of latent #{}", first.latent)));
    if let Some(rendered) = common::browser::render_offline(&out.path().join("report.html")) {
        assert!(
            rendered.fetched.is_empty() && rendered.broken == 0,
            "{rendered:?}"
        );
    }
    if let Some(rendered) = common::browser::render_offline(&sub.join("circuit.html")) {
        assert!(
            rendered.fetched.is_empty() && rendered.broken == 0,
            "{rendered:?}"
        );
        assert_eq!(rendered.images, 2, "{rendered:?}");
    }
}
