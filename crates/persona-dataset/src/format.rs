//! The JSON format: reading a file into a [`PersonaDataset`] (reporting every problem at once) and
//! writing one back, so that writing then reading gives an equal dataset.
//!
//! The reader walks an order-preserving tree ([`Json`]) rather than deriving `Deserialize`: a
//! derived reader stops at the first error, forgets where it was, and keeps the last of two
//! duplicate keys. The walk records structural problems itself and hands contents to the
//! [`Checker`].

use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Problem, ProblemKind};
use crate::json::{line_column, Json, Pointer};
use crate::model::{
    declared_variant_names, Category, CategoryMeta, Continuations, Expectation, PersonaDataset,
    PromptItem, PromptText, Role, Turn, Variant, VerificationPrompt,
};
use crate::validate::Checker;
use crate::write::to_tree;

/// Item fields; every other key of an item is a variant.
const ITEM_FIELDS: [&str; 4] = ["id", "topic", "tags", "continuations"];

/// What a document must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    /// A dataset file: `prompt_pairs` required, `categories` and `verification_prompts` optional.
    Dataset,
    /// A verification file: `verification_prompts` required, the rest optional.
    Verification,
}

impl PersonaDataset {
    /// Parses and validates a dataset from JSON text.
    ///
    /// # Errors
    /// [`DatasetError::Syntax`] for text that is not JSON, [`DatasetError::Invalid`] listing every
    /// problem of a file that breaks the format.
    pub fn from_json_str(text: &str) -> Result<Self, DatasetError> {
        parse(text.as_bytes(), None, Document::Dataset)
    }

    /// Reads, parses and validates a dataset file.
    ///
    /// # Errors
    /// [`DatasetError::Io`], [`DatasetError::Syntax`] or [`DatasetError::Invalid`], naming the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, DatasetError> {
        let path = path.as_ref();
        parse(&read(path)?, Some(path), Document::Dataset)
    }

    /// The dataset at `path`, or the notebook's [embedded minimal dataset](Self::embedded_minimal)
    /// when no path is given (the notebook's own fallback).
    ///
    /// # Errors
    /// As [`PersonaDataset::from_path`].
    pub fn load(path: Option<&Path>) -> Result<Self, DatasetError> {
        path.map_or_else(|| Ok(Self::embedded_minimal()), Self::from_path)
    }

    /// Appends the verification prompts of a second file (see [`verification_prompts_from_path`]),
    /// then validates the whole (so a verification prompt repeating an item's text is caught).
    ///
    /// # Errors
    /// Errors of the second file name that file; problems of the merged dataset carry no path and
    /// point into the merged dataset as [`to_json_string_pretty`](Self::to_json_string_pretty) writes it.
    pub fn with_verification_from_path(
        mut self,
        path: impl AsRef<Path>,
    ) -> Result<Self, DatasetError> {
        self.verification_prompts
            .extend(verification_prompts_from_path(path)?);
        self.validate()?;
        Ok(self)
    }

    /// Checks a dataset (typically one built in code) against every rule the reader enforces.
    ///
    /// # Errors
    /// [`DatasetError::Invalid`] with every problem, pointers as in the written JSON.
    pub fn validate(&self) -> Result<(), DatasetError> {
        read_tree(&to_tree(self), Document::Dataset)
            .map(drop)
            .map_err(|problems| DatasetError::Invalid {
                path: None,
                problems,
            })
    }

    /// The dataset as pretty-printed JSON (two-space indent, file order kept, no trailing newline).
    /// Reading it back gives an equal dataset.
    pub fn to_json_string_pretty(&self) -> String {
        serde_json::to_string_pretty(&to_tree(self))
            .expect("a JSON tree with string keys and finite numbers always serialises")
    }
}

/// Parses verification prompts from JSON text: an object with a `verification_prompts` array (a
/// full dataset file also qualifies; its other parts are validated but not returned).
///
/// # Errors
/// As [`PersonaDataset::from_json_str`].
pub fn verification_prompts_from_str(text: &str) -> Result<Vec<VerificationPrompt>, DatasetError> {
    parse(text.as_bytes(), None, Document::Verification).map(|d| d.verification_prompts)
}

