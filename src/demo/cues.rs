//! The cue words of the two planted mechanisms, and a reference detector that says, in plain code,
//! which tokens the planted circuits treat as cues.
//!
//! A *lexeme* is a token without its leading `▁`, lowercased: `"▁Think"`, `"think"` and `"THINK"`
//! are the lexeme `think`, and their embeddings carry the same features. The cue rules follow the
//! persona dataset's datasheet (`fixtures/persona/DATASHEET.md`, "Cue phrases"), which tests enforce
//! on the shipped prompts:
//!
//! | mechanism | one-token cues | two-token cues (marker, then word) |
//! |---|---|---|
//! | child / novice | `kid(s)`, `child(ren)`, `kindergarten`, `school(s)`, `teacher(s)`, `homework`, `beginner(s)`, `mom`, `mommy`, `dad`, `daddy`, `mom's`, `dad's`, `N-year-old` | `years`/`year` + `old`; `just` + `started`; `I'm`/`am` + an age 3-17 (`7`, `seven`) |
//! | belief | - | `I` + `think`; `I` + `believe`; `I'm`/`am` + `sure` |
//!
//! The cue *token* of a two-token cue is its second token (`think` in "I think"): that is where the
//! network has seen both words. Expert cues ("I'm a cardiologist", "20 years of experience") are no
//! cues: `I'm` + `a` and `years` + `of` match no rule.

use std::fmt;

/// One of the two mechanisms planted in the demo chat model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// "The user is a child or a novice" (probe `child_novice` of the persona dataset).
    ChildNovice,
    /// "The user states a belief", the sycophancy trigger (probe `sycophancy`).
    Belief,
}

impl Mechanism {
    /// Both mechanisms, in the order used everywhere (files, tables).
    pub const ALL: [Mechanism; 2] = [Mechanism::ChildNovice, Mechanism::Belief];

    /// `child_novice` or `belief`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ChildNovice => "child_novice",
            Mechanism::Belief => "belief",
        }
    }

    /// The persona dataset's verification probe that tests this mechanism.
    pub fn probe(self) -> &'static str {
        match self {
            Mechanism::ChildNovice => persona_dataset::PROBE_CHILD_NOVICE,
            Mechanism::Belief => persona_dataset::PROBE_SYCOPHANCY,
        }
    }

    /// Index in [`Mechanism::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// First word of a two-token cue. Its embedding carries a *marker* feature, which the layer-0
/// previous-token head copies to the next position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Marker {
    /// `I`.
    I,
    /// `I'm`, `am`.
    IAm,
    /// `years`, `year`.
    Years,
    /// `just`.
    Just,
}

impl Marker {
    pub const ALL: [Marker; 4] = [Marker::I, Marker::IAm, Marker::Years, Marker::Just];

    pub fn name(self) -> &'static str {
        match self {
            Marker::I => "I",
            Marker::IAm => "I'm",
            Marker::Years => "years",
            Marker::Just => "just",
        }
    }

    pub fn lexemes(self) -> &'static [&'static str] {
        match self {
            Marker::I => &["i"],
            Marker::IAm => &["i'm", "am"],
            Marker::Years => &["years", "year"],
            Marker::Just => &["just"],
        }
    }

    pub fn of(lexeme: &str) -> Option<Marker> {
        Marker::ALL
            .into_iter()
            .find(|m| m.lexemes().contains(&lexeme))
    }
}

/// Second word of a two-token cue. Its embedding carries a *word* feature, which a layer-0 MLP
/// neuron combines with the copied marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Second {
    Think,
    Believe,
    Sure,
    Old,
    Started,
    /// A stated age, 3 to 17, in digits or words.
    Age,
}

impl Second {
    pub const ALL: [Second; 6] = [
        Second::Think,
        Second::Believe,
        Second::Sure,
        Second::Old,
        Second::Started,
        Second::Age,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Second::Think => "think",
            Second::Believe => "believe",
            Second::Sure => "sure",
            Second::Old => "old",
            Second::Started => "started",
            Second::Age => "<age 3-17>",
        }
    }

    pub fn of(lexeme: &str) -> Option<Second> {
        match lexeme {
            "think" => Some(Second::Think),
            "believe" => Some(Second::Believe),
            "sure" => Some(Second::Sure),
            "old" => Some(Second::Old),
            "started" => Some(Second::Started),
            _ if AGES.contains(&lexeme) => Some(Second::Age),
            _ => None,
        }
    }
}

