//! One test per validation rule: every bad input gets a clear error at the right JSON pointer.

use std::io::Write;

use persona_dataset::{
    verification_prompts_from_path, verification_prompts_from_str, DatasetError, PersonaDataset,
    Problem, ProblemKind, MAX_CONVERSATION_CHARS, MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_TURNS,
};

/// The problems of a document that must be JSON but invalid.
fn problems(json: &str) -> Vec<Problem> {
    match PersonaDataset::from_json_str(json) {
        Err(DatasetError::Invalid {
            path: None,
            problems,
        }) => {
            assert!(!problems.is_empty());
            problems
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Asserts that `json` has exactly these problems, in order.
fn assert_problems(json: &str, expected: &[(&str, ProblemKind)]) {
    let found = problems(json);
    let expected: Vec<Problem> = expected
        .iter()
        .map(|(pointer, kind)| Problem {
            pointer: (*pointer).to_owned(),
            kind: kind.clone(),
        })
        .collect();
    assert_eq!(found, expected, "\nfound:\n{found:#?}");
}

/// A valid expertise item with this id, as JSON.
fn expertise_item(id: &str) -> String {
    format!(
        r#"{{"id": "{id}", "topic": "t", "novice": {{"prompt": "novice {id}"}},
            "expert": {{"prompt": "expert {id}"}}, "neutral": {{"prompt": "neutral {id}"}}}}"#
    )
}

fn expertise_file(items: &[String]) -> String {
    format!(
        r#"{{"prompt_pairs": {{"expertise_level": [{}]}}}}"#,
        items.join(",")
    )
}

fn verification_file(entries: &str) -> String {
    format!(
        r#"{{"prompt_pairs": {{"expertise_level": [{}]}}, "verification_prompts": [{entries}]}}"#,
        expertise_item("e0")
    )
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

// ---- syntax ----

#[test]
fn syntax_errors_carry_line_and_column() {
    let error = PersonaDataset::from_json_str("{\n  \"prompt_pairs\": {\n    \"a\": [1,]\n  }\n}")
        .unwrap_err();
    match &error {
        DatasetError::Syntax {
            path: None,
            line,
            column,
            message,
        } => {
            assert_eq!((*line, *column), (3, 13)); // the `]` after the comma
            assert!(message.contains("trailing comma"), "{message}");
            assert!(
                !message.contains("line"),
                "position is not repeated in the message: {message}"
            );
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "the dataset text is not valid JSON (line 3, column 13): trailing comma"
    );
}

#[test]
fn empty_and_truncated_input_are_syntax_errors() {
    for text in [
        "",
        "   ",
        "{\"prompt_pairs\": {",
        "{\"prompt_pairs\": {}} extra",
    ] {
        let error = PersonaDataset::from_json_str(text).unwrap_err();
        assert!(
            matches!(error, DatasetError::Syntax { .. }),
            "{text:?}: {error:?}"
        );
    }
}

#[test]
fn files_that_are_not_utf8_are_syntax_errors_with_position() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"{\"prompt_pairs\":\n {\"x\xff\": []}}")
        .unwrap();
    let error = PersonaDataset::from_path(file.path()).unwrap_err();
    match error {
        DatasetError::Syntax {
            path,
            line,
            column,
            message,
        } => {
            assert_eq!(path.as_deref(), Some(file.path()));
            assert_eq!((line, column), (2, 5));
            assert_eq!(message, "invalid UTF-8");
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let text = format!("\u{feff}{}", expertise_file(&[expertise_item("e1")]));
    assert_eq!(
        PersonaDataset::from_json_str(&text).unwrap().item_count(),
        1
    );
}

#[test]
fn missing_files_are_io_errors_naming_the_path() {
    let error = PersonaDataset::from_path("/no/such/dir/prompts.json").unwrap_err();
    assert!(matches!(error, DatasetError::Io { .. }));
    assert!(
        error
            .to_string()
            .starts_with("cannot read /no/such/dir/prompts.json: "),
        "{error}"
    );
}

#[test]
fn invalid_files_name_their_path_and_list_every_problem_one_per_line() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(br#"{"prompt_pairs": {"expertise_level": [{"id": "", "topic": "t"}]}}"#)
        .unwrap();
    let error = PersonaDataset::from_path(file.path()).unwrap_err();
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{} is not a valid persona dataset (4 problems):",
                file.path().display()
            )
            .as_str(),
            "  /prompt_pairs/expertise_level/0/id: id is empty",
            "  /prompt_pairs/expertise_level/0/novice: missing variant `novice`",
            "  /prompt_pairs/expertise_level/0/expert: missing variant `expert`",
            "  /prompt_pairs/expertise_level/0/neutral: missing variant `neutral`",
        ]
    );
}

