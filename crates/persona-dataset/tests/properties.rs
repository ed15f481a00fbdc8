//! Property tests: write-then-read round-trips, split properties, and no panics on any input.

use std::collections::{BTreeSet, HashSet};

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::select;

use persona_dataset::{
    Category, CategoryMeta, Continuations, Expectation, PersonaDataset, PromptItem, PromptText,
    Role, Turn, Variant, VerificationPrompt, CHILD_VS_ADULT, EXPERTISE_LEVEL, SYCOPHANCY_TRIGGERS,
};

// ---- generators ----

/// Text with characters JSON must escape, non-ASCII, and whitespace; may be blank (fixed up later).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.?!'\"\\\\/~é漢🙂\n\t-]{0,24}"
}

fn prompt_text() -> impl Strategy<Value = PromptText> {
    let conversation = (0usize..3)
        .prop_flat_map(|model_turns| vec(text(), 2 * model_turns + 1))
        .prop_map(|contents| {
            let turns = contents
                .into_iter()
                .enumerate()
                .map(|(i, content)| Turn {
                    role: if i % 2 == 0 { Role::User } else { Role::Model },
                    content,
                })
                .collect();
            PromptText::Turns(turns)
        });
    prop_oneof![3 => text().prop_map(PromptText::Single), 1 => conversation]
}

/// Two valid answers (3 to 9 words each, the same number, different texts), or none.
fn continuations() -> impl Strategy<Value = Option<Continuations>> {
    proptest::option::of(
        (vec("[a-z]{2,8}", 3..10), "[a-z]{2,8}").prop_map(|(words, other)| {
            let agree = words.join(" ");
            let mut correct = words[1..].to_vec();
            correct.push(format!("{other}9"));
            Continuations {
                agree,
                correct: correct.join(" "),
            }
        }),
    )
}

fn item(variants: Vec<String>) -> impl Strategy<Value = PromptItem> {
    let n = variants.len();
    (
        "[a-z_]{1,10}",
        vec("[a-z:]{1,8}", 0..3),
        vec(prompt_text(), n),
        continuations(),
    )
        .prop_map(move |(topic, tags, prompts, continuations)| {
            PromptItem {
                id: String::new(), // assigned in `make_valid`
                topic,
                tags,
                continuations,
                variants: variants
                    .iter()
                    .zip(prompts)
                    .map(|(name, prompt)| Variant {
                        name: name.clone(),
                        prompt,
                    })
                    .collect(),
            }
        })
}

fn variant_name() -> impl Strategy<Value = String> {
    "[a-z]{1,8}".prop_filter("reserved for item fields", |name| {
        !["id", "topic", "tags"].contains(&name.as_str())
    })
}

/// (name, metadata, variants) of a known or a new category.
fn category_shape() -> impl Strategy<Value = (String, Option<CategoryMeta>, Vec<String>)> {
    let known = (
        select(vec![EXPERTISE_LEVEL, SYCOPHANCY_TRIGGERS, CHILD_VS_ADULT]),
        proptest::option::of(proptest::option::of(text())),
    )
        .prop_map(|(name, description)| {
            let variants: &[&str] = match name {
                EXPERTISE_LEVEL => &["novice", "expert", "neutral"],
                SYCOPHANCY_TRIGGERS => &["biased", "neutral"],
                _ => &["child", "adult"],
            };
            let meta = description.map(|description| CategoryMeta {
                description,
                ..CategoryMeta::default()
            });
            (
                name.to_owned(),
                meta,
                variants.iter().map(|v| (*v).to_owned()).collect(),
            )
        });
    // Names with `/` and `~` exercise pointer escaping; the prefix keeps them apart from known names.
    let new = (
        "new:[a-z_/~ ]{0,8}",
        btree_set(variant_name(), 2..4),
        any::<bool>(),
        text(),
    )
        .prop_map(|(name, variants, declare, description)| {
            let variants: Vec<String> = variants.into_iter().collect();
            let meta = declare.then(|| CategoryMeta {
                description: Some(description),
                variants: Some(variants.clone()),
                contrast: Some((variants[0].clone(), variants[1].clone())),
                baseline: variants.last().cloned(),
            });
            (name, meta, variants)
        });
    prop_oneof![known, new]
}

fn category() -> impl Strategy<Value = Category> {
    category_shape().prop_flat_map(|(name, meta, variants)| {
        vec(item(variants), 0..5).prop_map(move |items| Category {
            name: name.clone(),
            meta: meta.clone(),
            items,
        })
    })
}