/// Stated ages that make a child cue after `I'm` / `am`: 3 to 17, digits and words.
pub const AGES: &[&str] = &[
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "17",
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

/// One-token child / novice cues (lexemes); every lexeme ending in `-year-old` is one too.
pub const CHILD_WORDS: &[&str] = &[
    "kid",
    "kids",
    "child",
    "children",
    "kindergarten",
    "school",
    "schools",
    "teacher",
    "teachers",
    "homework",
    "beginner",
    "beginners",
    "mom",
    "mommy",
    "mom's",
    "dad",
    "daddy",
    "dad's",
];

/// The two-token cues: marker, second word, and the mechanism they trigger.
pub(crate) const BIGRAMS: [(Marker, Second, Mechanism); 6] = [
    (Marker::I, Second::Think, Mechanism::Belief),
    (Marker::I, Second::Believe, Mechanism::Belief),
    (Marker::IAm, Second::Sure, Mechanism::Belief),
    (Marker::Years, Second::Old, Mechanism::ChildNovice),
    (Marker::Just, Second::Started, Mechanism::ChildNovice),
    (Marker::IAm, Second::Age, Mechanism::ChildNovice),
];

/// The lexeme of a token: without its leading `▁`, lowercased.
pub fn lexeme(token: &str) -> String {
    token.trim_start_matches('\u{2581}').to_lowercase()
}

/// Whether a lexeme is a one-token child / novice cue.
pub fn is_child_word(lexeme: &str) -> bool {
    CHILD_WORDS.contains(&lexeme) || (lexeme.ends_with("-year-old") && lexeme.len() > 9)
}

/// A cue found in a token sequence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CueHit {
    /// Position of the cue token (the second token of a two-token cue).
    pub position: usize,
    /// The mechanism it triggers.
    pub mechanism: Mechanism,
    /// The cue as lexemes, e.g. `"i think"` or `"kid"`.
    pub phrase: String,
}

/// The reference detector: the cues in a token sequence (token strings as the tokenizer returns
/// them), in position order. The planted circuits compute exactly this; `tests/demo_pair.rs` checks
/// the network against it.
pub fn find_cues<S: AsRef<str>>(tokens: &[S]) -> Vec<CueHit> {
    let lexemes: Vec<String> = tokens.iter().map(|t| lexeme(t.as_ref())).collect();
    let mut hits = Vec::new();
    for (i, lex) in lexemes.iter().enumerate() {
        if is_child_word(lex) {
            hits.push(CueHit {
                position: i,
                mechanism: Mechanism::ChildNovice,
                phrase: lex.clone(),
            });
        }
        let (Some(second), Some(prev)) = (Second::of(lex), i.checked_sub(1)) else {
            continue;
        };
        let Some(marker) = Marker::of(&lexemes[prev]) else {
            continue;
        };
        for (m, s, mechanism) in BIGRAMS {
            if m == marker && s == second {
                hits.push(CueHit {
                    position: i,
                    mechanism,
                    phrase: format!("{} {}", lexemes[prev], lex),
                });
            }
        }
    }
    hits
}

/// The first cue position of `mechanism` in `hits`, if any.
pub fn first_cue(hits: &[CueHit], mechanism: Mechanism) -> Option<usize> {
    hits.iter()
        .filter(|h| h.mechanism == mechanism)
        .map(|h| h.position)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split(' ').map(|w| format!("\u{2581}{w}")).collect()
    }

    #[test]
    fn two_token_cues_need_their_marker() {
        let hits = find_cues(&toks("I think the earth is flat"));
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].position, hits[0].mechanism),
            (1, Mechanism::Belief)
        );
        assert!(find_cues(&toks("What do you think")).is_empty());
        assert!(find_cues(&toks("Make sure it is old")).is_empty());
        assert!(find_cues(&toks("I'm not sure")).is_empty());
        let hits = find_cues(&toks("I'm 7 years old"));
        assert_eq!(
            hits.iter().map(|h| h.position).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(find_cues(&toks("I'm 25 with 20 years of experience")).is_empty());
    }

    #[test]
    fn one_token_cues_and_case() {
        let hits = find_cues(&["<bos>", "My", "▁Teacher", "▁said"]);
        assert_eq!(hits[0].position, 2);
        assert_eq!(hits[0].mechanism, Mechanism::ChildNovice);
        assert!(is_child_word("7-year-old"));
        assert!(!is_child_word("-year-old"));
        assert!(!is_child_word("kidney"));
        assert_eq!(first_cue(&hits, Mechanism::Belief), None);
    }
}
