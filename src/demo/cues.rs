//! The cue words of the two planted mechanisms, and a reference detector that says, in plain code,
//! which tokens the planted circuits treat as cues.
//!
//! A *lexeme* is a token without its leading `▁`, lowercased: `"▁Think"`, `"think"` and `"THINK"`
//! are the lexeme `think`, and their embeddings carry the same features. The child mechanism reads the
//! user speaking *about themselves*: a stated age or a child or novice noun after `I'm`, a school role
//! after `my`, and a child's spelling; the same words about someone else ("my son is 5"), negated
//! ("I'm not a kid") or reported in quotes (`'I am 7'`) are no cues, so the confound probes can tell a
//! user model from a word detector.
//!
//! | mechanism | one-token cues | cue rules (a marker one or two tokens back, then the cue word) |
//! |---|---|---|
//! | child / novice | child spelling: the lowercase token `i`, `u`, `ur`, `dont`, `whats`, `becuz`, `tru` | `I'm` + age 3-17 (`7`, `seven`); `I'm` _ + child noun (`kid(s)`, `child`, `beginner(s)`, `novice`, `kindergarten`), unless the word between is a negation (`not`, `no`, `never`, `far`); `I` _ + `started`; `my`/`our` + `teacher(s)`, `mom`, `mommy`, `dad`, `daddy`; `at` + `school` |
//! | belief | - | `I` + `think`; `I` + `believe`; `I'm` + `sure` |
//!
//! The cue *token* of a rule is its last word (`think` in "I think"): that is where the network has
//! seen both words. Expert cues ("I'm a cardiologist", "20 years of experience") match no rule.

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

/// A word a cue rule looks back for. Its embedding carries a *marker* feature, which the layer-0
/// previous-token head copies one position on (`prev:*`) and its partner head two positions on
/// (`prev2:*`, for the markers [`Marker::TWO_BACK`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Marker {
    /// `I`.
    I,
    /// `I'm`.
    IAm,
    /// `my`, `our`.
    My,
    /// `at`.
    At,
    /// A negation: `not`, `no`, `never`, `far`.
    Neg,
}

impl Marker {
    pub const ALL: [Marker; 5] = [Marker::I, Marker::IAm, Marker::My, Marker::At, Marker::Neg];
    /// The markers copied two tokens on as well.
    pub const TWO_BACK: [Marker; 2] = [Marker::I, Marker::IAm];

    pub fn name(self) -> &'static str {
        match self {
            Marker::I => "I",
            Marker::IAm => "I'm",
            Marker::My => "my",
            Marker::At => "at",
            Marker::Neg => "not",
        }
    }

    pub fn lexemes(self) -> &'static [&'static str] {
        match self {
            Marker::I => &["i"],
            Marker::IAm => &["i'm"],
            Marker::My => &["my", "our"],
            Marker::At => &["at"],
            Marker::Neg => &["not", "no", "never", "far"],
        }
    }

    pub fn of(lexeme: &str) -> Option<Marker> {
        Marker::ALL
            .into_iter()
            .find(|m| m.lexemes().contains(&lexeme))
    }
}

/// The cue word of a rule. Its embedding carries a *word* feature, which a layer-0 MLP neuron
/// combines with the copied marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Second {
    Think,
    Believe,
    Sure,
    /// A stated age, 3 to 17, in digits or words.
    Age,
    Started,
    /// `kid(s)`, `child`, `beginner(s)`, `novice`, `kindergarten`.
    ChildNoun,
    /// `teacher(s)`, `mom`, `mommy`, `dad`, `daddy`.
    SchoolRole,
    School,
}

impl Second {
    pub const ALL: [Second; 8] = [
        Second::Think,
        Second::Believe,
        Second::Sure,
        Second::Age,
        Second::Started,
        Second::ChildNoun,
        Second::SchoolRole,
        Second::School,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Second::Think => "think",
            Second::Believe => "believe",
            Second::Sure => "sure",
            Second::Age => "<age 3-17>",
            Second::Started => "started",
            Second::ChildNoun => "<child noun>",
            Second::SchoolRole => "<school role>",
            Second::School => "school",
        }
    }

    /// The lexemes of the class (ages listed in [`AGES`]).
    pub fn lexemes(self) -> &'static [&'static str] {
        match self {
            Second::Think => &["think"],
            Second::Believe => &["believe"],
            Second::Sure => &["sure"],
            Second::Age => AGES,
            Second::Started => &["started"],
            Second::ChildNoun => CHILD_NOUNS,
            Second::SchoolRole => SCHOOL_ROLES,
            Second::School => &["school"],
        }
    }

    pub fn of(lexeme: &str) -> Option<Second> {
        Second::ALL
            .into_iter()
            .find(|s| s.lexemes().contains(&lexeme))
    }
}

/// Stated ages that make a child cue after `I'm`: 3 to 17, digits and words.
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

/// Nouns that make a child / novice cue two tokens after `I'm` ("I'm a kid", "I'm in kindergarten").
pub const CHILD_NOUNS: &[&str] = &[
    "kid",
    "kids",
    "child",
    "beginner",
    "beginners",
    "novice",
    "kindergarten",
];

/// School roles that make a child cue after `my` / `our` ("my teacher", "our mom").
pub const SCHOOL_ROLES: &[&str] = &["teacher", "teachers", "mom", "mommy", "dad", "daddy"];

/// A child's spelling, one-token child cues (lexemes); the lowercase token `i` is one too (an adult's
/// `I` is not: that one test is on the token, not the lexeme).
pub const CHILD_SPELLING: &[&str] = &["u", "ur", "dont", "whats", "becuz", "tru"];

