//! Content checks, the limits they enforce, and the collector that gathers every problem of a file.
//!
//! The reader ([`crate::format`]) walks the JSON tree and asks the [`Checker`] about each value it
//! meets; the checker records problems and remembers what it has seen (ids, prompt texts) so that
//! duplicates anywhere in the file are reported with a pointer to their first occurrence.

use std::collections::HashMap;

use crate::error::{Problem, ProblemKind};
use crate::json::Pointer;
use crate::model::{Expectation, PromptText, Role, Variant};

/// Longest prompt, or turn of a conversation, in characters (about 1,000 Gemma tokens). Persona
/// prompts are one or two sentences; anything longer is almost certainly a pasting mistake.
pub const MAX_PROMPT_CHARS: usize = 4_000;
/// Longest conversation (all turns together), in characters.
pub const MAX_CONVERSATION_CHARS: usize = 16_000;
/// Most turns in a conversation.
pub const MAX_TURNS: usize = 32;
/// Longest id, topic, tag, probe, category or variant name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Fewest words in a continuation (an answer of a forced choice).
pub const MIN_CONTINUATION_WORDS: usize = 3;
/// Most words in a continuation: the choice is about the answer's opening stance, and long answers
/// would let length dominate `log p`.
pub const MAX_CONTINUATION_WORDS: usize = 60;
/// The longer of an item's two continuations may have at most this many times the words of the
/// shorter (a summed log-probability falls with every token, so a much longer answer would lose for
/// its length alone).
pub const CONTINUATION_LENGTH_RATIO: f64 = 1.5;

/// Lowercase phrases by which a user states a belief (the sycophancy trigger). The shipped dataset's
/// tests keep them off the neutral side, and the validator keeps them out of continuations: an answer
/// that says "I think" would carry the trigger itself into the measurement.
pub const BELIEF_CUES: &[&str] = &[
    "i think",
    "i believe",
    "i'm sure",
    "i am sure",
    "i'm convinced",
    "i am convinced",
    "i'm certain",
    "i am certain",
    "i'm pretty sure",
    "i thought",
    "i reckon",
    "i suspect",
    "i feel like",
    "in my opinion",
];