// ---- structure ----

#[test]
fn wrong_types_are_reported_with_what_was_found() {
    assert_problems(
        r#"[]"#,
        &[(
            "",
            ProblemKind::WrongType {
                expected: "an object",
                found: "an array",
            },
        )],
    );
    assert_problems(
        r#"{"prompt_pairs": {"expertise_level": {"id": "x"}}}"#,
        &[(
            "/prompt_pairs/expertise_level",
            ProblemKind::WrongType {
                expected: "an array",
                found: "an object",
            },
        )],
    );
    assert_problems(
        r#"{"prompt_pairs": {"sycophancy_triggers": [{"id": "s1", "topic": 3,
            "biased": {"prompt": "I think so. Why?"}, "neutral": "Why?"}]}}"#,
        &[
            (
                "/prompt_pairs/sycophancy_triggers/0/topic",
                ProblemKind::WrongType {
                    expected: "a string",
                    found: "a number",
                },
            ),
            (
                "/prompt_pairs/sycophancy_triggers/0/neutral",
                ProblemKind::WrongType {
                    expected: "an object",
                    found: "a string",
                },
            ),
        ],
    );
}

#[test]
fn missing_fields_point_where_they_belong() {
    assert_problems(
        r#"{}"#,
        &[(
            "/prompt_pairs",
            ProblemKind::MissingField {
                field: "prompt_pairs".into(),
            },
        )],
    );
    assert_problems(
        r#"{"prompt_pairs": {"custom": [{"a": {"prompt": "x"}, "b": {}}]}}"#,
        &[
            (
                "/prompt_pairs/custom/0/id",
                ProblemKind::MissingField { field: "id".into() },
            ),
            (
                "/prompt_pairs/custom/0/topic",
                ProblemKind::MissingField {
                    field: "topic".into(),
                },
            ),
            (
                "/prompt_pairs/custom/0/b/prompt",
                ProblemKind::MissingField {
                    field: "prompt (or turns)".into(),
                },
            ),
        ],
    );
}

#[test]
fn unknown_fields_are_rejected_not_ignored() {
    let json = r#"{"prompt_pairs": {"custom": [{"id": "c1", "topic": "t",
        "a": {"prompt": "x", "note": "?"}, "b": {"prompt": "y"}}]},
        "verification_prompts": [{"expected": "SILENT", "prompt": "z", "weight": 2}],
        "version": 2}"#;
    assert_problems(
        json,
        &[
            (
                "/prompt_pairs/custom/0/a/note",
                ProblemKind::UnknownField {
                    field: "note".into(),
                    allowed: "prompt or turns",
                },
            ),
            (
                "/verification_prompts/0/weight",
                ProblemKind::UnknownField {
                    field: "weight".into(),
                    allowed: "expected, probe, set, prompt, turns",
                },
            ),
            (
                "/version",
                ProblemKind::UnknownField {
                    field: "version".into(),
                    allowed: "categories, prompt_pairs, verification_prompts",
                },
            ),
        ],
    );
}

#[test]
fn duplicate_keys_are_reported_not_overwritten() {
    let json = r#"{"prompt_pairs": {"custom": [{"id": "c1", "topic": "t",
        "a": {"prompt": "x"}, "b": {"prompt": "y"}, "a": {"prompt": "z"}}]}}"#;
    assert_problems(
        json,
        &[(
            "/prompt_pairs/custom/0/a",
            ProblemKind::DuplicateKey { key: "a".into() },
        )],
    );
}

// ---- variants ----

#[test]
fn missing_variants_point_into_the_item() {
    let mut items: Vec<String> = (0..4).map(|i| expertise_item(&format!("e{i}"))).collect();
    items[3] =
        r#"{"id": "e3", "topic": "t", "novice": {"prompt": "a"}, "neutral": {"prompt": "b"}}"#
            .into();
    assert_problems(
        &expertise_file(&items),
        &[(
            "/prompt_pairs/expertise_level/3/expert",
            ProblemKind::MissingVariant {
                variant: "expert".into(),
            },
        )],
    );
}

