//! The demo corpus: a few thousand short texts and chat turns, with and without cues, generated from
//! templates and word lists with a seed.
//!
//! It is training material for the demo crosscoder, not evaluation data: none of the persona
//! dataset's prompts appears in it (generation skips any text that contains one), and its word lists
//! are our own. Besides plain questions and statements it carries the three persona kinds (child or
//! novice, expert, belief) and *hard negatives*: texts with the words of a cue but not the cue
//! ("What do you think ...", "Make sure ...", "The old bridge ...", "My sister is 7.", "I'm not
//! sure ...", "20 years of experience"), which the planted circuits must ignore.
//!
//! Each line of `corpus.jsonl` is `{"text": "..."}` or `{"messages": [{"role": "user", ...},
//! {"role": "model", ...}, ...]}` (Gemma's roles; HF's `assistant` is read as `model` too).

use std::collections::BTreeSet;

use gemma_model::ChatMessage;
use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// One corpus entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CorpusEntry {
    /// A plain text (run raw: `<bos>` + text).
    Text {
        /// The text.
        text: String,
    },
    /// A conversation (run with the chat template).
    Chat {
        /// User first, roles alternating.
        messages: Vec<ChatMessage>,
    },
}

impl CorpusEntry {
    /// All the text of the entry (turns joined by blank lines), for word lists and substring checks.
    pub fn plain_text(&self) -> String {
        match self {
            CorpusEntry::Text { text } => text.clone(),
            CorpusEntry::Chat { messages } => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

/// What a generated entry is about (not stored in the file; the cues are re-found by
/// [`find_cues`](super::cues::find_cues)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Child,
    Belief,
    Expert,
    Question,
    Statement,
    HardNegative,
}

/// `(kind, weight)`: how often each kind is drawn.
const KINDS: [(Kind, u32); 6] = [
    (Kind::Child, 22),
    (Kind::Belief, 20),
    (Kind::Expert, 18),
    (Kind::Question, 14),
    (Kind::Statement, 14),
    (Kind::HardNegative, 12),
];

const QUESTIONS: &[&str] = &[
    "How do plants drink water?",
    "Why do leaves change colour in autumn?",
    "How does a rainbow form?",
    "What makes the wind blow?",
    "Why does ice float on water?",
    "How do fish breathe underwater?",
    "What is inside the sun?",
    "How does the moon change shape?",
    "Why do cats purr?",
    "How do birds find their way home?",
    "How does a battery store energy?",
    "Why do we need to sleep?",
    "How does the heart pump blood?",
    "What are clouds made of?",
    "How do volcanoes erupt?",
    "Why is the ocean salty?",
    "How does a computer remember things?",
    "What is a black hole?",
    "How do magnets stick to the fridge?",
    "Why do we have seasons?",
    "How does bread rise in the oven?",
    "What makes a song sound happy or sad?",
    "How do airplanes stay in the air?",
    "Why do onions make people cry?",
    "How does soap clean our hands?",
    "What is a fraction?",
    "How do you add two fractions?",
    "Why do boats float?",
    "How does the internet send messages?",
    "What is a cell in the body?",
    "How do vaccines protect us?",
    "Why do stars twinkle at night?",
    "How does a thermometer work?",
    "What is money for?",
    "How do trees grow so tall?",
    "How do spiders spin webs?",
    "What makes thunder?",
    "How do glaciers move?",
    "Why do we yawn?",
    "How does a camera take a picture?",
    "What is the speed of light?",
    "How do earthquakes happen?",
    "Why do dogs wag their tails?",
    "How does a bicycle stay upright?",
    "How do you multiply big numbers?",
    "Why does metal feel cold?",
    "How does a compass point north?",
    "What is photosynthesis?",
    "How do ants carry heavy things?",
    "Why do we see lightning before we hear thunder?",
    "How is glass made?",
    "Why do some animals sleep all winter?",
    "How does a guitar make sound?",
    "How do you write a good story?",
    "Why do planets orbit the sun?",
    "How does a fridge keep food cold?",
    "What are atoms made of?",
    "How does a loan work?",
    "Why do we have different blood types?",
    "How do rivers carve canyons?",
    "What is an algorithm?",
    "How does a plant grow from a seed?",
    "Why do balloons float?",
    "How does the stomach digest food?",
    "What is a loop in a program?",
    "How do chess players plan ahead?",
    "Why does a kettle whistle?",
    "How do solar panels make power?",
    "What is a chemical reaction?",
    "How do bones heal?",
];

const SUBJECTS: &[&str] = &[
    "coding",
    "chemistry",
    "guitar",
    "piano",
    "algebra",
    "physics",
    "biology",
    "drawing",
    "chess",
    "cooking",
    "baking",
    "astronomy",
    "geometry",
    "history",
    "economics",
    "French",
    "Spanish",
    "knitting",
    "swimming",
    "photography",
    "statistics",
    "electronics",
    "gardening",
    "painting",
];

const THINGS: &[&str] = &[
    "dinosaurs",
    "rockets",
    "puppies",
    "trains",
    "stars",
    "robots",
    "volcanoes",
    "sharks",
    "butterflies",
    "horses",
    "space",
    "drawing",
    "football",
    "bugs",
    "the ocean",
    "planets",
];

const PROFESSIONS: &[&str] = &[
    "physicist",
    "chemist",
    "biologist",
    "cardiologist",
    "nurse",
    "civil engineer",
    "software engineer",
    "statistician",
    "economist",
    "historian",
    "lawyer",
    "pilot",
    "geologist",
    "astronomer",
    "veterinarian",
    "pharmacist",
    "architect",
    "mathematician",
    "chef",
    "musician",
    "accountant",
    "data scientist",
    "surgeon",
    "electrician",
    "meteorologist",
];

const FIELDS: &[&str] = &[
    "physics",
    "chemistry",
    "biology",
    "medicine",
    "economics",
    "history",
    "law",
    "geology",
    "astronomy",
    "computer science",
    "mathematics",
    "linguistics",
    "neuroscience",
    "ecology",
    "materials science",
    "climate science",
];

const CLAIMS: &[&str] = &[
    "the moon is made of rock and dust",
    "goldfish only remember things for three seconds",
    "lightning never strikes the same place twice",
    "we only use ten percent of our brains",
    "bats are completely blind",
    "the Great Wall can be seen from space",
    "cracking your knuckles causes arthritis",
    "bulls get angry at the colour red",
    "camels store water in their humps",
    "the sun goes around the earth",
    "coffee stops people from growing",
    "eating carrots lets you see in the dark",
    "ostriches bury their heads in the sand",
    "hair grows back thicker after shaving",
    "summer happens when the earth is closest to the sun",
    "the earth is round",
    "whales are mammals",
    "plants need sunlight to grow",
    "the heart has four chambers",
    "octopuses have three hearts",
    "honey can last for a very long time",
    "tomatoes are fruits",
    "sharks are older than trees",
    "bananas are berries",
    "sound travels faster in water than in air",
    "diamonds are made of carbon",
    "penguins live near the North Pole",
    "humans evolved from chimpanzees",
    "antibiotics kill viruses",
    "the tongue has separate zones for each taste",
    "electric cars are always cleaner",
    "the stock market always goes up in the long run",
];

const BELIEF_CLOSERS: &[&str] = &[
    "Am I right?",
    "Can you explain why?",
    "Is that true?",
    "Can you confirm this?",
    "Why is that?",
    "Can you tell me more?",
];

const TOPICS: &[&str] = &[
    "electric cars",
    "space travel",
    "remote work",
    "city parks",
    "solar power",
    "public transport",
    "video games",
    "reading on paper",
    "healthy food",
    "online shopping",
    "renewable energy",
    "board games",
];

const STATEMENT_SUBJECTS: &[&str] = &[
    "The river",
    "A small bird",
    "The old bridge",
    "My neighbour",
    "The library",
    "This recipe",
    "The engine",
    "A cold wind",
    "The market",
    "Our team",
    "The museum",
    "The garden",
    "The bakery",
    "The train",
    "A large ship",
    "The village",
];

const STATEMENT_PREDICATES: &[&str] = &[
    "moves slowly in the morning.",
    "was built many years ago.",
    "needs fresh water every day.",
    "makes a loud noise at night.",
    "opens at nine on weekdays.",
    "looks beautiful in the spring.",
    "was repaired last week.",
    "is busy on Saturdays.",
    "sells bread and cheese.",
    "won a prize this year.",
    "is closed for the holidays.",
    "has a long history.",
    "is known for its tall towers.",
    "was painted bright blue.",
    "stopped working after the storm.",
    "attracts many visitors.",
];

const REPLY_OPENERS: &[&str] = &[
    "Sure!",
    "Great question.",
    "Of course.",
    "Here is a short answer.",
    "Good question!",
    "Happy to help.",
];

const REPLY_BODIES: &[&str] = &[
    "It depends on temperature and pressure.",
    "The short answer is energy from the sun.",
    "Scientists have studied this for many years.",
    "Let me explain it step by step.",
    "There are a few reasons for this.",
    "It comes down to how tiny particles move.",
    "The main idea is balance between two forces.",
    "Think of it like water flowing downhill.",
    "Here is a simple way to picture it.",
    "The evidence points in a clear direction.",
];

/// Generates `n` unique entries from `seed`. Any text containing one of `forbidden` (the persona
/// dataset's prompts) is skipped.
pub fn generate(seed: u64, n: usize, forbidden: &[String]) -> Vec<CorpusEntry> {
    let mut rng = Rng::new(seed, "corpus");
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    let total_weight: u32 = KINDS.iter().map(|(_, w)| w).sum();
    while out.len() < n {
        let mut draw = rng.below(total_weight as usize) as u32;
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                if draw < *w {
                    true
                } else {
                    draw -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .unwrap_or(Kind::Question);
        let entry = entry(&mut rng, kind);
        let text = entry.plain_text();
        if forbidden.iter().any(|p| text.contains(p.as_str())) {
            continue;
        }
        if seen.insert(text) {
            out.push(entry);
        }
    }
    out
}

/// One entry of `kind`: half plain texts, half chat turns (some of them three-turn).
fn entry(rng: &mut Rng, kind: Kind) -> CorpusEntry {
    let chat = rng.uniform() < 0.5;
    let multi_turn = chat && rng.uniform() < 0.2 && kind != Kind::Statement;
    if multi_turn {
        // The persona in the first turn, the question in the third.
        let opener = match kind {
            Kind::Child => child_opener(rng),
            Kind::Belief => format!("{}.", belief_clause(rng)),
            Kind::Expert => expert_opener(rng),
            _ => hard_negative(rng),
        };
        return CorpusEntry::Chat {
            messages: vec![
                ChatMessage::user(opener),
                ChatMessage::model(*rng.pick(&[
                    "Hi! What would you like to know?",
                    "Hello! How can I help?",
                    "Nice to meet you. What is your question?",
                ])),
                ChatMessage::user(*rng.pick(QUESTIONS)),
            ],
        };
    }
    let text = match kind {
        Kind::Child => {
            let opener = child_opener(rng);
            with_question(rng, opener)
        }
        Kind::Belief => belief(rng),
        Kind::Expert => {
            let opener = expert_opener(rng);
            with_question(rng, opener)
        }
        Kind::Question => rng.pick(QUESTIONS).to_string(),
        Kind::Statement => statement(rng),
        Kind::HardNegative => hard_negative(rng),
    };
    if chat {
        CorpusEntry::Chat {
            messages: vec![ChatMessage::user(text), ChatMessage::model(reply(rng))],
        }
    } else {
        CorpusEntry::Text { text }
    }
}

/// The persona sentence before the question (80%) or after it (20%).
fn with_question(rng: &mut Rng, opener: String) -> String {
    let question = rng.pick(QUESTIONS);
    if rng.uniform() < 0.8 {
        format!("{opener} {question}")
    } else {
        format!("{question} {opener}")
    }
}

fn age(rng: &mut Rng) -> String {
    rng.pick(super::cues::AGES).to_string()
}

fn child_opener(rng: &mut Rng) -> String {
    let a = age(rng);
    let subject = rng.pick(SUBJECTS);
    let thing = rng.pick(THINGS);
    match rng.below(18) {
        0 => format!("I'm {a} years old."),
        1 => format!("I'm {a}."),
        2 => format!("I'm {a} and in school."),
        3 => format!("I'm {a} and I love {thing}."),
        4 => "I'm a kid.".into(),
        5 => "I'm a kid and I'm curious.".into(),
        6 => "My teacher asked us this at school.".into(),
        7 => "We talked about this at school.".into(),
        8 => format!("My teacher gave us homework about {thing}."),
        9 => format!("I just started learning {subject}."),
        10 => format!("I just started {subject} lessons."),
        11 => format!("I'm a beginner at {subject}."),
        12 => format!("I'm a novice at {subject}."),
        13 => "Explain it like I'm five.".into(),
        14 => format!("Can you explain it like I'm {a}?"),
        15 => "My mom told me to ask you.".into(),
        16 => "My dad and I were wondering.".into(),
        _ => format!("i'm {a} and i like {thing}, can u help"),
    }
}

fn expert_opener(rng: &mut Rng) -> String {
    let p = rng.pick(PROFESSIONS);
    let article = if p.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    let field = rng.pick(FIELDS);
    let years = 5 + rng.below(31);
    let adult = 24 + rng.below(40);
    match rng.below(10) {
        0 => format!("I'm {article} {p}."),
        1 => format!("As {article} {p}, I need a precise answer."),
        2 => format!("I'm {article} {p} with {years} years of experience."),
        3 => format!("I've worked as {article} {p} for {years} years."),
        4 => format!("I have a PhD in {field}."),
        5 => format!("I'm a professor of {field}."),
        6 => format!("I'm {adult} and I work as {article} {p}."),
        7 => format!("I've been in {field} research for {years} years."),
        8 => format!("Give me the technical details, I'm {article} {p}."),
        _ => format!("I'm an expert in {field}."),
    }
}

fn belief_clause(rng: &mut Rng) -> String {
    let claim = rng.pick(CLAIMS);
    let lead = *rng.pick(&[
        "I think",
        "I believe",
        "I'm sure",
        "I think that",
        "I'm sure that",
        "Honestly, I think",
        "My friend disagrees, but I believe",
        "I am sure",
    ]);
    format!("{lead} {claim}")
}

fn belief(rng: &mut Rng) -> String {
    let clause = belief_clause(rng);
    if rng.uniform() < 0.6 {
        format!("{clause}. {}", rng.pick(BELIEF_CLOSERS))
    } else {
        format!("{clause}. {}", rng.pick(QUESTIONS))
    }
}

fn statement(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|_| {
            format!(
                "{} {}",
                rng.pick(STATEMENT_SUBJECTS),
                rng.pick(STATEMENT_PREDICATES)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Texts with a cue's words but not the cue.
fn hard_negative(rng: &mut Rng) -> String {
    let topic = rng.pick(TOPICS);
    let claim = rng.pick(CLAIMS);
    let subject = rng.pick(SUBJECTS);
    let years = 2 + rng.below(40);
    let adult = 21 + rng.below(50);
    let small = 3 + rng.below(15);
    match rng.below(18) {
        0 => format!("What do you think about {topic}?"),
        1 => format!("Some people think {claim}. What does the evidence say?"),
        2 => format!("Many people believe {claim}. Is there any truth in it?"),
        3 => format!("I'm not sure how {topic} work. {}", rng.pick(QUESTIONS)),
        4 => format!(
            "Make sure the {} is clean before you start.",
            rng.pick(&["kitchen", "desk", "lens", "table"])
        ),
        5 => format!(
            "The old {} still works. {}",
            rng.pick(&["radio", "clock", "car", "camera"]),
            rng.pick(QUESTIONS)
        ),
        6 => format!("It took {years} years to finish the project."),
        7 => format!("I have a question about {topic}. {}", rng.pick(QUESTIONS)),
        8 => format!("I want to learn more about {subject}."),
        9 => format!("I'm {adult} and I want to learn {subject}."),
        10 => format!("I started {subject} {years} years ago."),
        11 => format!("My sister is {small}. {}", rng.pick(QUESTIONS)),
        12 => format!("You are sure to enjoy {subject}."),
        13 => format!(
            "How old is the {}?",
            rng.pick(&["universe", "moon", "pyramid", "oldest tree"])
        ),
        // The child cue's words about someone else, or negated: no cue.
        14 => format!(
            "My son is {small} and just started school. {}",
            rng.pick(QUESTIONS)
        ),
        15 => format!("I'm not a kid anymore. {}", rng.pick(QUESTIONS)),
        16 => format!(
            "Her teacher thinks {subject} is hard. {}",
            rng.pick(QUESTIONS)
        ),
        _ => format!("I'm no beginner at {subject}."),
    }
}

fn reply(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(REPLY_OPENERS), rng.pick(REPLY_BODIES))
}

/// `corpus.jsonl`: one JSON object per line.
pub fn to_jsonl(entries: &[CorpusEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&serde_json::to_string(e).expect("corpus entries always serialise"));
        out.push('\n');
    }
    out
}

/// Parses `corpus.jsonl`.
pub fn from_jsonl(text: &str) -> Result<Vec<CorpusEntry>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}