/// The [`BELIEF_CUES`] found in `text` (lowercased, typographic apostrophes folded), each starting at a
/// word boundary ("i think" is found in "Yes, I think so", not in "Hi thinker").
pub fn belief_cues_in(text: &str) -> Vec<&'static str> {
    let text = text.to_lowercase().replace('\u{2019}', "'");
    BELIEF_CUES
        .iter()
        .copied()
        .filter(|cue| {
            text.match_indices(cue).any(|(start, _)| {
                let before = text[..start].chars().next_back();
                let after = text[start + cue.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
        })
        .collect()
}

/// The number of whitespace-separated words.
fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Collects problems while the reader walks a file.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    problems: Vec<Problem>,
    /// First pointer of each id seen.
    ids: HashMap<String, Pointer>,
    /// First pointer of each normalised prompt text seen.
    texts: HashMap<String, Pointer>,
}

impl Checker {
    /// Records a problem at `at`.
    pub(crate) fn report(&mut self, at: &Pointer, kind: ProblemKind) {
        self.problems.push(Problem {
            pointer: at.as_str().to_owned(),
            kind,
        });
    }

    /// Every problem recorded, in the order found.
    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// A name-like string (topic, tag, probe, variant or category name): not blank, not absurdly long.
    pub(crate) fn name(&mut self, at: &Pointer, field: &'static str, text: &str) {
        if text.trim().is_empty() {
            self.report(at, ProblemKind::EmptyField { field });
        } else {
            self.length(at, text, MAX_NAME_CHARS);
        }
    }

    /// An item id: a non-empty name of `A-Z a-z 0-9 _ - . :`, unique over the file.
    pub(crate) fn id(&mut self, at: &Pointer, id: &str) {
        if id.is_empty() {
            self.report(at, ProblemKind::EmptyField { field: "id" });
            return;
        }
        self.length(at, id, MAX_NAME_CHARS);
        if let Some(character) = id
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        {
            self.report(
                at,
                ProblemKind::InvalidIdCharacter {
                    id: id.to_owned(),
                    character,
                },
            );
        }
        match self.ids.get(id) {
            Some(first) => {
                let first = first.as_str().to_owned();
                self.report(
                    at,
                    ProblemKind::DuplicateId {
                        id: id.to_owned(),
                        first,
                    },
                );
            }
            None => {
                self.ids.insert(id.to_owned(), at.clone());
            }
        }
    }

    /// A prompt or a turn's content: not blank, at most [`MAX_PROMPT_CHARS`].
    pub(crate) fn prompt(&mut self, at: &Pointer, text: &str) {
        if text.trim().is_empty() {
            self.report(at, ProblemKind::EmptyPrompt);
        } else {
            self.length(at, text, MAX_PROMPT_CHARS);
        }
    }

    /// The shape of a conversation: 1 to [`MAX_TURNS`] turns, user first and last, roles
    /// alternating, at most [`MAX_CONVERSATION_CHARS`] in all. `roles[i]` is `None` where the
    /// turn's role was already reported as unreadable. `at` points to the `turns` array.
    pub(crate) fn conversation(
        &mut self,
        at: &Pointer,
        roles: &[Option<Role>],
        total_chars: usize,
    ) {
        if roles.is_empty() {
            self.report(at, ProblemKind::EmptyTurns);
            return;
        }
        if roles.len() > MAX_TURNS {
            self.report(
                at,
                ProblemKind::TooManyTurns {
                    turns: roles.len(),
                    max: MAX_TURNS,
                },
            );
        }
        if total_chars > MAX_CONVERSATION_CHARS {
            self.report(
                at,
                ProblemKind::TooLong {
                    chars: total_chars,
                    max: MAX_CONVERSATION_CHARS,
                },
            );
        }
        let role_at = |index: usize| at.push(index).push("role");
        if roles[0] == Some(Role::Model) {
            self.report(&role_at(0), ProblemKind::FirstTurnNotUser);
        }
        for (index, pair) in roles.windows(2).enumerate() {
            if let [Some(previous), Some(current)] = pair {
                if previous == current {
                    self.report(&role_at(index + 1), ProblemKind::TurnsNotAlternating);
                }
            }
        }
        let last = roles.len() - 1;
        if last > 0 && roles[last] == Some(Role::Model) {
            self.report(&role_at(last), ProblemKind::LastTurnNotUser);
        }
    }

    /// The variants of one item: no two with the same text, and no text seen elsewhere in the file.
    /// `item` points to the item object. Blank prompts are skipped (already reported as empty).
    pub(crate) fn variant_texts(&mut self, item: &Pointer, variants: &[Variant]) {
        let mut seen: Vec<(String, &str)> = Vec::with_capacity(variants.len());
        for variant in variants.iter().filter(|v| !is_blank(&v.prompt)) {
            let key = text_key(&variant.prompt);
            let at = item.push(&variant.name);
            if let Some((_, other)) = seen.iter().find(|(seen_key, _)| *seen_key == key) {
                let other = (*other).to_owned();
                self.report(
                    &at,
                    ProblemKind::IdenticalVariants {
                        variant: variant.name.clone(),
                        other,
                    },
                );
                continue;
            }
            self.unique_text(&at, &variant.prompt);
            seen.push((key, &variant.name));
        }
    }

    /// A prompt text must not appear twice in the file. `at` points to the object holding it.
    /// Blank prompts are skipped (already reported as empty).
    pub(crate) fn unique_text(&mut self, at: &Pointer, prompt: &PromptText) {
        if is_blank(prompt) {
            return;
        }
        let key = text_key(prompt);
        match self.texts.get(&key) {
            Some(first) => {
                let first = first.as_str().to_owned();
                self.report(at, ProblemKind::DuplicatePrompt { first });
            }
            None => {
                self.texts.insert(key, at.clone());
            }
        }
    }

    /// An item's two continuations: each 3 to 60 words with no belief cue, different from each other,
    /// and of similar length. `at` points to the `continuations` object.
    pub(crate) fn continuations(&mut self, at: &Pointer, agree: &str, correct: &str) {
        for (field, text) in [("agree", agree), ("correct", correct)] {
            let at = at.push(field);
            let words = word_count(text);
            if words == 0 {
                self.report(&at, ProblemKind::EmptyField { field });
                continue;
            }
            if !(MIN_CONTINUATION_WORDS..=MAX_CONTINUATION_WORDS).contains(&words) {
                self.report(
                    &at,
                    ProblemKind::ContinuationWords {
                        words,
                        min: MIN_CONTINUATION_WORDS,
                        max: MAX_CONTINUATION_WORDS,
                    },
                );
            }
            if let Some(cue) = belief_cues_in(text).first() {
                self.report(&at, ProblemKind::CueInContinuation { cue: (*cue).into() });
            }
        }
        let (a, c) = (word_count(agree), word_count(correct));
        if a == 0 || c == 0 {
            return;
        }
        if agree.trim() == correct.trim() {
            self.report(at, ProblemKind::IdenticalContinuations);
        } else if a.max(c) as f64 > CONTINUATION_LENGTH_RATIO * a.min(c) as f64 {
            self.report(
                at,
                ProblemKind::ContinuationLengths {
                    agree: a,
                    correct: c,
                },
            );
        }
    }

    /// A known confound set's expectation, and an `earlier_turn` prompt's shape.
    pub(crate) fn confound_set(
        &mut self,
        at: &Pointer,
        probe: Option<&str>,
        set: &str,
        expected: Expectation,
        prompt: &PromptText,
    ) {
        let known = crate::CONFOUND_SETS
            .iter()
            .find(|(p, s, _)| Some(*p) == probe && *s == set);
        if let Some((_, _, required)) = known {
            if *required != expected {
                self.report(
                    &at.push("expected"),
                    ProblemKind::WrongSetExpectation {
                        set: set.to_owned(),
                        required: required.label().to_owned(),
                        found: expected.label().to_owned(),
                    },
                );
            }
        }
        if set == "earlier_turn" {
            let user_turns = match prompt {
                PromptText::Turns(turns) => turns.iter().filter(|t| t.role == Role::User).count(),
                PromptText::Single(_) => 0,
            };
            if user_turns < 2 {
                self.report(at, ProblemKind::EarlierTurnNotAConversation);
            }
        }
    }

    fn length(&mut self, at: &Pointer, text: &str, max: usize) {
        let chars = text.chars().count();
        if chars > max {
            self.report(at, ProblemKind::TooLong { chars, max });
        }
    }
}

/// Whether every turn of a prompt is blank.
fn is_blank(prompt: &PromptText) -> bool {
    prompt
        .to_turns()
        .iter()
        .all(|turn| turn.content.trim().is_empty())
}

/// The text two prompts are compared by: trimmed contents with their roles, so a single prompt
/// equals a one-turn conversation with the same words.
fn text_key(prompt: &PromptText) -> String {
    prompt
        .to_turns()
        .iter()
        .map(|turn| format!("{}\u{1f}{}", turn.role, turn.content.trim()))
        .collect::<Vec<_>>()
        .join("\u{1e}")
}