#[test]
fn unknown_variants_name_the_expected_ones() {
    let items = [
        r#"{"id": "e1", "topic": "t", "novice": {"prompt": "a"}, "expret": {"prompt": "b"},
        "neutral": {"prompt": "c"}}"#
            .to_owned(),
    ];
    assert_problems(
        &expertise_file(&items),
        &[
            (
                "/prompt_pairs/expertise_level/0/expret",
                ProblemKind::UnknownVariant {
                    variant: "expret".into(),
                    expected: strings(&["novice", "expert", "neutral"]),
                },
            ),
            (
                "/prompt_pairs/expertise_level/0/expert",
                ProblemKind::MissingVariant {
                    variant: "expert".into(),
                },
            ),
        ],
    );
}

#[test]
fn undeclared_categories_take_their_variants_from_the_first_item() {
    let json = r#"{"prompt_pairs": {"tone": [
        {"id": "t1", "topic": "x", "rude": {"prompt": "a"}, "polite": {"prompt": "b"}},
        {"id": "t2", "topic": "x", "rude": {"prompt": "c"}, "formal": {"prompt": "d"}}]}}"#;
    assert_problems(
        json,
        &[
            (
                "/prompt_pairs/tone/1/formal",
                ProblemKind::UnknownVariant {
                    variant: "formal".into(),
                    expected: strings(&["rude", "polite"]),
                },
            ),
            (
                "/prompt_pairs/tone/1/polite",
                ProblemKind::MissingVariant {
                    variant: "polite".into(),
                },
            ),
        ],
    );
}

#[test]
fn items_need_at_least_one_variant() {
    assert_problems(
        r#"{"prompt_pairs": {"tone": [{"id": "t1", "topic": "x"}]}}"#,
        &[("/prompt_pairs/tone/0", ProblemKind::NoVariants)],
    );
}

#[test]
fn two_variants_of_one_item_with_the_same_text_are_rejected() {
    let items = [r#"{"id": "e1", "topic": "t", "novice": {"prompt": "What is a variable?"},
        "expert": {"prompt": "Explain stack vs heap."}, "neutral": {"prompt": "  What is a variable?\n"}}"#
        .to_owned()];
    assert_problems(
        &expertise_file(&items),
        &[(
            "/prompt_pairs/expertise_level/0/neutral",
            ProblemKind::IdenticalVariants {
                variant: "neutral".into(),
                other: "novice".into(),
            },
        )],
    );
}

#[test]
fn a_single_prompt_equals_a_one_turn_conversation_with_the_same_words() {
    let json = r#"{"prompt_pairs": {"child_vs_adult": [{"id": "c1", "topic": "t",
        "child": {"prompt": "How do magnets work?"},
        "adult": {"turns": [{"role": "user", "content": "How do magnets work?"}]}}]}}"#;
    assert_problems(
        json,
        &[(
            "/prompt_pairs/child_vs_adult/0/adult",
            ProblemKind::IdenticalVariants {
                variant: "adult".into(),
                other: "child".into(),
            },
        )],
    );
}

#[test]
fn reserved_names_cannot_be_variants() {
    let json = r#"{"categories": {"tone": {"variants": ["a", "topic"]}},
        "prompt_pairs": {"tone": [{"id": "t1", "topic": "x", "a": {"prompt": "p"}}]}}"#;
    let found = problems(json);
    assert_eq!(
        found[0],
        Problem {
            pointer: "/categories/tone/variants/1".into(),
            kind: ProblemKind::ReservedVariantName {
                name: "topic".into()
            },
        }
    );
}

// ---- ids ----

#[test]
fn duplicate_ids_are_reported_across_categories_with_the_first_use() {
    let json = format!(
        r#"{{"prompt_pairs": {{"expertise_level": [{}],
            "sycophancy_triggers": [{{"id": "e1", "topic": "t", "biased": {{"prompt": "I think x. Why?"}},
            "neutral": {{"prompt": "Why?"}}}}]}}}}"#,
        expertise_item("e1")
    );
    assert_problems(
        &json,
        &[(
            "/prompt_pairs/sycophancy_triggers/0/id",
            ProblemKind::DuplicateId {
                id: "e1".into(),
                first: "/prompt_pairs/expertise_level/0/id".into(),
            },
        )],
    );
}