/// Reads verification prompts from a second file, see [`verification_prompts_from_str`].
///
/// # Errors
/// As [`PersonaDataset::from_path`].
pub fn verification_prompts_from_path(
    path: impl AsRef<Path>,
) -> Result<Vec<VerificationPrompt>, DatasetError> {
    let path = path.as_ref();
    parse(&read(path)?, Some(path), Document::Verification).map(|d| d.verification_prompts)
}

fn read(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse(
    bytes: &[u8],
    path: Option<&Path>,
    document: Document,
) -> Result<PersonaDataset, DatasetError> {
    let owned_path = || path.map(Path::to_path_buf);
    // A byte-order mark is an editor's habit, not content.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|error| {
        let (line, column) = line_column(bytes, error.valid_up_to());
        DatasetError::Syntax {
            path: owned_path(),
            line,
            column,
            message: "invalid UTF-8".to_owned(),
        }
    })?;
    let tree: Json =
        serde_json::from_str(text).map_err(|error| syntax_error(&error, owned_path()))?;
    read_tree(&tree, document).map_err(|problems| DatasetError::Invalid {
        path: owned_path(),
        problems,
    })
}

fn syntax_error(error: &serde_json::Error, path: Option<PathBuf>) -> DatasetError {
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full).to_owned();
    DatasetError::Syntax {
        path,
        line: error.line(),
        column: error.column(),
        message,
    }
}

/// Reads a tree into a dataset, or returns every problem found.
fn read_tree(tree: &Json, document: Document) -> Result<PersonaDataset, Vec<Problem>> {
    let mut reader = Reader::default();
    let dataset = reader.root(tree, document);
    let problems = reader.check.into_problems();
    if problems.is_empty() {
        Ok(dataset)
    } else {
        Err(problems)
    }
}

/// The members of one JSON object, duplicates removed (and reported), each taken at most once.
struct Fields<'a> {
    at: Pointer,
    members: Vec<(&'a str, &'a Json)>,
    taken: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// The value of `key`, if present and not taken yet.
    fn take(&mut self, key: &str) -> Option<&'a Json> {
        let index =
            (0..self.members.len()).find(|&i| !self.taken[i] && self.members[i].0 == key)?;
        self.taken[index] = true;
        Some(self.members[index].1)
    }

    /// Every member not taken yet, in file order; they count as taken afterwards.
    fn rest(&mut self) -> Vec<(&'a str, &'a Json)> {
        let rest = self
            .members
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|(member, _)| *member)
            .collect();
        self.taken.iter_mut().for_each(|taken| *taken = true);
        rest
    }
}

/// The walk over one document.
#[derive(Default)]
struct Reader {
    check: Checker,
}

impl Reader {
    fn root(&mut self, tree: &Json, document: Document) -> PersonaDataset {
        let root = Pointer::root();
        let mut dataset = PersonaDataset::default();
        let Some(mut fields) = self.object(&root, tree) else {
            return dataset;
        };
        let mut metas = match fields.take("categories") {
            Some(value) => self.metas(&root.push("categories"), value),
            None => Vec::new(),
        };
        let pairs = match document {
            Document::Dataset => self.required(&mut fields, "prompt_pairs"),
            Document::Verification => fields.take("prompt_pairs"),
        };
        if let Some(pairs) = pairs {
            dataset.categories = self.categories(&root.push("prompt_pairs"), pairs, &mut metas);
        }
        for (category, _) in metas {
            let at = root.push("categories").push(&category);
            self.check
                .report(&at, ProblemKind::MetadataWithoutCategory { category });
        }
        let verification = match document {
            Document::Dataset => fields.take("verification_prompts"),
            Document::Verification => self.required(&mut fields, "verification_prompts"),
        };
        if let Some(value) = verification {
            dataset.verification_prompts =
                self.verifications(&root.push("verification_prompts"), value);
        }
        self.reject_rest(
            &mut fields,
            "categories, prompt_pairs, verification_prompts",
        );
        dataset
    }

    // ---- the `categories` metadata block ----

