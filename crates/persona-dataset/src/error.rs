//! The crate's one error type, and the [`Problem`]s a dataset file can have.
//!
//! A file that is not JSON fails with [`DatasetError::Syntax`] (line and column). A file that is JSON
//! but breaks the format fails with [`DatasetError::Invalid`], which lists every [`Problem`] found in
//! the file at once, each with the JSON pointer of the offending value.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong when loading, validating or querying a persona dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not valid JSON (or not UTF-8).
    #[error("{} is not valid JSON (line {line}, column {column}): {message}", source_name(.path.as_deref()))]
    Syntax {
        /// The file, or `None` for text given as a string.
        path: Option<PathBuf>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The text is JSON but breaks the dataset format: every problem found, in document order.
    #[error("{}", render_invalid(.path.as_deref(), .problems))]
    Invalid {
        /// The file, or `None` for text given as a string or a dataset built in code.
        path: Option<PathBuf>,
        /// Every problem found (never empty).
        problems: Vec<Problem>,
    },
    /// A category asked for by name is not in the dataset.
    #[error("the dataset has no category `{category}`")]
    UnknownCategory {
        /// The name asked for.
        category: String,
    },
    /// A category has no contrast: it is not one of the known categories and its metadata declares none.
    #[error("category `{category}` has no contrast: declare one in its `categories` metadata")]
    NoContrast {
        /// The category.
        category: String,
    },
    /// An item lacks a variant that a contrast needs (only possible in datasets built in code and not validated).
    #[error("item `{item_id}` of category `{category}` has no variant `{variant}`")]
    VariantNotFound {
        /// The category.
        category: String,
        /// The item's id.
        item_id: String,
        /// The missing variant.
        variant: String,
    },
    /// A split ratio outside `[0, 1]` (or NaN).
    #[error("the discovery ratio must lie in [0, 1], got {ratio}")]
    InvalidRatio {
        /// The ratio given.
        ratio: f64,
    },
    /// A string that is not one of the expectation labels `ACTIVATE`, `SILENT`, `NEUTRAL`.
    #[error("unknown expectation label `{label}` (expected ACTIVATE, SILENT or NEUTRAL)")]
    UnknownExpectation {
        /// The label given.
        label: String,
    },
}

fn source_name(path: Option<&Path>) -> String {
    path.map_or_else(
        || "the dataset text".to_owned(),
        |p| p.display().to_string(),
    )
}