fn verification_prompt() -> impl Strategy<Value = VerificationPrompt> {
    (
        select(Expectation::ALL.to_vec()),
        proptest::option::of("[a-z_]{1,12}"),
        prompt_text(),
    )
        .prop_map(|(expected, probe, prompt)| VerificationPrompt {
            expected,
            probe,
            set: None,
            prompt,
        })
}

/// Makes a generated dataset valid: unique category names, unique ids, unique non-blank texts.
fn make_valid(mut dataset: PersonaDataset, id_prefix: &str) -> PersonaDataset {
    let mut names = HashSet::new();
    dataset
        .categories
        .retain(|category| names.insert(category.name.clone()));
    let mut counter = 0usize;
    let mut unique = |text: &mut String| {
        counter += 1;
        text.push_str(&format!(" #{counter}"));
    };
    let mut fix = |prompt: &mut PromptText| match prompt {
        PromptText::Single(text) => unique(text),
        PromptText::Turns(turns) => turns.iter_mut().for_each(|turn| unique(&mut turn.content)),
    };
    let mut next_id = 0usize;
    for category in &mut dataset.categories {
        for item in &mut category.items {
            next_id += 1;
            item.id = format!("{id_prefix}{next_id}");
            item.variants
                .iter_mut()
                .for_each(|variant| fix(&mut variant.prompt));
        }
    }
    dataset
        .verification_prompts
        .iter_mut()
        .for_each(|v| fix(&mut v.prompt));
    dataset
}

fn dataset() -> impl Strategy<Value = PersonaDataset> {
    (
        vec(category(), 0..4),
        vec(verification_prompt(), 0..6),
        "[a-zA-Z][a-zA-Z0-9_.:-]{0,6}_",
    )
        .prop_map(|(categories, verification_prompts, prefix)| {
            make_valid(
                PersonaDataset {
                    categories,
                    verification_prompts,
                },
                &prefix,
            )
        })
}

/// A dataset holding one item per id (splits look at ids only).
fn dataset_of_ids(ids: &[String]) -> PersonaDataset {
    let items = ids
        .iter()
        .map(|id| PromptItem {
            id: id.clone(),
            topic: "t".into(),
            tags: vec![],
            continuations: None,
            variants: vec![],
        })
        .collect();
    PersonaDataset {
        categories: vec![Category {
            name: "c".into(),
            meta: None,
            items,
        }],
        verification_prompts: vec![],
    }
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    btree_set("[A-Za-z0-9_.:-]{1,16}", 0..200).prop_map(|ids| ids.into_iter().collect())
}

// ---- properties ----