    fn metas(&mut self, at: &Pointer, value: &Json) -> Vec<(String, CategoryMeta)> {
        let Some(mut fields) = self.object(at, value) else {
            return Vec::new();
        };
        let mut metas = Vec::new();
        for (name, value) in fields.rest() {
            let at = at.push(name);
            self.check.name(&at, "category name", name);
            if let Some(meta) = self.meta(&at, value) {
                metas.push((name.to_owned(), meta));
            }
        }
        metas
    }

    fn meta(&mut self, at: &Pointer, value: &Json) -> Option<CategoryMeta> {
        let mut fields = self.object(at, value)?;
        let description = fields
            .take("description")
            .and_then(|v| self.string(&at.push("description"), v))
            .map(str::to_owned);
        let variants = fields
            .take("variants")
            .and_then(|v| self.variant_list(&at.push("variants"), v));
        let contrast = fields
            .take("contrast")
            .and_then(|v| self.contrast_pair(&at.push("contrast"), v));
        let baseline = fields.take("baseline").and_then(|v| {
            let at = at.push("baseline");
            let name = self.string(&at, v)?;
            self.check.name(&at, "baseline", name);
            Some(name.to_owned())
        });
        self.reject_rest(&mut fields, "description, variants, contrast, baseline");
        Some(CategoryMeta {
            description,
            variants,
            contrast,
            baseline,
        })
    }

    fn variant_list(&mut self, at: &Pointer, value: &Json) -> Option<Vec<String>> {
        let array = self.array(at, value)?;
        if array.is_empty() {
            self.check
                .report(at, ProblemKind::EmptyField { field: "variants" });
            return None;
        }
        let mut names: Vec<String> = Vec::with_capacity(array.len());
        for (index, value) in array.iter().enumerate() {
            let at = at.push(index);
            let Some(name) = self.string(&at, value) else {
                continue;
            };
            self.variant_name(&at, name);
            if names.iter().any(|n| n == name) {
                self.check.report(
                    &at,
                    ProblemKind::DuplicateKey {
                        key: name.to_owned(),
                    },
                );
            } else {
                names.push(name.to_owned());
            }
        }
        (names.len() == array.len()).then_some(names)
    }

    fn contrast_pair(&mut self, at: &Pointer, value: &Json) -> Option<(String, String)> {
        let array = self.array(at, value)?;
        let names: Vec<&str> = array
            .iter()
            .enumerate()
            .filter_map(|(index, value)| {
                let at = at.push(index);
                let name = self.string(&at, value)?;
                self.variant_name(&at, name);
                Some(name)
            })
            .collect();
        if array.len() != 2 {
            self.check.report(
                at,
                ProblemKind::WrongLength {
                    expected: 2,
                    found: array.len(),
                },
            );
            return None;
        }
        let [positive, negative] = names[..] else {
            return None; // a non-string entry, already reported
        };
        if positive == negative {
            self.check.report(
                &at.push(1),
                ProblemKind::ContrastOfOneVariant {
                    variant: positive.to_owned(),
                },
            );
            return None;
        }
        Some((positive.to_owned(), negative.to_owned()))
    }

    /// Contrast and baseline must name variants of the category: the declared ones, and the known
    /// defaults a category falls back to when its metadata declares other variants but no contrast.
    fn meta_names(&mut self, category: &str, meta: Option<&CategoryMeta>, variants: &[String]) {
        let at = Pointer::root().push("categories").push(category);
        let known = crate::model::known_category(category);
        let mut named: Vec<(Pointer, String)> = Vec::new();
        match (meta.and_then(|m| m.contrast.as_ref()), known) {
            (Some((positive, negative)), _) => {
                named.push((at.push("contrast").push(0), positive.clone()));
                named.push((at.push("contrast").push(1), negative.clone()));
            }
            (None, Some(k)) => {
                named.push((at.clone(), k.contrast.0.to_owned()));
                named.push((at.clone(), k.contrast.1.to_owned()));
            }
            (None, None) => {}
        }
        match (meta.and_then(|m| m.baseline.as_ref()), known) {
            (Some(baseline), _) => named.push((at.push("baseline"), baseline.clone())),
            (None, Some(k)) => named.push((at.clone(), k.baseline.to_owned())),
            (None, None) => {}
        }
        for (at, name) in named {
            if !variants.contains(&name) {
                self.check.report(
                    &at,
                    ProblemKind::UndeclaredVariant {
                        variant: name.clone(),
                        declared: variants.to_vec(),
                    },
                );
            }
        }
    }