fn render_invalid(path: Option<&Path>, problems: &[Problem]) -> String {
    let plural = if problems.len() == 1 { "" } else { "s" };
    let mut text = format!(
        "{} is not a valid persona dataset ({} problem{plural}):",
        source_name(path),
        problems.len()
    );
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

/// One thing wrong with a dataset file, located by the JSON pointer of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// RFC 6901 JSON pointer, e.g. `/prompt_pairs/expertise_level/3/expert/prompt` (empty for the whole document).
    /// For something missing, it points where the thing should be.
    pub pointer: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(document root)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.kind)
    }
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A value of the wrong JSON type.
    WrongType {
        /// What the format wants there ("an object").
        expected: &'static str,
        /// What the file has ("a string").
        found: &'static str,
    },
    /// A required field is absent.
    MissingField {
        /// The field.
        field: String,
    },
    /// A field the format does not know.
    UnknownField {
        /// The field.
        field: String,
        /// The fields allowed there, in words.
        allowed: &'static str,
    },
    /// The same key twice in one object (plain JSON readers keep only the last one).
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A required string is empty or whitespace only (ids, topics, tags, probes, variant names).
    EmptyField {
        /// What is empty ("id", "topic", ...).
        field: &'static str,
    },
    /// A prompt (or a turn's content) is empty or whitespace only.
    EmptyPrompt,
    /// A string exceeds its length limit (see [`MAX_PROMPT_CHARS`](crate::MAX_PROMPT_CHARS) and friends).
    TooLong {
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// An id with a character outside `A-Z a-z 0-9 _ - . :`.
    InvalidIdCharacter {
        /// The id.
        id: String,
        /// The first offending character.
        character: char,
    },
    /// An id used twice in the file (ids are unique across all categories).
    DuplicateId {
        /// The id.
        id: String,
        /// Pointer of its first use.
        first: String,
    },
    /// An item lacks a variant its category requires.
    MissingVariant {
        /// The variant.
        variant: String,
    },
    /// An item carries a variant its category does not declare.
    UnknownVariant {
        /// The variant.
        variant: String,
        /// The category's variants.
        expected: Vec<String>,
    },
    /// An item has no variants at all.
    NoVariants,
    /// Two variants of one item have the same text (after trimming), so their contrast is empty.
    IdenticalVariants {
        /// This variant.
        variant: String,
        /// The earlier variant with the same text.
        other: String,
    },
    /// The same prompt text appears twice in the file (it would leak across a discovery/held-out split).
    DuplicatePrompt {
        /// Pointer of its first occurrence.
        first: String,
    },
    /// An expectation label other than `ACTIVATE`, `SILENT`, `NEUTRAL`.
    UnknownExpectation {
        /// The label.
        label: String,
    },
    /// A confound set's prompt with an expectation other than the set's ([`CONFOUND_SETS`](crate::CONFOUND_SETS)).
    WrongSetExpectation {
        /// The set.
        set: String,
        /// The expectation the set requires.
        required: String,
        /// The expectation given.
        found: String,
    },
    /// An `earlier_turn` prompt that is not a conversation with at least two user turns.
    EarlierTurnNotAConversation,
    /// A variant or verification prompt has both `prompt` and `turns`.
    PromptAndTurns,
    /// A `turns` list is empty.
    EmptyTurns,
    /// A conversation has more than [`MAX_TURNS`](crate::MAX_TURNS) turns.
    TooManyTurns {
        /// Its number of turns.
        turns: usize,
        /// The limit.
        max: usize,
    },
    /// A turn's role is not `user` or `model` (Gemma's chat template knows only these two).
    UnknownRole {
        /// The role.
        role: String,
    },
    /// A conversation does not start with a user turn.
    FirstTurnNotUser,
    /// Two consecutive turns have the same role.
    TurnsNotAlternating,
    /// A conversation does not end with a user turn (the model's reply is what follows it).
    LastTurnNotUser,
    /// Category metadata names a variant that is not among the category's variants.
    UndeclaredVariant {
        /// The name.
        variant: String,
        /// The category's variants.
        declared: Vec<String>,
    },
    /// A contrast names the same variant twice.
    ContrastOfOneVariant {
        /// The variant.
        variant: String,
    },
    /// A list with the wrong number of entries (a contrast has exactly two).
    WrongLength {
        /// The number wanted.
        expected: usize,
        /// The number found.
        found: usize,
    },
    /// A variant name the format reserves for item fields (`id`, `topic`, `tags`).
    ReservedVariantName {
        /// The name.
        name: String,
    },
    /// Metadata for a category that has no entry in `prompt_pairs`.
    MetadataWithoutCategory {
        /// The category.
        category: String,
    },
    /// A continuation with too few or too many words.
    ContinuationWords {
        /// Its words.
        words: usize,
        /// The fewest allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// A continuation that contains a belief cue ([`BELIEF_CUES`](crate::BELIEF_CUES)).
    CueInContinuation {
        /// The cue found.
        cue: String,
    },
    /// An item's two continuations are the same text.
    IdenticalContinuations,
    /// An item's two continuations differ too much in length.
    ContinuationLengths {
        /// Words of the agreeing one.
        agree: usize,
        /// Words of the correcting one.
        correct: usize,
    },
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ProblemKind::MissingField { field } => write!(f, "missing field `{field}`"),
            ProblemKind::UnknownField { field, allowed } => {
                write!(f, "unknown field `{field}` (allowed here: {allowed})")
            }
            ProblemKind::DuplicateKey { key } => write!(f, "key `{key}` appears more than once"),
            ProblemKind::EmptyField { field } => write!(f, "{field} is empty"),
            ProblemKind::EmptyPrompt => write!(f, "prompt is empty or whitespace only"),
            ProblemKind::TooLong { chars, max } => {
                write!(f, "{chars} characters, more than the limit of {max}")
            }
            ProblemKind::InvalidIdCharacter { id, character } => write!(
                f,
                "id `{id}` contains {character:?} (ids use only A-Z a-z 0-9 _ - . :)"
            ),
            ProblemKind::DuplicateId { id, first } => {
                write!(f, "duplicate id `{id}` (first used at {first})")
            }
            ProblemKind::MissingVariant { variant } => write!(f, "missing variant `{variant}`"),
            ProblemKind::UnknownVariant { variant, expected } => write!(
                f,
                "unknown variant `{variant}` (this category's variants: {})",
                list(expected)
            ),
            ProblemKind::NoVariants => write!(f, "item has no variants"),
            ProblemKind::IdenticalVariants { variant, other } => write!(
                f,
                "variant `{variant}` has the same text as variant `{other}`"
            ),
            ProblemKind::DuplicatePrompt { first } => {
                write!(f, "same prompt text as {first}")
            }
            ProblemKind::UnknownExpectation { label } => write!(
                f,
                "unknown expectation `{label}` (expected ACTIVATE, SILENT or NEUTRAL)"
            ),
            ProblemKind::WrongSetExpectation {
                set,
                required,
                found,
            } => write!(
                f,
                "confound set `{set}` requires expectation {required}, found {found}"
            ),
            ProblemKind::EarlierTurnNotAConversation => write!(
                f,
                "an `earlier_turn` prompt must be a conversation (`turns`) with at least two user turns"
            ),
            ProblemKind::PromptAndTurns => {
                write!(f, "has both `prompt` and `turns`; give exactly one")
            }
            ProblemKind::EmptyTurns => write!(f, "`turns` is empty"),
            ProblemKind::TooManyTurns { turns, max } => {
                write!(f, "{turns} turns, more than the limit of {max}")
            }
            ProblemKind::UnknownRole { role } => {
                write!(f, "unknown role `{role}` (expected `user` or `model`)")
            }
            ProblemKind::FirstTurnNotUser => write!(f, "the first turn must be a `user` turn"),
            ProblemKind::TurnsNotAlternating => {
                write!(f, "same role as the previous turn; roles must alternate")
            }
            ProblemKind::LastTurnNotUser => write!(f, "the last turn must be a `user` turn"),
            ProblemKind::UndeclaredVariant { variant, declared } => write!(
                f,
                "`{variant}` is not one of the category's variants ({})",
                list(declared)
            ),
            ProblemKind::ContrastOfOneVariant { variant } => {
                write!(
                    f,
                    "a contrast needs two different variants, got `{variant}` twice"
                )
            }
            ProblemKind::WrongLength { expected, found } => {
                write!(f, "expected {expected} entries, found {found}")
            }
            ProblemKind::ReservedVariantName { name } => write!(
                f,
                "`{name}` is reserved for item fields and cannot name a variant"
            ),
            ProblemKind::MetadataWithoutCategory { category } => write!(
                f,
                "metadata for category `{category}`, which has no entry in `prompt_pairs`"
            ),
            ProblemKind::ContinuationWords { words, min, max } => {
                write!(f, "{words} words; a continuation has {min} to {max}")
            }
            ProblemKind::CueInContinuation { cue } => write!(
                f,
                "contains the belief cue `{cue}`; a continuation must not carry the trigger it is measured against"
            ),
            ProblemKind::IdenticalContinuations => {
                write!(f, "`agree` and `correct` are the same text")
            }
            ProblemKind::ContinuationLengths { agree, correct } => write!(
                f,
                "`agree` has {agree} words and `correct` {correct}; the longer may have at most {} times the words of the shorter",
                crate::CONTINUATION_LENGTH_RATIO
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_every_problem_on_its_own_line() {
        let error = DatasetError::Invalid {
            path: Some(PathBuf::from("data/x.json")),
            problems: vec![
                Problem {
                    pointer: "/prompt_pairs/expertise_level/3/expert".into(),
                    kind: ProblemKind::MissingVariant {
                        variant: "expert".into(),
                    },
                },
                Problem {
                    pointer: String::new(),
                    kind: ProblemKind::MissingField {
                        field: "prompt_pairs".into(),
                    },
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "data/x.json is not a valid persona dataset (2 problems):\n  \
             /prompt_pairs/expertise_level/3/expert: missing variant `expert`\n  \
             (document root): missing field `prompt_pairs`"
        );
    }
}
