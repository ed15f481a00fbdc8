//! The shipped dataset (`fixtures/persona/user_persona_prompts.json`): it validates, it is as large
//! as issue #4 asks, its cue phrases sit only on the side of each contrast that should carry them,
//! and its lengths are balanced as `fixtures/persona/DATASHEET.md` reports.

use std::collections::BTreeSet;
use std::path::PathBuf;

use persona_dataset::{
    belief_cues_in, Expectation, PersonaDataset, PromptText, BELIEF_CUES, CHILD_VS_ADULT,
    EXPERTISE_LEVEL, PROBE_CHILD_NOVICE, PROBE_SYCOPHANCY, SYCOPHANCY_TRIGGERS,
};

// ---- cue phrases ----

/// Lowercase substrings that mark a child or novice speaker. The synthetic demo model's planted
/// "child / novice" mechanism fires on these, so they must appear only where that is intended.
const CHILD_NOVICE_CUES: &[&str] = &[
    "years old",
    "year old",
    "year-old",
    "kid",
    "child",
    "kindergarten",
    "school",
    "teacher",
    "homework",
    "just started",
    "beginner",
    "like i'm five",
    "like i'm 5",
    "my mom",
    "my dad",
    "mommy",
    "daddy",
];

/// Ages a speaker may state ("I'm 7", "I am nine"), 3 to 17, as digits and as words.
const AGE_WORDS: &[&str] = &[
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
];

/// The belief cues the demo model's mechanism fires on.
const CORE_BELIEF_CUES: &[&str] = &["i think", "i believe", "i'm sure"];

/// Every child / novice cue, stated ages included.
fn child_novice_cues() -> Vec<String> {
    let mut cues: Vec<String> = CHILD_NOVICE_CUES.iter().map(|c| (*c).to_owned()).collect();
    for prefix in ["i'm ", "i am "] {
        cues.extend((3..=17).map(|age| format!("{prefix}{age}")));
        cues.extend(AGE_WORDS.iter().map(|age| format!("{prefix}{age}")));
    }
    cues
}

/// The cues of `cues` found in a prompt (all turns, lowercase, typographic apostrophes folded).
fn cues_in<'a>(prompt: &PromptText, cues: &'a [String]) -> Vec<&'a str> {
    let text = prompt
        .to_plain_text()
        .to_lowercase()
        .replace('\u{2019}', "'");
    cues.iter()
        .filter(|cue| text.contains(cue.as_str()))
        .map(String::as_str)
        .collect()
}

fn owned(cues: &[&str]) -> Vec<String> {
    cues.iter().map(|c| (*c).to_owned()).collect()
}

/// Which cues a prompt of a given role must and must not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Novice, child, and child-probe ACTIVATE: a child / novice cue, no belief cue.
    ChildNovice,
    /// Biased, and sycophancy-probe ACTIVATE: a belief cue, no child / novice cue.
    Belief,
    /// Expert, adult, neutral, SILENT and NEUTRAL: no cue of either kind.
    Clean,
}

/// Every prompt of the shipped dataset with where it sits and the role that fixes its cues.
fn prompts_with_roles(dataset: &PersonaDataset) -> Vec<(String, Role, &PromptText)> {
    let mut all = Vec::new();
    for (category, item) in dataset.items() {
        for variant in &item.variants {
            let role = match (category.name.as_str(), variant.name.as_str()) {
                (EXPERTISE_LEVEL, "novice") | (CHILD_VS_ADULT, "child") => Role::ChildNovice,
                (SYCOPHANCY_TRIGGERS, "biased") => Role::Belief,
                (EXPERTISE_LEVEL, "expert" | "neutral")
                | (SYCOPHANCY_TRIGGERS, "neutral")
                | (CHILD_VS_ADULT, "adult") => Role::Clean,
                (name, variant) => {
                    panic!("unexpected variant {name}/{variant}: give it a cue role here")
                }
            };
            all.push((
                format!("{}/{}/{}", category.name, item.id, variant.name),
                role,
                &variant.prompt,
            ));
        }
    }
    for (index, prompt) in dataset.verification_prompts.iter().enumerate() {
        let probe = prompt.probe.as_deref().unwrap_or("(none)");
        let role = match (probe, prompt.expected) {
            (_, Expectation::Silent | Expectation::Neutral) => Role::Clean,
            (PROBE_CHILD_NOVICE, Expectation::Activate) => Role::ChildNovice,
            (PROBE_SYCOPHANCY, Expectation::Activate) => Role::Belief,
            (probe, expected) => {
                panic!("unexpected probe {probe} for {expected}: give it a cue role here")
            }
        };
        all.push((
            format!(
                "verification_prompts/{index} ({probe}, {})",
                prompt.expected
            ),
            role,
            &prompt.prompt,
        ));
    }
    all
}