    // ---- `prompt_pairs` ----

    fn categories(
        &mut self,
        at: &Pointer,
        value: &Json,
        metas: &mut Vec<(String, CategoryMeta)>,
    ) -> Vec<Category> {
        let Some(mut fields) = self.object(at, value) else {
            return Vec::new();
        };
        let mut categories = Vec::new();
        for (name, items) in fields.rest() {
            let meta = metas
                .iter()
                .position(|(n, _)| n == name)
                .map(|index| metas.remove(index).1);
            categories.push(self.category(&at.push(name), name, meta, items));
        }
        categories
    }

    fn category(
        &mut self,
        at: &Pointer,
        name: &str,
        meta: Option<CategoryMeta>,
        value: &Json,
    ) -> Category {
        self.check.name(at, "category name", name);
        let mut variants: Option<Vec<String>> = declared_variant_names(name, meta.as_ref())
            .map(|names| names.into_iter().map(str::to_owned).collect());
        let mut items = Vec::new();
        if let Some(array) = self.array(at, value) {
            for (index, value) in array.iter().enumerate() {
                if let Some(item) = self.item(&at.push(index), value, &mut variants) {
                    items.push(item);
                }
            }
        }
        if let Some(variants) = &variants {
            self.meta_names(name, meta.as_ref(), variants);
        }
        Category {
            name: name.to_owned(),
            meta,
            items,
        }
    }

    /// One item. `expected` holds the category's variants; `None` until the first item of a
    /// category without declared variants sets them.
    fn item(
        &mut self,
        at: &Pointer,
        value: &Json,
        expected: &mut Option<Vec<String>>,
    ) -> Option<PromptItem> {
        let mut fields = self.object(at, value)?;
        let id = self.required(&mut fields, "id").and_then(|v| {
            let at = at.push("id");
            let id = self.string(&at, v)?;
            self.check.id(&at, id);
            Some(id)
        });
        let topic = self.required(&mut fields, "topic").and_then(|v| {
            let at = at.push("topic");
            let topic = self.string(&at, v)?;
            self.check.name(&at, "topic", topic);
            Some(topic)
        });
        let tags = fields
            .take("tags")
            .map(|v| self.tags(&at.push("tags"), v))
            .unwrap_or_default();
        let continuations = fields
            .take("continuations")
            .and_then(|v| self.continuations(&at.push("continuations"), v));

        let members = fields.rest();
        let mut variants = Vec::with_capacity(members.len());
        for (name, value) in &members {
            let at = at.push(name);
            self.variant_name(&at, name);
            if let Some(expected) = expected.as_ref() {
                if !expected.iter().any(|e| e == name) {
                    self.check.report(
                        &at,
                        ProblemKind::UnknownVariant {
                            variant: (*name).to_owned(),
                            expected: expected.clone(),
                        },
                    );
                }
            }
            if let Some(prompt) = self.prompt_object(&at, value) {
                variants.push(Variant {
                    name: (*name).to_owned(),
                    prompt,
                });
            }
        }
        match expected {
            Some(expected) => {
                for name in expected.iter() {
                    if !members.iter().any(|(key, _)| key == name) {
                        self.check.report(
                            &at.push(name),
                            ProblemKind::MissingVariant {
                                variant: name.clone(),
                            },
                        );
                    }
                }
            }
            None if members.is_empty() => self.check.report(at, ProblemKind::NoVariants),
            None => *expected = Some(members.iter().map(|(key, _)| (*key).to_owned()).collect()),
        }
        self.check.variant_texts(at, &variants);
        Some(PromptItem {
            id: id?.to_owned(),
            topic: topic?.to_owned(),
            tags,
            variants,
            continuations,
        })
    }