proptest! {
    #[test]
    fn write_then_read_gives_an_equal_dataset(dataset in dataset()) {
        let json = dataset.to_json_string_pretty();
        let back = PersonaDataset::from_json_str(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        prop_assert_eq!(&back, &dataset);
        prop_assert!(dataset.validate().is_ok());
        // Writing is deterministic too: the text is a fixed point.
        prop_assert_eq!(back.to_json_string_pretty(), json);
    }

    #[test]
    fn splits_are_deterministic_disjoint_and_covering(ids in ids(), ratio in 0.0f64..=1.0, seed in any::<u64>()) {
        let dataset = dataset_of_ids(&ids);
        let split = dataset.split(ratio, seed).unwrap();
        prop_assert_eq!(&split, &dataset.split(ratio, seed).unwrap());

        let discovery: BTreeSet<&String> = split.discovery.iter().collect();
        let held_out: BTreeSet<&String> = split.held_out.iter().collect();
        prop_assert!(discovery.is_disjoint(&held_out));
        prop_assert_eq!(split.discovery.len() + split.held_out.len(), ids.len());
        let all: BTreeSet<&String> = discovery.union(&held_out).copied().collect();
        prop_assert_eq!(all, ids.iter().collect::<BTreeSet<_>>());

        // Each side keeps dataset order.
        let position = |id: &String| ids.iter().position(|x| x == id);
        prop_assert!(split.discovery.windows(2).all(|w| position(&w[0]) < position(&w[1])));
        prop_assert!(split.held_out.windows(2).all(|w| position(&w[0]) < position(&w[1])));

        // The subsets partition the items.
        let (d, h) = (dataset.subset(&split.discovery), dataset.subset(&split.held_out));
        prop_assert_eq!(d.item_count() + h.item_count(), ids.len());
    }

    #[test]
    fn an_items_side_depends_only_on_its_id(ids in ids(), keep in vec(any::<bool>(), 200), ratio in 0.0f64..=1.0, seed in any::<u64>()) {
        let full = dataset_of_ids(&ids).split(ratio, seed).unwrap();
        let some: Vec<String> = ids.iter().zip(&keep).filter(|(_, k)| **k).map(|(id, _)| id.clone()).collect();
        let partial = dataset_of_ids(&some).split(ratio, seed).unwrap();
        let full_discovery: HashSet<&String> = full.discovery.iter().collect();
        for id in &some {
            prop_assert_eq!(partial.discovery.contains(id), full_discovery.contains(id));
        }
    }

    #[test]
    fn raising_the_ratio_only_moves_items_into_discovery(ids in ids(), a in 0.0f64..=1.0, b in 0.0f64..=1.0, seed in any::<u64>()) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let dataset = dataset_of_ids(&ids);
        let smaller: HashSet<String> = dataset.split(low, seed).unwrap().discovery.into_iter().collect();
        let larger: HashSet<String> = dataset.split(high, seed).unwrap().discovery.into_iter().collect();
        prop_assert!(smaller.is_subset(&larger));
    }

    #[test]
    fn reading_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = PersonaDataset::from_json_str(&text);
    }

    #[test]
    fn reading_arbitrary_json_never_panics(value in arbitrary_json()) {
        let text = value.to_string();
        let _ = PersonaDataset::from_json_str(&text);
        let wrapped = serde_json::json!({"prompt_pairs": {"expertise_level": [value.clone()]}, "verification_prompts": [value]});
        let _ = PersonaDataset::from_json_str(&wrapped.to_string());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn large_splits_honour_the_ratio(ratio in 0.0f64..=1.0, seed in any::<u64>()) {
        // 20,000 items: the binomial standard deviation is at most 0.0036, so 0.02 is > 5 sigma.
        let ids: Vec<String> = (0..20_000).map(|i| format!("item_{i:05}")).collect();
        let split = dataset_of_ids(&ids).split(ratio, seed).unwrap();
        let fraction = split.discovery.len() as f64 / ids.len() as f64;
        prop_assert!((fraction - ratio).abs() < 0.02, "ratio {} gave {}", ratio, fraction);
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "(id|topic|prompt|turns|role|user|model|novice|expert|neutral|expected|ACTIVATE|[ a-z]{0,6})"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec(
                (
                    "(id|topic|tags|prompt|turns|role|content|novice|expert|neutral|expected|probe|[a-z]{1,4})",
                    inner
                ),
                0..6
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

#[test]
fn ratios_zero_and_one_put_everything_on_one_side() {
    let ids: Vec<String> = (0..500).map(|i| format!("x{i}")).collect();
    let dataset = dataset_of_ids(&ids);
    assert!(dataset.split(0.0, 7).unwrap().discovery.is_empty());
    assert!(dataset.split(1.0, 7).unwrap().held_out.is_empty());
}

#[test]
fn different_seeds_give_different_splits() {
    let ids: Vec<String> = (0..200).map(|i| format!("x{i}")).collect();
    let dataset = dataset_of_ids(&ids);
    assert_ne!(
        dataset.split(0.5, 1).unwrap(),
        dataset.split(0.5, 2).unwrap()
    );
}

// ---- the shipped dataset, mutated (truncation, bit flips, overwritten runs, inflated numbers) ----

#[global_allocator]
static ALLOCATOR: fuzz_support::PeakAllocator = fuzz_support::PeakAllocator;

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_support::cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// An `Err` or a valid dataset, never a panic, and no allocation beyond the bound.
    #[test]
    fn the_shipped_dataset_mutated_is_an_error_or_valid(ms in fuzz_support::mutations()) {
        let bytes = fuzz_support::apply(PersonaDataset::shipped_json().as_bytes(), &ms);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        fuzz_support::reset_largest_request();
        let result = std::panic::catch_unwind(|| {
            PersonaDataset::from_json_str(&text).map(|d| d.validate().is_ok())
        });
        prop_assert!(result.is_ok(), "the dataset parser panicked");
        prop_assert!(fuzz_support::largest_request() <= fuzz_support::bound(bytes.len()));
        let verification = std::panic::catch_unwind(|| {
            persona_dataset::verification_prompts_from_str(&text).is_ok()
        });
        prop_assert!(verification.is_ok());
    }
}