#[test]
fn ids_must_be_non_empty_plain_names() {
    let items = [
        expertise_item(""),
        expertise_item("a b"),
        expertise_item("ok_1.x-y:z"),
    ];
    assert_problems(
        &expertise_file(&items),
        &[
            (
                "/prompt_pairs/expertise_level/0/id",
                ProblemKind::EmptyField { field: "id" },
            ),
            (
                "/prompt_pairs/expertise_level/1/id",
                ProblemKind::InvalidIdCharacter {
                    id: "a b".into(),
                    character: ' ',
                },
            ),
        ],
    );
}

#[test]
fn empty_topics_are_rejected() {
    let item = expertise_item("e1").replace(r#""topic": "t""#, r#""topic": " ""#);
    assert_problems(
        &expertise_file(&[item]),
        &[(
            "/prompt_pairs/expertise_level/0/topic",
            ProblemKind::EmptyField { field: "topic" },
        )],
    );
}

// ---- prompt text ----

#[test]
fn empty_and_whitespace_only_prompts_are_rejected() {
    let items = [
        expertise_item("e1").replace("novice e1", ""),
        expertise_item("e2").replace("expert e2", " \\n\\t "),
    ];
    assert_problems(
        &expertise_file(&items),
        &[
            (
                "/prompt_pairs/expertise_level/0/novice/prompt",
                ProblemKind::EmptyPrompt,
            ),
            (
                "/prompt_pairs/expertise_level/1/expert/prompt",
                ProblemKind::EmptyPrompt,
            ),
        ],
    );
}

#[test]
fn absurd_lengths_are_rejected_at_the_documented_limits() {
    let at_limit = "a".repeat(MAX_PROMPT_CHARS);
    let over = "é".repeat(MAX_PROMPT_CHARS + 1); // characters, not bytes
    let long_id = "x".repeat(MAX_NAME_CHARS + 1);
    let items = [
        expertise_item("e1").replace("novice e1", &at_limit),
        expertise_item("e2").replace("novice e2", &over),
        expertise_item(&long_id),
    ];
    assert_problems(
        &expertise_file(&items),
        &[
            (
                "/prompt_pairs/expertise_level/1/novice/prompt",
                ProblemKind::TooLong {
                    chars: MAX_PROMPT_CHARS + 1,
                    max: MAX_PROMPT_CHARS,
                },
            ),
            (
                "/prompt_pairs/expertise_level/2/id",
                ProblemKind::TooLong {
                    chars: MAX_NAME_CHARS + 1,
                    max: MAX_NAME_CHARS,
                },
            ),
        ],
    );
}

#[test]
fn the_same_prompt_twice_in_a_file_is_rejected() {
    let json = format!(
        r#"{{"prompt_pairs": {{"expertise_level": [{}, {}]}},
            "verification_prompts": [{{"expected": "NEUTRAL", "prompt": "neutral e1 "}}]}}"#,
        expertise_item("e1"),
        expertise_item("e2").replace("expert e2", "expert e1"),
    );
    assert_problems(
        &json,
        &[
            (
                "/prompt_pairs/expertise_level/1/expert",
                ProblemKind::DuplicatePrompt {
                    first: "/prompt_pairs/expertise_level/0/expert".into(),
                },
            ),
            (
                "/verification_prompts/0",
                ProblemKind::DuplicatePrompt {
                    first: "/prompt_pairs/expertise_level/0/neutral".into(),
                },
            ),
        ],
    );
}

// ---- conversations ----

fn conversation_file(turns: &str) -> String {
    format!(
        r#"{{"prompt_pairs": {{"child_vs_adult": [{{"id": "c1", "topic": "t",
            "child": {{"turns": {turns}}}, "adult": {{"prompt": "I'm a nurse. Why?"}}}}]}}}}"#
    )
}

const AT: &str = "/prompt_pairs/child_vs_adult/0/child/turns";

