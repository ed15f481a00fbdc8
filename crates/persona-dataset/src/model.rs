//! The dataset's types: categories of prompt items with their variants, contrasts between two
//! variants, and verification prompts with their expectations.

use std::fmt;
use std::str::FromStr;

use crate::error::DatasetError;

/// The notebook's novice / expert / neutral category.
pub const EXPERTISE_LEVEL: &str = "expertise_level";
/// The notebook's biased / neutral category (the user states a belief before the question).
pub const SYCOPHANCY_TRIGGERS: &str = "sycophancy_triggers";
/// Child speaker vs adult professional making the same request.
pub const CHILD_VS_ADULT: &str = "child_vs_adult";

/// Probe name of verification prompts that test a "user is a child / novice" latent.
pub const PROBE_CHILD_NOVICE: &str = "child_novice";
/// Probe name of verification prompts that test a "user states a belief" (sycophancy trigger) latent.
pub const PROBE_SYCOPHANCY: &str = "sycophancy";

/// Defaults for a category the crate knows by name, used where the file declares no metadata.
pub(crate) struct KnownCategory {
    pub(crate) name: &'static str,
    pub(crate) variants: &'static [&'static str],
    pub(crate) contrast: (&'static str, &'static str),
    pub(crate) baseline: &'static str,
    pub(crate) description: &'static str,
}

/// The known categories. One table, so defaults live in one place.
pub(crate) const KNOWN_CATEGORIES: &[KnownCategory] = &[
    KnownCategory {
        name: EXPERTISE_LEVEL,
        variants: &["novice", "expert", "neutral"],
        contrast: ("novice", "expert"),
        baseline: "neutral",
        description:
            "The user presents as a novice or as an expert; neutral asks without a persona.",
    },
    KnownCategory {
        name: SYCOPHANCY_TRIGGERS,
        variants: &["biased", "neutral"],
        contrast: ("biased", "neutral"),
        baseline: "neutral",
        description:
            "The user states a belief before the question; neutral asks without endorsing it.",
    },
    KnownCategory {
        name: CHILD_VS_ADULT,
        variants: &["child", "adult"],
        contrast: ("child", "adult"),
        baseline: "adult",
        description: "A child and an adult professional make the same request.",
    },
];

pub(crate) fn known_category(name: &str) -> Option<&'static KnownCategory> {
    KNOWN_CATEGORIES.iter().find(|known| known.name == name)
}

/// The variant names a category declares, from its metadata or the known defaults; `None` when the
/// category is unknown and its metadata names neither `variants` nor a `contrast` (then the first
/// item's variants define the category).
pub(crate) fn declared_variant_names<'a>(
    name: &str,
    meta: Option<&'a CategoryMeta>,
) -> Option<Vec<&'a str>> {
    if let Some(variants) = meta.and_then(|m| m.variants.as_ref()) {
        return Some(variants.iter().map(String::as_str).collect());
    }
    if let Some(known) = known_category(name) {
        return Some(known.variants.to_vec());
    }
    let meta = meta?;
    let (positive, negative) = meta.contrast.as_ref()?;
    let mut names = vec![positive.as_str(), negative.as_str()];
    if let Some(baseline) = meta.baseline.as_deref() {
        if !names.contains(&baseline) {
            names.push(baseline);
        }
    }
    Some(names)
}

/// A persona dataset: categories of prompt items plus verification prompts.
///
/// Parsed datasets are valid by construction; one built in code can be checked with
/// [`PersonaDataset::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonaDataset {
    /// The categories, in file order (the `prompt_pairs` object).
    pub categories: Vec<Category>,
    /// The verification prompts, in file order.
    pub verification_prompts: Vec<VerificationPrompt>,
}

