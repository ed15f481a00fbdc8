//! Content checks, the limits they enforce, and the collector that gathers every problem of a file.
//!
//! The reader ([`crate::format`]) walks the JSON tree and asks the [`Checker`] about each value it
//! meets; the checker records problems and remembers what it has seen (ids, prompt texts) so that
//! duplicates anywhere in the file are reported with a pointer to their first occurrence.

use std::collections::HashMap;

use crate::error::{Problem, ProblemKind};
use crate::json::Pointer;
use crate::model::{PromptText, Role, Variant};

/// Longest prompt, or turn of a conversation, in characters (about 1,000 Gemma tokens). Persona
/// prompts are one or two sentences; anything longer is almost certainly a pasting mistake.
pub const MAX_PROMPT_CHARS: usize = 4_000;
/// Longest conversation (all turns together), in characters.
pub const MAX_CONVERSATION_CHARS: usize = 16_000;
/// Most turns in a conversation.
pub const MAX_TURNS: usize = 32;
/// Longest id, topic, tag, probe, category or variant name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

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