    /// `{"agree": "...", "correct": "..."}`, both required.
    fn continuations(&mut self, at: &Pointer, value: &Json) -> Option<Continuations> {
        let mut fields = self.object(at, value)?;
        let mut text = |this: &mut Self, key: &str| {
            let value = this.required(&mut fields, key)?;
            this.string(&at.push(key), value).map(str::to_owned)
        };
        let agree = text(self, "agree");
        let correct = text(self, "correct");
        self.reject_rest(&mut fields, "agree, correct");
        let (agree, correct) = (agree?, correct?);
        self.check.continuations(at, &agree, &correct);
        Some(Continuations { agree, correct })
    }

    fn variant_name(&mut self, at: &Pointer, name: &str) {
        self.check.name(at, "variant name", name);
        if ITEM_FIELDS.contains(&name) {
            self.check.report(
                at,
                ProblemKind::ReservedVariantName {
                    name: name.to_owned(),
                },
            );
        }
    }

    fn tags(&mut self, at: &Pointer, value: &Json) -> Vec<String> {
        let Some(array) = self.array(at, value) else {
            return Vec::new();
        };
        let mut tags = Vec::with_capacity(array.len());
        for (index, value) in array.iter().enumerate() {
            let at = at.push(index);
            if let Some(tag) = self.string(&at, value) {
                self.check.name(&at, "tag", tag);
                tags.push(tag.to_owned());
            }
        }
        tags
    }

    // ---- prompts and conversations ----

    /// A variant's value: `{"prompt": ...}` or `{"turns": [...]}`.
    fn prompt_object(&mut self, at: &Pointer, value: &Json) -> Option<PromptText> {
        let mut fields = self.object(at, value)?;
        let prompt = self.prompt_fields(at, &mut fields);
        self.reject_rest(&mut fields, "prompt or turns");
        prompt
    }

    /// Takes `prompt` or `turns` (exactly one) from an object at `at`.
    fn prompt_fields(&mut self, at: &Pointer, fields: &mut Fields<'_>) -> Option<PromptText> {
        match (fields.take("prompt"), fields.take("turns")) {
            (Some(_), Some(_)) => {
                self.check.report(at, ProblemKind::PromptAndTurns);
                None
            }
            (Some(value), None) => {
                let at = at.push("prompt");
                let text = self.string(&at, value)?;
                self.check.prompt(&at, text);
                Some(PromptText::Single(text.to_owned()))
            }
            (None, Some(value)) => self.turns(&at.push("turns"), value).map(PromptText::Turns),
            (None, None) => {
                self.check.report(
                    &at.push("prompt"),
                    ProblemKind::MissingField {
                        field: "prompt (or turns)".to_owned(),
                    },
                );
                None
            }
        }
    }

    fn turns(&mut self, at: &Pointer, value: &Json) -> Option<Vec<Turn>> {
        let array = self.array(at, value)?;
        let mut turns = Vec::with_capacity(array.len());
        let mut roles = Vec::with_capacity(array.len());
        let mut total_chars = 0;
        for (index, value) in array.iter().enumerate() {
            let at = at.push(index);
            let Some(mut fields) = self.object(&at, value) else {
                roles.push(None);
                continue;
            };
            let role = self.required(&mut fields, "role").and_then(|v| {
                let at = at.push("role");
                match self.string(&at, v)? {
                    "user" => Some(Role::User),
                    "model" => Some(Role::Model),
                    other => {
                        let role = other.to_owned();
                        self.check.report(&at, ProblemKind::UnknownRole { role });
                        None
                    }
                }
            });
            let content = self.required(&mut fields, "content").and_then(|v| {
                let at = at.push("content");
                let content = self.string(&at, v)?;
                self.check.prompt(&at, content);
                Some(content)
            });
            self.reject_rest(&mut fields, "role, content");
            roles.push(role);
            if let (Some(role), Some(content)) = (role, content) {
                total_chars += content.chars().count();
                turns.push(Turn {
                    role,
                    content: content.to_owned(),
                });
            }
        }
        self.check.conversation(at, &roles, total_chars);
        (turns.len() == array.len()).then_some(turns)
    }