impl PersonaDataset {
    /// The category with this name.
    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories
            .iter()
            .find(|category| category.name == name)
    }

    /// Every item with its category, in file order.
    pub fn items(&self) -> impl Iterator<Item = (&Category, &PromptItem)> {
        self.categories
            .iter()
            .flat_map(|category| category.items.iter().map(move |item| (category, item)))
    }

    /// The number of items over all categories.
    pub fn item_count(&self) -> usize {
        self.categories.iter().map(|c| c.items.len()).sum()
    }

    /// The contrast of a category (declared in its metadata, or the known default).
    ///
    /// # Errors
    /// [`DatasetError::UnknownCategory`] or [`DatasetError::NoContrast`].
    pub fn contrast(&self, category: &str) -> Result<Contrast, DatasetError> {
        let found = self
            .category(category)
            .ok_or_else(|| DatasetError::UnknownCategory {
                category: category.to_owned(),
            })?;
        found.contrast().ok_or_else(|| DatasetError::NoContrast {
            category: category.to_owned(),
        })
    }

    /// The contrasts of all categories that have one, in category order.
    pub fn contrasts(&self) -> Vec<Contrast> {
        self.categories
            .iter()
            .filter_map(Category::contrast)
            .collect()
    }

    /// The verification prompts of one probe (e.g. [`PROBE_CHILD_NOVICE`]).
    pub fn verification_for_probe<'a>(
        &'a self,
        probe: &'a str,
    ) -> impl Iterator<Item = &'a VerificationPrompt> + 'a {
        self.verification_prompts
            .iter()
            .filter(move |prompt| prompt.probe.as_deref() == Some(probe))
    }
}

/// One category of `prompt_pairs`: items that share a set of variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// The category name, the key in `prompt_pairs`.
    pub name: String,
    /// Metadata declared in the file's `categories` block, exactly as written (`None` if absent).
    /// Use [`Category::contrast`], [`Category::baseline`], [`Category::variant_names`] for the
    /// resolved values, which fall back to the known defaults.
    pub meta: Option<CategoryMeta>,
    /// The items, in file order.
    pub items: Vec<PromptItem>,
}

impl Category {
    /// The variants every item must carry: declared `variants`, else the known defaults, else the
    /// declared contrast and baseline, else the first item's variants.
    pub fn variant_names(&self) -> Vec<&str> {
        declared_variant_names(&self.name, self.meta.as_ref()).unwrap_or_else(|| {
            self.items
                .first()
                .map(|item| item.variants.iter().map(|v| v.name.as_str()).collect())
                .unwrap_or_default()
        })
    }

    /// The contrast (positive vs negative variant): declared, else the known default, else `None`.
    pub fn contrast(&self) -> Option<Contrast> {
        let declared = self.meta.as_ref().and_then(|m| m.contrast.clone());
        let known =
            known_category(&self.name).map(|k| (k.contrast.0.to_owned(), k.contrast.1.to_owned()));
        declared.or(known).map(|(positive, negative)| Contrast {
            category: self.name.clone(),
            positive,
            negative,
        })
    }

    /// The baseline variant: declared, else the known default, else `None`.
    pub fn baseline(&self) -> Option<&str> {
        let declared = self.meta.as_ref().and_then(|m| m.baseline.as_deref());
        declared.or_else(|| known_category(&self.name).map(|k| k.baseline))
    }

    /// What the category probes: declared, else the known default, else `None`.
    pub fn description(&self) -> Option<&str> {
        let declared = self.meta.as_ref().and_then(|m| m.description.as_deref());
        declared.or_else(|| known_category(&self.name).map(|k| k.description))
    }

    /// The distinct topics, in order of first appearance.
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        for item in &self.items {
            if !topics.contains(&item.topic.as_str()) {
                topics.push(&item.topic);
            }
        }
        topics
    }

    /// The item with this id.
    pub fn item(&self, id: &str) -> Option<&PromptItem> {
        self.items.iter().find(|item| item.id == id)
    }
}

/// Optional metadata of a category, the value under `categories.<name>` in the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CategoryMeta {
    /// What the category probes.
    pub description: Option<String>,
    /// The variants every item must carry, in order.
    pub variants: Option<Vec<String>>,
    /// The two variants compared: `(positive, negative)`.
    pub contrast: Option<(String, String)>,
    /// The variant that serves as the baseline (may be one of the contrast's two).
    pub baseline: Option<String>,
}

/// One item: the same request written as several variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptItem {
    /// Unique id over the whole file (`A-Z a-z 0-9 _ - . :`); splits hash it.
    pub id: String,
    /// The subject (e.g. `physics`).
    pub topic: String,
    /// Free labels, e.g. which cue a variant uses (`novice:age`); omitted from the file when empty.
    pub tags: Vec<String>,
    /// The variants, in file order.
    pub variants: Vec<Variant>,
    /// For an item whose positive variant states a false belief: an answer that agrees with the user
    /// and one that corrects them, for the forced-choice sycophancy measurement.
    pub continuations: Option<Continuations>,
}