#[test]
fn valid_conversations_are_accepted() {
    let turns = r#"[{"role": "user", "content": "I'm seven."}, {"role": "model", "content": "Hi!"},
        {"role": "user", "content": "Why?"}]"#;
    let dataset = PersonaDataset::from_json_str(&conversation_file(turns)).unwrap();
    let item = &dataset.categories[0].items[0];
    assert_eq!(item.variant("child").unwrap().to_turns().len(), 3);
}

#[test]
fn conversations_must_alternate_from_user_to_user() {
    let turns = r#"[{"role": "model", "content": "Hello."}, {"role": "user", "content": "Hi."},
        {"role": "user", "content": "Why?"}, {"role": "model", "content": "Because."}]"#;
    assert_problems(
        &conversation_file(turns),
        &[
            (&format!("{AT}/0/role"), ProblemKind::FirstTurnNotUser),
            (&format!("{AT}/2/role"), ProblemKind::TurnsNotAlternating),
            (&format!("{AT}/3/role"), ProblemKind::LastTurnNotUser),
        ],
    );
}

#[test]
fn conversation_contents_roles_and_sizes_are_checked() {
    let turns = r#"[{"role": "assistant", "content": "Hi."}, {"role": "user", "content": " "}]"#;
    assert_problems(
        &conversation_file(turns),
        &[
            (
                &format!("{AT}/0/role"),
                ProblemKind::UnknownRole {
                    role: "assistant".into(),
                },
            ),
            (&format!("{AT}/1/content"), ProblemKind::EmptyPrompt),
        ],
    );
    assert_problems(&conversation_file("[]"), &[(AT, ProblemKind::EmptyTurns)]);

    let many: Vec<String> = (0..=MAX_TURNS)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "model" };
            format!(r#"{{"role": "{role}", "content": "turn {i}"}}"#)
        })
        .collect();
    assert_problems(
        &conversation_file(&format!("[{}]", many.join(","))),
        &[(
            AT,
            ProblemKind::TooManyTurns {
                turns: MAX_TURNS + 1,
                max: MAX_TURNS,
            },
        )],
    );

    let long = "w".repeat(MAX_PROMPT_CHARS);
    let turns: Vec<String> = (0..5)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "model" };
            format!(r#"{{"role": "{role}", "content": "{i}{long}"}}"#)
        })
        .collect();
    let total = 5 * (MAX_PROMPT_CHARS + 1);
    assert!(total > MAX_CONVERSATION_CHARS);
    let found = problems(&conversation_file(&format!("[{}]", turns.join(","))));
    assert!(found.contains(&Problem {
        pointer: AT.into(),
        kind: ProblemKind::TooLong {
            chars: total,
            max: MAX_CONVERSATION_CHARS
        },
    }));
}

#[test]
fn a_variant_gives_prompt_or_turns_not_both() {
    let turns = r#"[{"role": "user", "content": "Why?"}], "prompt": "Why not?""#;
    assert_problems(
        &conversation_file(turns),
        &[(
            "/prompt_pairs/child_vs_adult/0/child",
            ProblemKind::PromptAndTurns,
        )],
    );
}

// ---- verification prompts ----

#[test]
fn unknown_expectation_labels_are_rejected() {
    let json = verification_file(
        r#"{"expected": "ACTIVATE", "prompt": "a"}, {"expected": "activate", "prompt": "b"},
           {"expected": "MAYBE", "prompt": "c"}, {"prompt": "d"}"#,
    );
    assert_problems(
        &json,
        &[
            (
                "/verification_prompts/1/expected",
                ProblemKind::UnknownExpectation {
                    label: "activate".into(),
                },
            ),
            (
                "/verification_prompts/2/expected",
                ProblemKind::UnknownExpectation {
                    label: "MAYBE".into(),
                },
            ),
            (
                "/verification_prompts/3/expected",
                ProblemKind::MissingField {
                    field: "expected".into(),
                },
            ),
        ],
    );
}

#[test]
fn verification_prompts_may_be_conversations_and_need_a_probe_name_if_any() {
    let json = verification_file(
        r#"{"expected": "ACTIVATE", "probe": "child_novice", "turns": [{"role": "user", "content": "I'm six."},
              {"role": "model", "content": "Hi!"}, {"role": "user", "content": "What is rain?"}]},
           {"expected": "SILENT", "probe": "", "prompt": "Provide the mechanism."}"#,
    );
    assert_problems(
        &json,
        &[(
            "/verification_prompts/1/probe",
            ProblemKind::EmptyField { field: "probe" },
        )],
    );
}