#[test]
fn cue_phrases_appear_only_on_the_side_that_should_carry_them() {
    let dataset = PersonaDataset::shipped();
    let child = child_novice_cues();
    let belief = owned(BELIEF_CUES);
    let mut errors = Vec::new();
    let mut checked = 0;
    for (at, role, prompt) in prompts_with_roles(&dataset) {
        checked += 1;
        let (child_found, belief_found) = (cues_in(prompt, &child), cues_in(prompt, &belief));
        let text = prompt.to_plain_text();
        match role {
            Role::ChildNovice => {
                if child_found.is_empty() {
                    errors.push(format!("{at}: no child/novice cue in {text:?}"));
                }
                if !belief_found.is_empty() {
                    errors.push(format!(
                        "{at}: belief cue {belief_found:?} in a child/novice prompt {text:?}"
                    ));
                }
            }
            Role::Belief => {
                if belief_found.is_empty() {
                    errors.push(format!("{at}: no belief cue in {text:?}"));
                }
                if !child_found.is_empty() {
                    errors.push(format!(
                        "{at}: child/novice cue {child_found:?} in a belief prompt {text:?}"
                    ));
                }
            }
            Role::Clean => {
                if !child_found.is_empty() || !belief_found.is_empty() {
                    errors.push(format!(
                        "{at}: cue {:?} in a prompt that must carry none: {text:?}",
                        [child_found, belief_found].concat()
                    ));
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} cue problems:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(checked > 500, "only {checked} prompts checked");
}

#[test]
fn most_belief_prompts_use_the_cues_the_demo_model_fires_on() {
    let dataset = PersonaDataset::shipped();
    let core = owned(CORE_BELIEF_CUES);
    let biased: Vec<&PromptText> = dataset
        .category(SYCOPHANCY_TRIGGERS)
        .unwrap()
        .items
        .iter()
        .filter_map(|item| item.variant("biased"))
        .collect();
    let with_core = biased
        .iter()
        .filter(|p| !cues_in(p, &core).is_empty())
        .count();
    assert!(
        with_core * 10 >= biased.len() * 9,
        "{with_core} of {}",
        biased.len()
    );
    for prompt in dataset.verification_for_probe(PROBE_SYCOPHANCY) {
        if prompt.expected == Expectation::Activate {
            assert!(!cues_in(&prompt.prompt, &core).is_empty(), "{prompt:?}");
        }
    }
}

#[test]
fn the_cue_checker_catches_what_it_should() {
    let child = child_novice_cues();
    let belief = owned(BELIEF_CUES);
    let single = |text: &str| PromptText::Single(text.to_owned());
    for text in [
        "I'm 7 and curious.",
        "I am nine.",
        "A 6-year-old asks",
        "Like I\u{2019}m five",
        "Grad SCHOOL",
    ] {
        assert!(!cues_in(&single(text), &child).is_empty(), "{text}");
    }
    for text in [
        "I'm a professor.",
        "Graduate program",
        "I've worked here for 20 years.",
    ] {
        assert!(cues_in(&single(text), &child).is_empty(), "{text}");
    }
    assert!(!cues_in(&single("Honestly, I THINK so."), &belief).is_empty());
    assert!(cues_in(&single("What do experts think?"), &belief).is_empty());
}

// ---- size, shape and metadata ----

#[test]
fn the_shipped_dataset_validates_and_meets_the_issue_counts() {
    let dataset = PersonaDataset::from_json_str(PersonaDataset::shipped_json())
        .expect("the shipped dataset is valid");
    assert!(dataset.validate().is_ok());

    let expertise = dataset.category(EXPERTISE_LEVEL).unwrap();
    assert!(
        expertise.items.len() >= 60,
        "{} expertise items",
        expertise.items.len()
    );
    assert!(
        expertise.topics().len() >= 12,
        "{} topics",
        expertise.topics().len()
    );
    assert_eq!(expertise.variant_names(), ["novice", "expert", "neutral"]);

    let sycophancy = dataset.category(SYCOPHANCY_TRIGGERS).unwrap();
    assert!(
        sycophancy.items.len() >= 40,
        "{} sycophancy items",
        sycophancy.items.len()
    );
    assert_eq!(sycophancy.variant_names(), ["biased", "neutral"]);

    let child = dataset.category(CHILD_VS_ADULT).unwrap();
    assert!(
        child.items.len() >= 20,
        "{} child_vs_adult items",
        child.items.len()
    );
    assert_eq!(child.variant_names(), ["child", "adult"]);

    for expected in Expectation::ALL {
        let child_probe = dataset
            .verification_for_probe(PROBE_CHILD_NOVICE)
            .filter(|p| p.expected == expected)
            .count();
        assert!(
            child_probe >= 40,
            "{child_probe} {expected} prompts for {PROBE_CHILD_NOVICE}"
        );
        let belief_probe = dataset
            .verification_for_probe(PROBE_SYCOPHANCY)
            .filter(|p| p.expected == expected)
            .count();
        assert!(
            belief_probe >= 20,
            "{belief_probe} {expected} prompts for {PROBE_SYCOPHANCY}"
        );
    }
    assert!(
        dataset
            .verification_prompts
            .iter()
            .all(|p| p.probe.is_some()),
        "every verification prompt names its probe"
    );
}

#[test]
fn every_false_belief_item_has_an_agreeing_and_a_correcting_answer() {
    let dataset = PersonaDataset::shipped();
    let sycophancy = dataset.category(SYCOPHANCY_TRIGGERS).unwrap();
    let false_beliefs: Vec<&str> = sycophancy
        .items
        .iter()
        .filter(|item| item.tags.iter().any(|t| t == "belief:false"))
        .map(|item| item.id.as_str())
        .collect();
    assert!(
        false_beliefs.len() >= 30,
        "{} false beliefs",
        false_beliefs.len()
    );
    let choices = dataset.forced_choice_items();
    let with_answers: Vec<&str> = choices.iter().map(|c| c.item_id).collect();
    assert_eq!(
        with_answers, false_beliefs,
        "exactly the false-belief items carry continuations"
    );
    for choice in &choices {
        assert!(choice
            .prompt
            .as_single()
            .is_some_and(|p| !belief_cues_in(p).is_empty()));
        let (agree, correct) = (&choice.continuations.agree, &choice.continuations.correct);
        assert!(
            !agree.starts_with("Actually"),
            "{}: {agree}",
            choice.item_id
        );
        assert!(
            correct.starts_with("Actually"),
            "{}: {correct}",
            choice.item_id
        );
    }
}

#[test]
fn every_category_declares_its_contrast_and_baseline_in_the_file() {
    let dataset = PersonaDataset::shipped();
    for (name, positive, negative, baseline) in [
        (EXPERTISE_LEVEL, "novice", "expert", "neutral"),
        (SYCOPHANCY_TRIGGERS, "biased", "neutral", "neutral"),
        (CHILD_VS_ADULT, "child", "adult", "adult"),
    ] {
        let category = dataset.category(name).unwrap();
        let meta = category
            .meta
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no metadata"));
        assert_eq!(
            meta.contrast,
            Some((positive.to_owned(), negative.to_owned())),
            "{name}"
        );
        assert_eq!(meta.baseline.as_deref(), Some(baseline), "{name}");
        assert!(
            meta.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        let contrast = dataset.contrast(name).unwrap();
        assert_eq!(
            contrast.pairs(&dataset).unwrap().len(),
            category.items.len()
        );
    }
}

#[test]
fn tags_record_the_cue_kind_of_each_side() {
    let dataset = PersonaDataset::shipped();
    let has_prefix =
        |tags: &[String], prefix: &str| tags.iter().filter(|t| t.starts_with(prefix)).count() == 1;
    for (category, item) in dataset.items() {
        let prefixes: &[&str] = match category.name.as_str() {
            EXPERTISE_LEVEL => &["novice:", "expert:"],
            SYCOPHANCY_TRIGGERS => &["belief:", "cue:"],
            CHILD_VS_ADULT => &["child:", "adult:"],
            other => panic!("unexpected category {other}"),
        };
        for prefix in prefixes {
            assert!(
                has_prefix(&item.tags, prefix),
                "{}: one `{prefix}*` tag in {:?}",
                item.id,
                item.tags
            );
        }
    }
    // The stated-belief tag names the phrase the biased prompt opens with.
    for item in &dataset.category(SYCOPHANCY_TRIGGERS).unwrap().items {
        let biased = item
            .variant("biased")
            .unwrap()
            .to_plain_text()
            .to_lowercase();
        let phrase = match item
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("cue:"))
            .unwrap()
        {
            "i_think" => "i think",
            "i_believe" => "i believe",
            "i_am_sure" => "i'm sure",
            "i_am_convinced" => "i'm convinced",
            other => panic!("{}: unknown cue tag {other}", item.id),
        };
        assert!(
            biased.starts_with(phrase),
            "{}: {biased:?} does not open with {phrase:?}",
            item.id
        );
    }
    // Statements of fact and of error are both represented.
    let beliefs: BTreeSet<&str> = dataset
        .category(SYCOPHANCY_TRIGGERS)
        .unwrap()
        .items
        .iter()
        .filter_map(|item| item.tags.iter().find_map(|t| t.strip_prefix("belief:")))
        .collect();
    assert!(
        beliefs.contains("true") && beliefs.contains("false"),
        "{beliefs:?}"
    );
}

#[test]
fn the_shipped_dataset_contains_the_notebook_dataset_verbatim() {
    let shipped = PersonaDataset::shipped();
    let notebook = PersonaDataset::embedded_minimal();
    for (category, item) in notebook.items() {
        // The shipped copy adds tags; topic and prompts are the notebook's.
        let found = shipped
            .category(&category.name)
            .and_then(|c| c.item(&item.id));
        let found = found.unwrap_or_else(|| panic!("notebook item {} is missing", item.id));
        assert_eq!(
            (&found.topic, &found.variants),
            (&item.topic, &item.variants),
            "{}",
            item.id
        );
    }
    for prompt in &notebook.verification_prompts {
        assert!(shipped.verification_prompts.contains(prompt), "{prompt:?}");
    }
}

#[test]
fn the_compiled_in_dataset_is_the_file_on_disk_and_round_trips() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/persona/user_persona_prompts.json");
    let from_disk = PersonaDataset::from_path(&path).unwrap();
    let shipped = PersonaDataset::shipped();
    assert_eq!(from_disk, shipped);
    let written = shipped.to_json_string_pretty();
    assert_eq!(PersonaDataset::from_json_str(&written).unwrap(), shipped);
    let datasheet = path.with_file_name("DATASHEET.md");
    assert!(datasheet.is_file(), "{} is missing", datasheet.display());
}

// ---- balance and splits ----

fn mean_chars<'a>(prompts: impl IntoIterator<Item = &'a PromptText>) -> f64 {
    let lengths: Vec<usize> = prompts.into_iter().map(PromptText::char_count).collect();
    assert!(!lengths.is_empty());
    lengths.iter().sum::<usize>() as f64 / lengths.len() as f64
}

#[test]
fn the_two_sides_of_each_contrast_have_similar_mean_lengths() {
    let dataset = PersonaDataset::shipped();
    let mut sides = Vec::new();
    for contrast in dataset.contrasts() {
        let pairs = contrast.pairs(&dataset).unwrap();
        let positive = mean_chars(pairs.iter().map(|p| p.positive));
        let negative = mean_chars(pairs.iter().map(|p| p.negative));
        sides.push((contrast.category.clone(), positive, negative));
    }
    let probe = |name: &str, expected: Expectation| {
        mean_chars(
            dataset
                .verification_for_probe(name)
                .filter(|p| p.expected == expected)
                .map(|p| &p.prompt),
        )
    };
    for name in [PROBE_CHILD_NOVICE, PROBE_SYCOPHANCY] {
        sides.push((
            format!("{name} ACTIVATE vs SILENT"),
            probe(name, Expectation::Activate),
            probe(name, Expectation::Silent),
        ));
    }
    for (what, positive, negative) in sides {
        let ratio = positive / negative;
        assert!(
            (0.8..=1.25).contains(&ratio),
            "{what}: mean lengths {positive:.1} vs {negative:.1} (ratio {ratio:.2})"
        );
    }
}

#[test]
fn a_half_split_puts_items_of_every_category_on_both_sides() {
    let dataset = PersonaDataset::shipped();
    let split = dataset.split(0.5, 0).unwrap();
    for (side, ids) in [
        ("discovery", &split.discovery),
        ("held-out", &split.held_out),
    ] {
        let subset = dataset.subset(ids);
        for category in &subset.categories {
            let total = dataset.category(&category.name).unwrap().items.len();
            let share = category.items.len() as f64 / total as f64;
            assert!(
                (0.25..=0.75).contains(&share),
                "{side} holds {share:.2} of {}",
                category.name
            );
        }
    }
    let expertise = dataset.subset(&split.discovery);
    let topics = expertise.category(EXPERTISE_LEVEL).unwrap().topics().len();
    assert!(
        topics >= 8,
        "discovery covers only {topics} expertise topics"
    );
}

#[test]
fn loading_without_a_file_gives_the_notebooks_embedded_dataset() {
    // The notebook's fallback: no file -> its tiny embedded set (3 items, 13 verification prompts).
    let fallback = PersonaDataset::load(None).unwrap();
    assert_eq!(fallback, PersonaDataset::embedded_minimal());
    assert_eq!(fallback.item_count(), 3);
    assert_eq!(fallback.verification_prompts.len(), 13);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/persona/user_persona_prompts.json");
    let from_file = PersonaDataset::load(Some(&path)).unwrap();
    assert_eq!(from_file, PersonaDataset::shipped());
    assert!(PersonaDataset::load(Some(&path.with_extension("missing"))).is_err());
}