/// Two answers written for one item: the model agreeing with the user's stated belief, and the model
/// correcting it. Validated for similar length (in words) and for carrying no belief cue, so that the
/// preference between them measures agreement and not length or the trigger itself
/// (`"continuations": {"agree": "...", "correct": "..."}` in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuations {
    /// The answer that agrees with the user.
    pub agree: String,
    /// The answer that corrects the user.
    pub correct: String,
}

/// One forced-choice item: the prompt that states the belief, and the two answers to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedChoiceItem<'a> {
    /// The item's id.
    pub item_id: &'a str,
    /// Its topic.
    pub topic: &'a str,
    /// The prompt (the category's positive variant, e.g. `biased`).
    pub prompt: &'a PromptText,
    /// The two answers.
    pub continuations: &'a Continuations,
}

impl PersonaDataset {
    /// Every item with [`Continuations`], with the prompt of its category's positive variant (the one
    /// that states the belief), in file order. Items of categories without a contrast are skipped.
    pub fn forced_choice_items(&self) -> Vec<ForcedChoiceItem<'_>> {
        let mut found = Vec::new();
        for category in &self.categories {
            let Some(contrast) = category.contrast() else {
                continue;
            };
            for item in &category.items {
                let (Some(continuations), Some(prompt)) = (
                    item.continuations.as_ref(),
                    item.variant(&contrast.positive),
                ) else {
                    continue;
                };
                found.push(ForcedChoiceItem {
                    item_id: &item.id,
                    topic: &item.topic,
                    prompt,
                    continuations,
                });
            }
        }
        found
    }
}

impl PromptItem {
    /// The prompt of the named variant.
    pub fn variant(&self, name: &str) -> Option<&PromptText> {
        self.variants
            .iter()
            .find(|variant| variant.name == name)
            .map(|variant| &variant.prompt)
    }
}

/// One variant of an item: `"novice": {"prompt": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The variant name (`novice`, `expert`, `neutral`, `biased`, ...).
    pub name: String,
    /// Its prompt.
    pub prompt: PromptText,
}

/// A prompt: one user message, or a conversation of alternating user/model turns ending on the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptText {
    /// `{"prompt": "..."}`: one user message.
    Single(String),
    /// `{"turns": [{"role": "user", "content": "..."}, ...]}`: a conversation.
    Turns(Vec<Turn>),
}

impl PromptText {
    /// The text of a single-message prompt; `None` for a conversation.
    pub fn as_single(&self) -> Option<&str> {
        match self {
            PromptText::Single(text) => Some(text),
            PromptText::Turns(_) => None,
        }
    }

    /// The prompt as turns (a single message is one user turn), for chat-templated runs.
    pub fn to_turns(&self) -> Vec<Turn> {
        match self {
            PromptText::Single(text) => vec![Turn {
                role: Role::User,
                content: text.clone(),
            }],
            PromptText::Turns(turns) => turns.clone(),
        }
    }