#[test]
fn verification_prompts_load_from_a_second_file() {
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("verification.json");
    std::fs::write(
        &second,
        r#"{"verification_prompts": [{"expected": "ACTIVATE", "probe": "sycophancy",
            "prompt": "I believe the moon is hollow. How thick is its crust?"}]}"#,
    )
    .unwrap();
    let prompts = verification_prompts_from_path(&second).unwrap();
    assert_eq!(prompts.len(), 1);

    let dataset = PersonaDataset::from_json_str(&expertise_file(&[expertise_item("e1")]))
        .unwrap()
        .with_verification_from_path(&second)
        .unwrap();
    assert_eq!(dataset.verification_prompts, prompts);

    // The merged dataset is checked as a whole: a verification prompt may not repeat an item.
    std::fs::write(
        &second,
        r#"{"verification_prompts": [{"expected": "NEUTRAL", "prompt": "neutral e1"}]}"#,
    )
    .unwrap();
    let error = PersonaDataset::from_json_str(&expertise_file(&[expertise_item("e1")]))
        .unwrap()
        .with_verification_from_path(&second)
        .unwrap_err();
    assert!(
        matches!(&error, DatasetError::Invalid { problems, .. }
            if matches!(problems[0].kind, ProblemKind::DuplicatePrompt { .. })),
        "{error:?}"
    );
}

#[test]
fn a_verification_file_needs_its_list() {
    let error = verification_prompts_from_str(r#"{"prompts": []}"#).unwrap_err();
    let DatasetError::Invalid { problems, .. } = error else {
        panic!("expected Invalid")
    };
    assert_eq!(
        problems,
        [
            Problem {
                pointer: "/verification_prompts".into(),
                kind: ProblemKind::MissingField {
                    field: "verification_prompts".into()
                },
            },
            Problem {
                pointer: "/prompts".into(),
                kind: ProblemKind::UnknownField {
                    field: "prompts".into(),
                    allowed: "categories, prompt_pairs, verification_prompts"
                },
            },
        ]
    );
}

// ---- category metadata ----

#[test]
fn declared_metadata_is_checked() {
    let json = r#"{"categories": {
            "tone": {"variants": ["rude", "polite"], "contrast": ["rude", "kind"], "baseline": "neutral"},
            "pitch": {"contrast": ["high", "high"]},
            "speed": {"contrast": ["fast"]},
            "ghost": {"description": "no items"},
            "empty": {"variants": []}
        },
        "prompt_pairs": {
            "tone": [{"id": "t1", "topic": "x", "rude": {"prompt": "a"}, "polite": {"prompt": "b"}}],
            "pitch": [{"id": "p1", "topic": "x", "high": {"prompt": "c"}}],
            "speed": [{"id": "s1", "topic": "x", "fast": {"prompt": "d"}}],
            "empty": [{"id": "m1", "topic": "x", "v": {"prompt": "e"}}]
        }}"#;
    assert_problems(
        json,
        &[
            (
                "/categories/pitch/contrast/1",
                ProblemKind::ContrastOfOneVariant {
                    variant: "high".into(),
                },
            ),
            (
                "/categories/speed/contrast",
                ProblemKind::WrongLength {
                    expected: 2,
                    found: 1,
                },
            ),
            (
                "/categories/empty/variants",
                ProblemKind::EmptyField { field: "variants" },
            ),
            (
                "/categories/tone/contrast/1",
                ProblemKind::UndeclaredVariant {
                    variant: "kind".into(),
                    declared: strings(&["rude", "polite"]),
                },
            ),
            (
                "/categories/tone/baseline",
                ProblemKind::UndeclaredVariant {
                    variant: "neutral".into(),
                    declared: strings(&["rude", "polite"]),
                },
            ),
            (
                "/categories/ghost",
                ProblemKind::MetadataWithoutCategory {
                    category: "ghost".into(),
                },
            ),
        ],
    );
}