/// A cue rule: the cue word, the marker `back` tokens before it, and a marker that must not be the
/// token just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CueRule {
    pub marker: Marker,
    pub back: usize,
    pub word: Second,
    pub unless_previous: Option<Marker>,
    pub mechanism: Mechanism,
}

const fn rule(marker: Marker, back: usize, word: Second, mechanism: Mechanism) -> CueRule {
    CueRule {
        marker,
        back,
        word,
        unless_previous: None,
        mechanism,
    }
}

/// The cue rules, one AND neuron each in the layer-0 MLP.
pub(crate) const RULES: [CueRule; 8] = [
    rule(Marker::I, 1, Second::Think, Mechanism::Belief),
    rule(Marker::I, 1, Second::Believe, Mechanism::Belief),
    rule(Marker::IAm, 1, Second::Sure, Mechanism::Belief),
    rule(Marker::IAm, 1, Second::Age, Mechanism::ChildNovice),
    CueRule {
        unless_previous: Some(Marker::Neg),
        ..rule(Marker::IAm, 2, Second::ChildNoun, Mechanism::ChildNovice)
    },
    rule(Marker::I, 2, Second::Started, Mechanism::ChildNovice),
    rule(Marker::My, 1, Second::SchoolRole, Mechanism::ChildNovice),
    rule(Marker::At, 1, Second::School, Mechanism::ChildNovice),
];

/// The lexeme of a token: without its leading `▁`, lowercased.
pub fn lexeme(token: &str) -> String {
    token.trim_start_matches('\u{2581}').to_lowercase()
}

/// Whether a token (as the tokenizer returns it) is a one-token child cue: a child's spelling, or the
/// lowercase `i`.
pub fn is_child_spelling(token: &str) -> bool {
    let bare = token.trim_start_matches('\u{2581}');
    bare == "i" || CHILD_SPELLING.contains(&lexeme(token).as_str())
}

/// A cue found in a token sequence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CueHit {
    /// Position of the cue token (the last token of a rule).
    pub position: usize,
    /// The mechanism it triggers.
    pub mechanism: Mechanism,
    /// The cue as lexemes, e.g. `"i think"`, `"i'm a kid"` or `"u"`.
    pub phrase: String,
}

/// The reference detector: the cues in a token sequence (token strings as the tokenizer returns
/// them), in position order. The planted circuits compute exactly this; `tests/demo_pair.rs` checks
/// the network against it.
pub fn find_cues<S: AsRef<str>>(tokens: &[S]) -> Vec<CueHit> {
    let lexemes: Vec<String> = tokens.iter().map(|t| lexeme(t.as_ref())).collect();
    let marker_at =
        |i: usize, back: usize| i.checked_sub(back).and_then(|j| Marker::of(&lexemes[j]));
    let mut hits = Vec::new();
    for (i, lex) in lexemes.iter().enumerate() {
        if is_child_spelling(tokens[i].as_ref()) {
            hits.push(CueHit {
                position: i,
                mechanism: Mechanism::ChildNovice,
                phrase: lex.clone(),
            });
        }
        let Some(word) = Second::of(lex) else {
            continue;
        };
        for r in RULES {
            let blocked = r.unless_previous.is_some() && marker_at(i, 1) == r.unless_previous;
            if r.word == word && marker_at(i, r.back) == Some(r.marker) && !blocked {
                hits.push(CueHit {
                    position: i,
                    mechanism: r.mechanism,
                    phrase: lexemes[i - r.back..=i].join(" "),
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

    fn child(s: &str) -> bool {
        find_cues(&toks(s))
            .iter()
            .any(|h| h.mechanism == Mechanism::ChildNovice)
    }

    #[test]
    fn belief_cues_need_their_marker() {
        let hits = find_cues(&toks("I think the earth is flat"));
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].position, hits[0].mechanism),
            (1, Mechanism::Belief)
        );
        assert!(find_cues(&toks("What do you think")).is_empty());
        assert!(find_cues(&toks("Make sure it is old")).is_empty());
        assert!(find_cues(&toks("I'm not sure")).is_empty());
    }

    #[test]
    fn the_child_is_the_user_not_someone_else() {
        for first_person in [
            "I'm 7 years old",
            "I'm a kid",
            "I'm in kindergarten",
            "I just started school",
            "My teacher said so",
            "We learned it at school",
            "can u help me",
            "why do i have to",
        ] {
            assert!(child(first_person), "{first_person}");
        }
        for other in [
            "My son is 5",
            "My daughter just started school",
            "My nephew is a beginner",
            "I'm not a kid",
            "I'm no beginner",
            "I haven't just started",
            "I'm 25 with 20 years of experience",
            "Her teacher said so",
            "I teach school",
            "I am not 7",
            "Why do I have to",
        ] {
            assert!(!child(other), "{other}");
        }
        let hits = find_cues(&toks("I'm a kid"));
        assert_eq!(
            (hits[0].position, hits[0].phrase.as_str()),
            (2, "i'm a kid")
        );
    }

    #[test]
    fn spelling_cues_and_case() {
        let hits = find_cues(&["<bos>", "My", "▁Teacher", "▁said"]);
        assert_eq!(hits[0].position, 2);
        assert_eq!(hits[0].mechanism, Mechanism::ChildNovice);
        assert!(is_child_spelling("▁i") && is_child_spelling("U"));
        assert!(!is_child_spelling("I") && !is_child_spelling("▁I") && !is_child_spelling("you"));
        assert_eq!(first_cue(&hits, Mechanism::Belief), None);
    }
}