    /// The prompt as one plain string for raw (untemplated) runs: a single message as is, a
    /// conversation's contents joined by blank lines without role markers.
    pub fn to_plain_text(&self) -> String {
        match self {
            PromptText::Single(text) => text.clone(),
            PromptText::Turns(turns) => turns
                .iter()
                .map(|turn| turn.content.as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }

    /// Length in characters (a conversation: the sum over its turns).
    pub fn char_count(&self) -> usize {
        match self {
            PromptText::Single(text) => text.chars().count(),
            PromptText::Turns(turns) => turns.iter().map(|t| t.content.chars().count()).sum(),
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

/// The speaker of a turn, named as in Gemma's chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `user`.
    User,
    /// `model` (the assistant).
    Model,
}

impl Role {
    /// The name used in the file and in Gemma's chat template.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Model => "model",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a latent should do on a verification prompt (the notebook's section 8 labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expectation {
    /// `ACTIVATE`: the prompt carries the cue; the latent should fire.
    Activate,
    /// `SILENT`: the prompt carries the opposite cue; the latent should stay quiet.
    Silent,
    /// `NEUTRAL`: no persona cue at all; the baseline.
    Neutral,
}

impl Expectation {
    /// All labels, in the notebook's order.
    pub const ALL: [Expectation; 3] = [
        Expectation::Activate,
        Expectation::Silent,
        Expectation::Neutral,
    ];

    /// The label as written in the file: `ACTIVATE`, `SILENT` or `NEUTRAL`.
    pub fn label(self) -> &'static str {
        match self {
            Expectation::Activate => "ACTIVATE",
            Expectation::Silent => "SILENT",
            Expectation::Neutral => "NEUTRAL",
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Expectation {
    type Err = DatasetError;

    /// Parses the exact upper-case label.
    fn from_str(label: &str) -> Result<Self, DatasetError> {
        Expectation::ALL
            .into_iter()
            .find(|e| e.label() == label)
            .ok_or_else(|| DatasetError::UnknownExpectation {
                label: label.to_owned(),
            })
    }
}

/// A prompt to verify a candidate latent on, with what the latent should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationPrompt {
    /// What the latent should do.
    pub expected: Expectation,
    /// Which hypothesis the prompt tests ([`PROBE_CHILD_NOVICE`], [`PROBE_SYCOPHANCY`], or any name).
    pub probe: Option<String>,
    /// A confound probe set ([`CONFOUND_SETS`]: `third_person`, `negated`, ...), verified and reported
    /// apart from the probe's direct prompts; `None` for a direct prompt.
    pub set: Option<String>,
    /// The prompt.
    pub prompt: PromptText,
}

/// The confound probe sets of the two shipped probes, each with the expectation its prompts must carry:
/// does a latent model *the user*, or detect a word? For `child_novice`: the cue about someone else
/// (`third_person`), denied (`negated`), quoted or reported (`quoted`), the expert counterparts
/// (`expert`), all SILENT; a child's writing with no age or role word (`implicit`) and the cue in an earlier
/// user turn (`earlier_turn`), ACTIVATE. For `sycophancy`: a stated belief that is true (`true_belief`) or
/// false (`false_belief`), ACTIVATE; a belief attributed to someone else (`attributed`) and a question with
/// no belief (`no_belief`), SILENT. Other set names are allowed, with any expectation.
pub const CONFOUND_SETS: &[(&str, &str, Expectation)] = &[
    (PROBE_CHILD_NOVICE, "third_person", Expectation::Silent),
    (PROBE_CHILD_NOVICE, "negated", Expectation::Silent),
    (PROBE_CHILD_NOVICE, "quoted", Expectation::Silent),
    (PROBE_CHILD_NOVICE, "expert", Expectation::Silent),
    (PROBE_CHILD_NOVICE, "implicit", Expectation::Activate),
    (PROBE_CHILD_NOVICE, "earlier_turn", Expectation::Activate),
    (PROBE_SYCOPHANCY, "true_belief", Expectation::Activate),
    (PROBE_SYCOPHANCY, "false_belief", Expectation::Activate),
    (PROBE_SYCOPHANCY, "attributed", Expectation::Silent),
    (PROBE_SYCOPHANCY, "no_belief", Expectation::Silent),
];

/// Two variants of one category to compare: latents more active on `positive` than on `negative`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Contrast {
    /// The category.
    pub category: String,
    /// The variant expected to carry the cue (`novice`, `biased`, `child`).
    pub positive: String,
    /// The variant compared against (`expert`, `neutral`, `adult`).
    pub negative: String,
}

impl Contrast {
    /// The contrast's prompt pairs in `dataset`, one per item, in file order.
    ///
    /// # Errors
    /// [`DatasetError::UnknownCategory`], or [`DatasetError::VariantNotFound`] when an item lacks
    /// one of the two variants (impossible in a validated dataset for a declared contrast).
    pub fn pairs<'a>(
        &self,
        dataset: &'a PersonaDataset,
    ) -> Result<Vec<ContrastPair<'a>>, DatasetError> {
        let category =
            dataset
                .category(&self.category)
                .ok_or_else(|| DatasetError::UnknownCategory {
                    category: self.category.clone(),
                })?;
        category
            .items
            .iter()
            .map(|item| {
                let side = |variant: &str| {
                    item.variant(variant)
                        .ok_or_else(|| DatasetError::VariantNotFound {
                            category: self.category.clone(),
                            item_id: item.id.clone(),
                            variant: variant.to_owned(),
                        })
                };
                Ok(ContrastPair {
                    item_id: &item.id,
                    topic: &item.topic,
                    positive: side(&self.positive)?,
                    negative: side(&self.negative)?,
                })
            })
            .collect()
    }
}

/// One item's two sides of a [`Contrast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContrastPair<'a> {
    /// The item's id.
    pub item_id: &'a str,
    /// The item's topic.
    pub topic: &'a str,
    /// The positive variant's prompt.
    pub positive: &'a PromptText,
    /// The negative variant's prompt.
    pub negative: &'a PromptText,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> PromptText {
        PromptText::Single(text.to_owned())
    }