    // ---- `verification_prompts` ----

    fn verifications(&mut self, at: &Pointer, value: &Json) -> Vec<VerificationPrompt> {
        let Some(array) = self.array(at, value) else {
            return Vec::new();
        };
        let mut prompts = Vec::with_capacity(array.len());
        for (index, value) in array.iter().enumerate() {
            if let Some(prompt) = self.verification(&at.push(index), value) {
                prompts.push(prompt);
            }
        }
        prompts
    }

    fn verification(&mut self, at: &Pointer, value: &Json) -> Option<VerificationPrompt> {
        let mut fields = self.object(at, value)?;
        let expected = self.required(&mut fields, "expected").and_then(|v| {
            let at = at.push("expected");
            let label = self.string(&at, v)?;
            let parsed = label.parse::<Expectation>().ok();
            if parsed.is_none() {
                let label = label.to_owned();
                self.check
                    .report(&at, ProblemKind::UnknownExpectation { label });
            }
            parsed
        });
        let probe = fields.take("probe").and_then(|v| {
            let at = at.push("probe");
            let probe = self.string(&at, v)?;
            self.check.name(&at, "probe", probe);
            Some(probe.to_owned())
        });
        let set = fields.take("set").and_then(|v| {
            let at = at.push("set");
            let set = self.string(&at, v)?;
            self.check.name(&at, "set", set);
            Some(set.to_owned())
        });
        let prompt = self.prompt_fields(at, &mut fields);
        self.reject_rest(&mut fields, "expected, probe, set, prompt, turns");
        let prompt = prompt?;
        self.check.unique_text(at, &prompt);
        if let (Some(set), Some(expected)) = (&set, expected) {
            self.check
                .confound_set(at, probe.as_deref(), set, expected, &prompt);
        }
        Some(VerificationPrompt {
            expected: expected?,
            probe,
            set,
            prompt,
        })
    }

    // ---- typed access to JSON values ----

    fn object<'a>(&mut self, at: &Pointer, value: &'a Json) -> Option<Fields<'a>> {
        let Json::Object(members) = value else {
            self.wrong_type(at, "an object", value);
            return None;
        };
        let mut kept: Vec<(&str, &Json)> = Vec::with_capacity(members.len());
        for (key, value) in members {
            if kept.iter().any(|(k, _)| k == key) {
                self.check.report(
                    &at.push(key),
                    ProblemKind::DuplicateKey { key: key.clone() },
                );
            } else {
                kept.push((key, value));
            }
        }
        Some(Fields {
            at: at.clone(),
            taken: vec![false; kept.len()],
            members: kept,
        })
    }

    fn array<'a>(&mut self, at: &Pointer, value: &'a Json) -> Option<&'a [Json]> {
        match value {
            Json::Array(items) => Some(items),
            other => {
                self.wrong_type(at, "an array", other);
                None
            }
        }
    }

    fn string<'a>(&mut self, at: &Pointer, value: &'a Json) -> Option<&'a str> {
        match value {
            Json::String(text) => Some(text),
            other => {
                self.wrong_type(at, "a string", other);
                None
            }
        }
    }

    fn wrong_type(&mut self, at: &Pointer, expected: &'static str, found: &Json) {
        self.check.report(
            at,
            ProblemKind::WrongType {
                expected,
                found: found.kind(),
            },
        );
    }

    fn required<'a>(&mut self, fields: &mut Fields<'a>, key: &str) -> Option<&'a Json> {
        let value = fields.take(key);
        if value.is_none() {
            let at = fields.at.push(key);
            self.check.report(
                &at,
                ProblemKind::MissingField {
                    field: key.to_owned(),
                },
            );
        }
        value
    }

    fn reject_rest(&mut self, fields: &mut Fields<'_>, allowed: &'static str) {
        for (key, _) in fields.rest() {
            self.check.report(
                &fields.at.push(key),
                ProblemKind::UnknownField {
                    field: key.to_owned(),
                    allowed,
                },
            );
        }
    }
}
