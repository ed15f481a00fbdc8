//! Confound probe sets in verification prompts: the shipped file is valid and round-trips; a prompt whose
//! expectation contradicts its set, or an `earlier_turn` prompt that is not a conversation, is refused
//! with the location.

use persona_dataset::{
    verification_prompts_from_path, verification_prompts_from_str, PersonaDataset, CONFOUND_SETS,
};

fn shipped_confounds() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/persona/confound_probes.json")
}

#[test]
fn the_shipped_confound_file_is_valid_covers_every_set_and_round_trips() {
    let prompts = verification_prompts_from_path(shipped_confounds()).unwrap();
    assert_eq!(prompts.len(), 80);
    for (probe, set, expected) in CONFOUND_SETS {
        let members: Vec<_> = prompts
            .iter()
            .filter(|p| p.probe.as_deref() == Some(*probe) && p.set.as_deref() == Some(*set))
            .collect();
        assert_eq!(members.len(), 8, "{probe}/{set}");
        assert!(members.iter().all(|p| p.expected == *expected));
    }
    // Appended to the shipped dataset: still valid, and written back with the sets.
    let dataset = PersonaDataset::shipped()
        .with_verification_from_path(shipped_confounds())
        .unwrap();
    dataset.validate().unwrap();
    let back = PersonaDataset::from_json_str(&dataset.to_json_string_pretty()).unwrap();
    assert_eq!(back, dataset);
}

#[test]
fn a_set_with_the_wrong_expectation_or_shape_is_refused_with_its_location() {
    let text = r#"{"verification_prompts": [
        {"expected": "ACTIVATE", "probe": "child_novice", "set": "third_person", "prompt": "My son is 5. What should I do?"},
        {"expected": "ACTIVATE", "probe": "child_novice", "set": "earlier_turn", "prompt": "I'm 7. Why is grass green?"},
        {"expected": "SILENT", "probe": "my_probe", "set": "my_own_set", "prompt": "Any set name of another probe is free."}
    ]}"#;
    let err = verification_prompts_from_str(text).unwrap_err().to_string();
    assert!(err.contains("/verification_prompts/0/expected"), "{err}");
    assert!(
        err.contains("`third_person` requires expectation SILENT, found ACTIVATE"),
        "{err}"
    );
    assert!(err.contains("/verification_prompts/1"), "{err}");
    assert!(err.contains("earlier_turn"), "{err}");
    assert!(!err.contains("/verification_prompts/2"), "{err}");
}