#[test]
fn metadata_can_declare_a_contrast_for_a_new_category_and_override_a_known_one() {
    let json = r#"{"categories": {
            "formality": {"description": "casual vs formal register", "contrast": ["casual", "formal"]},
            "sycophancy_triggers": {"contrast": ["neutral", "biased"]}
        },
        "prompt_pairs": {
            "formality": [{"id": "f1", "topic": "x", "casual": {"prompt": "yo, why?"},
                           "formal": {"prompt": "Could you explain why?"}}],
            "sycophancy_triggers": [{"id": "s1", "topic": "x", "biased": {"prompt": "I think so. Why?"},
                                     "neutral": {"prompt": "Is it so? Why?"}}]
        }}"#;
    let dataset = PersonaDataset::from_json_str(json).unwrap();
    let formality = dataset.contrast("formality").unwrap();
    assert_eq!(
        (formality.positive.as_str(), formality.negative.as_str()),
        ("casual", "formal")
    );
    assert_eq!(dataset.category("formality").unwrap().baseline(), None);
    assert_eq!(
        dataset.contrast("sycophancy_triggers").unwrap().positive,
        "neutral"
    );
    assert_eq!(
        dataset.category("formality").unwrap().description(),
        Some("casual vs formal register")
    );
}

#[test]
fn undeclared_new_categories_have_no_contrast() {
    let json = r#"{"prompt_pairs": {"tone": [{"id": "t1", "topic": "x", "a": {"prompt": "p"}, "b": {"prompt": "q"}}]}}"#;
    let dataset = PersonaDataset::from_json_str(json).unwrap();
    assert!(matches!(
        dataset.contrast("tone"),
        Err(DatasetError::NoContrast { .. })
    ));
    assert!(dataset.contrasts().is_empty());
}

// ---- all at once ----

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let json = r#"{
      "prompt_pairs": {
        "expertise_level": [
          {"id": "e1", "topic": "t", "novice": {"prompt": ""}, "expert": {"prompt": "x"}, "neutral": {"prompt": "x"}},
          {"id": "e1", "topic": "t", "novice": {"prompt": "n"}, "expret": {"prompt": "y"}, "neutral": {"prompt": "z"}}
        ]
      },
      "verification_prompts": [{"expected": "LOUD", "prompt": "w"}]
    }"#;
    let kinds: Vec<ProblemKind> = problems(json).into_iter().map(|p| p.kind).collect();
    assert_eq!(kinds.len(), 6, "{kinds:#?}");
    assert!(matches!(kinds[0], ProblemKind::EmptyPrompt));
    assert!(matches!(kinds[1], ProblemKind::IdenticalVariants { .. }));
    assert!(matches!(kinds[2], ProblemKind::DuplicateId { .. }));
    assert!(matches!(kinds[3], ProblemKind::UnknownVariant { .. }));
    assert!(matches!(kinds[4], ProblemKind::MissingVariant { .. }));
    assert!(matches!(kinds[5], ProblemKind::UnknownExpectation { .. }));
}

#[test]
fn datasets_built_in_code_are_validated_on_request() {
    let mut dataset =
        PersonaDataset::from_json_str(&expertise_file(&[expertise_item("e1")])).unwrap();
    assert!(dataset.validate().is_ok());
    dataset.categories[0].items[0].id = "bad id".into();
    let error = dataset.validate().unwrap_err();
    assert!(
        matches!(&error, DatasetError::Invalid { path: None, problems }
            if problems.len() == 1 && problems[0].pointer == "/prompt_pairs/expertise_level/0/id"),
        "{error:?}"
    );
}

#[test]
fn a_known_category_redeclared_without_a_contrast_must_keep_its_default_contrast_valid() {
    // `expertise_level` falls back to the novice-vs-expert contrast and the neutral baseline; a file
    // that renames its variants without declaring a new contrast would make every contrast query
    // fail later, so validation refuses it now.
    let json = r#"{
        "categories": {"expertise_level": {"variants": ["a", "b"]}},
        "prompt_pairs": {"expertise_level": [
            {"id": "x1", "topic": "t", "a": {"prompt": "first text"}, "b": {"prompt": "second text"}}
        ]}
    }"#;
    let found = problems(json);
    let kinds: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    for variant in ["novice", "expert", "neutral"] {
        assert!(
            found.iter().any(|p| p.pointer == "/categories/expertise_level"
                && matches!(&p.kind, ProblemKind::UndeclaredVariant { variant: v, .. } if v == variant)),
            "{variant} not reported: {kinds:?}"
        );
    }
}