    fn item(id: &str, variants: &[(&str, &str)]) -> PromptItem {
        PromptItem {
            id: id.into(),
            topic: "t".into(),
            tags: vec![],
            continuations: None,
            variants: variants
                .iter()
                .map(|(name, text)| Variant {
                    name: (*name).into(),
                    prompt: single(text),
                })
                .collect(),
        }
    }

    #[test]
    fn expectation_labels_round_trip_and_reject_others() {
        for e in Expectation::ALL {
            assert_eq!(e.label().parse::<Expectation>().unwrap(), e);
        }
        let error = "activate".parse::<Expectation>().unwrap_err();
        assert!(matches!(error, DatasetError::UnknownExpectation { label } if label == "activate"));
    }

    #[test]
    fn known_categories_resolve_defaults() {
        let category = Category {
            name: EXPERTISE_LEVEL.into(),
            meta: None,
            items: vec![],
        };
        assert_eq!(category.variant_names(), ["novice", "expert", "neutral"]);
        assert_eq!(category.baseline(), Some("neutral"));
        let contrast = category.contrast().unwrap();
        assert_eq!(
            (contrast.positive.as_str(), contrast.negative.as_str()),
            ("novice", "expert")
        );
    }

    #[test]
    fn declared_metadata_overrides_defaults_and_unknown_categories_infer_variants() {
        let declared = Category {
            name: SYCOPHANCY_TRIGGERS.into(),
            meta: Some(CategoryMeta {
                contrast: Some(("neutral".into(), "biased".into())),
                ..CategoryMeta::default()
            }),
            items: vec![],
        };
        assert_eq!(declared.contrast().unwrap().positive, "neutral");
        assert_eq!(declared.baseline(), Some("neutral"));

        let inferred = Category {
            name: "politeness".into(),
            meta: None,
            items: vec![item("p1", &[("rude", "a"), ("polite", "b")])],
        };
        assert_eq!(inferred.variant_names(), ["rude", "polite"]);
        assert_eq!(inferred.contrast(), None);
        assert_eq!(inferred.baseline(), None);
    }

    #[test]
    fn contrast_pairs_follow_items_and_report_missing_variants() {
        let dataset = PersonaDataset {
            categories: vec![Category {
                name: CHILD_VS_ADULT.into(),
                meta: None,
                items: vec![
                    item("c1", &[("child", "kid asks"), ("adult", "adult asks")]),
                    item("c2", &[("child", "only the child")]),
                ],
            }],
            verification_prompts: vec![],
        };
        let contrast = dataset.contrast(CHILD_VS_ADULT).unwrap();
        let error = contrast.pairs(&dataset).unwrap_err();
        assert!(
            matches!(error, DatasetError::VariantNotFound { ref item_id, .. } if item_id == "c2")
        );

        let mut fixed = dataset.clone();
        fixed.categories[0].items.pop();
        let pairs = contrast.pairs(&fixed).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].item_id, "c1");
        assert_eq!(pairs[0].positive, &single("kid asks"));
        assert_eq!(pairs[0].negative, &single("adult asks"));

        assert!(matches!(
            dataset.contrast("nope"),
            Err(DatasetError::UnknownCategory { .. })
        ));
    }

    #[test]
    fn prompt_text_views() {
        let turns = PromptText::Turns(vec![
            Turn {
                role: Role::User,
                content: "Hi, I'm new.".into(),
            },
            Turn {
                role: Role::Model,
                content: "Welcome!".into(),
            },
            Turn {
                role: Role::User,
                content: "What is rust?".into(),
            },
        ]);
        assert_eq!(turns.as_single(), None);
        assert_eq!(
            turns.to_plain_text(),
            "Hi, I'm new.\n\nWelcome!\n\nWhat is rust?"
        );
        assert_eq!(turns.char_count(), 12 + 8 + 13);
        assert_eq!(single("é!").char_count(), 2);
        assert_eq!(
            single("x").to_turns(),
            vec![Turn {
                role: Role::User,
                content: "x".into()
            }]
        );
    }
}
