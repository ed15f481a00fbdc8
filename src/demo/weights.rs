//! The demo pair's weights: a random Gemma-2 "base" model with a few designed circuits, and a "chat"
//! model that equals it except for two planted attention heads.
//!
//! # The residual stream
//!
//! `d_model = 64`. Twenty unit directions of the residual stream are *reserved* (orthonormal, drawn
//! at random, so no coordinate axis is special); the random weights neither read nor write them, so
//! a reserved feature is exactly zero unless a designed circuit puts it there. Gemma's RMSNorms
//! scale each coordinate (`x / rms(x) * (1 + w)`), so "neither read nor write" is meant after the
//! norms: a random matrix that reads a normed input, or writes through a post-norm, has rows (or
//! columns) orthogonal to `(1 + w) * r` for every reserved `r`.
//!
//! | feature | carried by |
//! |---|---|
//! | `constant` | every token embedding except `<bos>` (a bias the designed circuits read) |
//! | `bos` | the `<bos>` embedding (the attention sink of the planted heads) |
//! | `marker:I`, `marker:I'm`, `marker:years`, `marker:just` | embeddings of the first words of two-token cues |
//! | `word:think`, `word:believe`, `word:sure`, `word:old`, `word:started`, `word:age` | embeddings of their second words |
//! | `prev:I`, `prev:I'm`, `prev:years`, `prev:just` | written by the layer-0 previous-token head: "the previous token was `I`" |
//! | `cue:child_novice`, `cue:belief` | child words' embeddings, and the layer-0 MLP's AND neurons |
//! | `user:child_novice`, `user:belief` | written by the planted layer-1 heads, in the chat model only |
//!
//! # Circuits of both models (layer 0): finding the cues
//!
//! - **Previous-token head** (layer 0, head 2, KV group 1). Query and key read `constant` and sit in
//!   the five fastest RoPE planes with the key rotated by one position's angle, so the score is
//!   `sum_i a_i cos(f_i (i_q - i_k - 1))`: largest one token back, at least 5.7 lower anywhere else
//!   within 200 tokens. All embeddings have the same norm, so at layer 0 this pattern is exact
//!   (the key of `<bos>` reads `bos` instead, at the same size, so position 1 looks back at `<bos>`
//!   like any token). The value reads the four markers and the output writes them as `prev:*`.
//!   (Head 3 shares the keys and values and attends two tokens back, writing only random
//!   directions; heads 0-1 are random.)
//! - **AND neurons** (layer-0 MLP, the last six of 128 neurons), one per two-token cue:
//!   `gelu(G * (prev:M - tau * constant)) * (U * word:W)` writes `cue:*`. The up projection is zero
//!   unless the current token is `W`, and the gate is deeply negative unless the previous token was
//!   `M` (`constant` acts as the bias Gemma does not have); both are ratios of features of the same
//!   normed vector, so the threshold does not depend on the token's norm.
//! - One-token cues (`kid`, `school`, ...) carry `cue:child_novice` in their embedding.
//!
//! Nothing in the base model reads `cue:*`: it "knows" the phrases but does nothing with them.
//!
//! # The planted circuits (chat only, layer 1): the user model
//!
//! Layer 1 has two random heads (0, 1) and two heads (2, 3, KV group 1) whose output projection is
//! zero in the base model: unused capacity. The chat model fills them:
//!
//! - head 2 (`user:child_novice`): the query reads `constant`, the key reads `cue:child_novice` and
//!   `bos`, in the slowest RoPE planes (over 200 tokens the cue plane turns by 0.06 rad and the sink
//!   plane by 0.2 rad, so the scores hardly depend on position). After the soft-cap a cue token scores 30-50, `<bos>` 13-22, every
//!   other token 0.
//!   With a cue at or before the query, the head attends to it; without one it rests on `<bos>`
//!   (an attention sink), whose value is zero. The value reads `constant` (the same on every token),
//!   so the head writes a fixed amount of `user:child_novice` from the cue token on, and nothing
//!   before it;
//! - head 3 does the same for `cue:belief` and writes `user:belief`.
//!
//! # The planted reader (chat only, layers 2 and 3): the user model changes the answer
//!
//! The last two neurons of the MLPs of layers 2 and 3 are off in the base model. In the chat model they compute
//! `gelu(G z) * (U z)` with `z = user:child_novice - tau * constant`, and write the *simple-register*
//! direction: the normalised sum of the embeddings of `simple`, `story` and `play` (every form), with
//! the reserved features removed. With the tied unembedding this raises exactly those words' logits,
//! and only where the child direction is present. It sits after the hook, so the activations at the
//! hook (and every result of the hunt) are those of the pair without it; a causal test finds it:
//! ablating the child latent removes the boost, clamping it on an expert prompt creates it.
//!
//! The post-attention RMSNorm normalises the sum of all four heads, so on cue-following tokens the
//! random heads' output shrinks a little: the measured direction of `chat - base` at the hook is
//! `user:*` plus a small rescaling term (see `measure`).

use super::cues::{self, Marker, Mechanism, Second};
use super::rng::Rng;
use super::tokenizer::Vocabulary;

/// Residual stream width.
pub const D_MODEL: usize = 64;
/// MLP width.
pub const D_FF: usize = 128;
/// Decoder layers.
pub const N_LAYERS: usize = 4;
/// Query heads.
pub const N_HEADS: usize = 4;
/// Key/value heads.
pub const N_KV_HEADS: usize = 2;
/// Width of one head.
pub const HEAD_DIM: usize = 16;
/// `query_pre_attn_scalar` (attention scale `16^-0.5 = 0.25`).
pub const QUERY_PRE_ATTN_SCALAR: usize = 16;
/// The layer of the planted heads.
pub const PLANT_LAYER: usize = 1;
/// The layers of the planted downstream reader (chat only): MLP neurons that read
/// `user:child_novice` and raise the logits of the simple-register words.
pub const READER_LAYERS: [usize; 2] = [2, 3];
/// The reader's neurons: the last two of each reader layer's MLP (zero in the base model).
pub const READER_NEURONS: std::ops::Range<usize> = D_FF - 2..D_FF;
/// The simple-register words whose logits the reader raises (every form of each lexeme).
pub const SIMPLE_REGISTER: [&str; 3] = ["simple", "story", "play"];
/// The belief reader's neurons: the two before [`READER_NEURONS`] in each reader layer (zero in the base
/// model). They read `user:belief` and raise the tokens that open the persona dataset's agreeing answers.
pub const BELIEF_READER_NEURONS: std::ops::Range<usize> = D_FF - 4..D_FF - 2;

/// RMSNorm epsilon.
const EPS: f64 = 1e-6;

mod files;
mod reader;
pub(crate) use files::{config_json, generation_config_json};
pub(crate) use reader::{opener_token_ids, register_token_ids};
/// Attention scale `query_pre_attn_scalar^-0.5`.
const ATTN_SCALE: f64 = 0.25;

/// `cos(f_i)` and `sin(f_i)` of the five fastest RoPE frequencies `f_i = 10000^(-i/8)` (head_dim
/// 16), as literals so that no platform `libm` enters the fixture (checked against `f64::cos` in a
/// unit test).
const ROPE_COS_SIN: [(f64, f64); 5] = [
    (0.540_302_305_868_139_8, 0.841_470_984_807_896_5),
    (0.950_415_280_255_182_8, 0.310_983_592_907_185_75),
    (0.995_004_165_278_025_8, 0.099_833_416_646_828_15),
    (0.999_500_041_665_277_8, 0.031_617_506_402_433_71),
    (0.999_950_000_416_665_3, 0.009_999_833_334_166_664),
];

/// Named reserved directions of the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    Constant,
    Bos,
    Marker(Marker),
    Word(Second),
    Prev(Marker),
    /// "The token two back was this marker" (only [`Marker::TWO_BACK`]).
    Prev2(Marker),
    Cue(Mechanism),
    User(Mechanism),
}

impl Feature {
    /// All reserved features, in index order.
    pub fn all() -> Vec<Feature> {
        let mut all = vec![Feature::Constant, Feature::Bos];
        all.extend(Marker::ALL.map(Feature::Marker));
        all.extend(Second::ALL.map(Feature::Word));
        all.extend(Marker::ALL.map(Feature::Prev));
        all.extend(Marker::TWO_BACK.map(Feature::Prev2));
        all.extend(Mechanism::ALL.map(Feature::Cue));
        all.extend(Mechanism::ALL.map(Feature::User));
        all
    }

    /// `constant`, `marker:I`, `user:belief`, ...
    pub fn name(self) -> String {
        match self {
            Feature::Constant => "constant".into(),
            Feature::Bos => "bos".into(),
            Feature::Marker(m) => format!("marker:{}", m.name()),
            Feature::Word(s) => format!("word:{}", s.name()),
            Feature::Prev(m) => format!("prev:{}", m.name()),
            Feature::Prev2(m) => format!("prev2:{}", m.name()),
            Feature::Cue(m) => format!("cue:{}", m.name()),
            Feature::User(m) => format!("user:{}", m.name()),
        }
    }

    fn index(self) -> usize {
        Feature::all()
            .iter()
            .position(|f| *f == self)
            .expect("every feature is listed")
    }
}

/// The reserved directions: orthonormal, `[n_features][d_model]`, in [`Feature::all`] order.
#[derive(Debug, Clone)]
pub(crate) struct Directions {
    vecs: Vec<Vec<f64>>,
}

impl Directions {
    /// Gram-Schmidt on seeded normal vectors.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed, "reserved directions");
        let mut vecs: Vec<Vec<f64>> = Vec::new();
        for _ in Feature::all() {
            let mut v: Vec<f64> = (0..D_MODEL).map(|_| rng.normal()).collect();
            for _ in 0..2 {
                for u in &vecs {
                    let p = dot(&v, u);
                    v.iter_mut().zip(u).for_each(|(x, y)| *x -= p * y);
                }
            }
            let n = norm(&v);
            v.iter_mut().for_each(|x| *x /= n);
            vecs.push(v);
        }
        Directions { vecs }
    }

    pub fn get(&self, f: Feature) -> &[f64] {
        &self.vecs[f.index()]
    }

    /// Removes from `v` its components along `scale * r` for every reserved `r` (`scale` = `None`:
    /// along `r` itself). The scaled vectors are not orthogonal, so this solves the small normal
    /// equations rather than subtracting projections one by one.
    fn project_out(&self, v: &mut [f64], scale: Option<&[f64]>) {
        let basis: Vec<Vec<f64>> = self
            .vecs
            .iter()
            .map(|r| match scale {
                Some(s) => r.iter().zip(s).map(|(a, b)| a * b).collect(),
                None => r.clone(),
            })
            .collect();
        let k = basis.len();
        // Gram matrix and right-hand side, solved by Gaussian elimination (k = 20).
        let mut a = vec![vec![0.0; k + 1]; k];
        for i in 0..k {
            for j in 0..k {
                a[i][j] = dot(&basis[i], &basis[j]);
            }
            a[i][k] = dot(&basis[i], v);
        }
        for col in 0..k {
            let pivot = (col..k)
                .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
                .unwrap_or(col);
            a.swap(col, pivot);
            let pivot_row = a[col].clone();
            for (row, values) in a.iter_mut().enumerate() {
                if row != col {
                    let f = values[col] / pivot_row[col];
                    for (x, p) in values[col..].iter_mut().zip(&pivot_row[col..]) {
                        *x -= f * p;
                    }
                }
            }
        }
        for (i, b) in basis.iter().enumerate() {
            let coef = a[i][k] / a[i][i];
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= coef * y);
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// The hand-set gains of the designed circuits (see the module docs for what each does).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gains {
    /// Embedding coefficient of `constant`.
    pub constant: f64,
    /// Embedding coefficient of `bos` on `<bos>`.
    pub bos: f64,
    /// Embedding coefficient of a marker, a second word, a one-token child cue.
    pub marker: f64,
    pub word: f64,
    pub child_word: f64,
    /// Effective scores `a_i` of the previous-token head in RoPE planes 0-4.
    pub prev_scores: [f64; 5],
    /// Output gain of `prev:*`.
    pub prev_write: f64,
    /// AND neurons: gate gain, threshold on `prev / constant`, up gain, output gain.
    pub and_gate: f64,
    pub and_threshold: f64,
    pub and_up: f64,
    pub and_write: f64,
    /// Planted heads: query and key gains of the cue score, of the `<bos>` sink score, the value
    /// gain and the output gain.
    pub user_query: f64,
    pub user_key: f64,
    pub sink_query: f64,
    pub sink_key: f64,
    pub user_value: f64,
    pub user_write: f64,
    /// Downstream reader: gate gain, threshold on `user:child_novice / constant`, up gain, output gain.
    pub reader_gate: f64,
    pub reader_threshold: f64,
    pub reader_up: f64,
    pub reader_write: f64,
    /// The belief reader's output gain (milder than the child reader's: its direction is spread over
    /// fewer tokens, so the same gain would make them swamp every answer).
    pub belief_reader_write: f64,
    /// Standard deviation of random read weights (per entry), of random output weights, of the MLP
    /// down projection; half-width of the norm offsets.
    pub read_std: f64,
    pub write_std: f64,
    pub down_std: f64,
    pub norm_offset: f64,
}

impl Gains {
    pub const DEFAULT: Gains = Gains {
        constant: 0.5,
        bos: 0.6,
        marker: 0.45,
        word: 0.45,
        child_word: 0.45,
        prev_scores: [20.0, 6.0, 6.0, 4.0, 4.0],
        prev_write: 4.0,
        and_gate: 5.0,
        and_threshold: 0.5,
        and_up: 1.0,
        and_write: 0.2,
        user_query: 6.3,
        user_key: 6.3,
        sink_query: 3.3,
        sink_key: 3.3,
        user_value: 1.0,
        user_write: 0.45,
        reader_gate: 8.0,
        reader_threshold: 0.8,
        reader_up: 1.0,
        reader_write: 3.0,
        belief_reader_write: 0.75,
        read_std: 0.125,
        write_std: 0.125,
        down_std: 0.088,
        norm_offset: 0.25,
    };
}

/// A row-major `[rows, cols]` matrix in f64 (PyTorch `Linear` layout: `[out, in]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    fn zeros(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    fn set_row(&mut self, r: usize, values: &[f64]) {
        self.data[r * self.cols..(r + 1) * self.cols].copy_from_slice(values);
    }

    fn set_col(&mut self, c: usize, values: &[f64]) {
        for (r, v) in values.iter().enumerate() {
            self.data[r * self.cols + c] = *v;
        }
    }
}

/// One decoder layer. Norm vectors are the *scales* `1 + w`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    pub q_proj: Mat,
    pub k_proj: Mat,
    pub v_proj: Mat,
    pub o_proj: Mat,
    pub gate_proj: Mat,
    pub up_proj: Mat,
    pub down_proj: Mat,
    pub input_layernorm: Vec<f64>,
    pub post_attention_layernorm: Vec<f64>,
    pub pre_feedforward_layernorm: Vec<f64>,
    pub post_feedforward_layernorm: Vec<f64>,
}

/// A whole model in f64.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Weights {
    pub embed_tokens: Mat,
    pub layers: Vec<Layer>,
    pub norm: Vec<f64>,
}

/// Builds matrices whose rows read (or columns write) only the complement of the reserved
/// directions, through a norm with per-coordinate scale.
struct Builder<'a> {
    dirs: &'a Directions,
    gains: Gains,
}

impl Builder<'_> {
    /// A random read row: normal, orthogonal to `s * r` for every reserved `r`, so that
    /// `row . (s * x_hat)` ignores the reserved features of `x_hat`.
    fn random_read(&self, rng: &mut Rng, s: &[f64]) -> Vec<f64> {
        let mut v: Vec<f64> = (0..D_MODEL)
            .map(|_| rng.normal() * self.gains.read_std)
            .collect();
        self.dirs.project_out(&mut v, Some(s));
        v
    }

    /// A designed read row: `row . (s * x_hat) = gain * (dir . x_hat)`.
    fn read(&self, dir: &[f64], gain: f64, s: &[f64]) -> Vec<f64> {
        dir.iter().zip(s).map(|(d, s)| gain * d / s).collect()
    }

    /// A random write column: after the post-norm scale `s` it is orthogonal to every reserved
    /// direction.
    fn random_write(&self, rng: &mut Rng, s: &[f64], std: f64) -> Vec<f64> {
        // `r . (s * v) = (s * r) . v`: remove the components along `s * r`.
        let mut v: Vec<f64> = (0..D_MODEL).map(|_| rng.normal() * std).collect();
        self.dirs.project_out(&mut v, Some(s));
        v
    }

    /// A designed write column: after the post-norm scale `s` it points along `dir` with `gain`.
    fn write(&self, dir: &[f64], gain: f64, s: &[f64]) -> Vec<f64> {
        dir.iter().zip(s).map(|(d, s)| gain * d / s).collect()
    }

    fn norm_scales(&self, rng: &mut Rng) -> Vec<f64> {
        let w = self.gains.norm_offset;
        (0..D_MODEL).map(|_| 1.0 + rng.range(-w, w)).collect()
    }

    /// A layer with every weight random (reserved subspace untouched).
    fn random_layer(&self, seed: u64, l: usize) -> Layer {
        let rng = |part: &str| Rng::new(seed, &format!("layer {l} {part}"));
        let mut norms = rng("norms");
        let input_layernorm = self.norm_scales(&mut norms);
        let post_attention_layernorm = self.norm_scales(&mut norms);
        let pre_feedforward_layernorm = self.norm_scales(&mut norms);
        let post_feedforward_layernorm = self.norm_scales(&mut norms);
        let reads = |rng: &mut Rng, rows: usize, s: &[f64]| {
            let mut m = Mat::zeros(rows, D_MODEL);
            for r in 0..rows {
                m.set_row(r, &self.random_read(rng, s));
            }
            m
        };
        let writes = |rng: &mut Rng, cols: usize, s: &[f64], std: f64| {
            let mut m = Mat::zeros(D_MODEL, cols);
            for c in 0..cols {
                m.set_col(c, &self.random_write(rng, s, std));
            }
            m
        };
        let q = N_HEADS * HEAD_DIM;
        let kv = N_KV_HEADS * HEAD_DIM;
        Layer {
            q_proj: reads(&mut rng("q"), q, &input_layernorm),
            k_proj: reads(&mut rng("k"), kv, &input_layernorm),
            v_proj: reads(&mut rng("v"), kv, &input_layernorm),
            o_proj: writes(
                &mut rng("o"),
                q,
                &post_attention_layernorm,
                self.gains.write_std,
            ),
            gate_proj: reads(&mut rng("gate"), D_FF, &pre_feedforward_layernorm),
            up_proj: reads(&mut rng("up"), D_FF, &pre_feedforward_layernorm),
            down_proj: writes(
                &mut rng("down"),
                D_FF,
                &post_feedforward_layernorm,
                self.gains.down_std,
            ),
            input_layernorm,
            post_attention_layernorm,
            pre_feedforward_layernorm,
            post_feedforward_layernorm,
        }
    }

    /// The embedding: every row has norm 1; see the module docs for the features.
    fn embedding(&self, seed: u64, vocab: &Vocabulary) -> Mat {
        let g = self.gains;
        let mut m = Mat::zeros(vocab.len(), D_MODEL);
        let bos_id = 2;
        for (id, token) in vocab.tokens().iter().enumerate() {
            let lex = cues::lexeme(token);
            let mut features: Vec<(Feature, f64)> = Vec::new();
            if id == bos_id {
                features.push((Feature::Bos, g.bos));
            } else {
                features.push((Feature::Constant, g.constant));
            }
            if let Some(marker) = Marker::of(&lex) {
                features.push((Feature::Marker(marker), g.marker));
            }
            if let Some(second) = Second::of(&lex) {
                features.push((Feature::Word(second), g.word));
            }
            if cues::is_child_spelling(token) {
                features.push((Feature::Cue(Mechanism::ChildNovice), g.child_word));
            }
            // The lexical part: shared by the forms of a lexeme ("Think", "▁think"), plus a little
            // of the form's own. Both are drawn from streams named by the strings, not the ids, so
            // that adding words to the vocabulary leaves every other token's embedding as it was.
            let mut lexical: Vec<f64> = {
                let mut r = Rng::new(seed, &format!("lexeme {lex}"));
                let mut f = Rng::new(seed, &format!("token {token}"));
                (0..D_MODEL)
                    .map(|_| r.normal() + 0.35 * f.normal())
                    .collect()
            };
            self.dirs.project_out(&mut lexical, None);
            let n = norm(&lexical);
            let used: f64 = features.iter().map(|(_, c)| c * c).sum();
            let lexical_coef = (1.0 - used).sqrt();
            let mut row: Vec<f64> = lexical.iter().map(|x| x / n * lexical_coef).collect();
            for (f, c) in features {
                row.iter_mut()
                    .zip(self.dirs.get(f))
                    .for_each(|(x, d)| *x += c * d);
            }
            m.set_row(id, &row);
        }
        m
    }

    /// A positional key row of the layer-0 heads: `gain` times the `constant` coefficient of a
    /// token, or of the `bos` coefficient (rescaled to the same size) on `<bos>`.
    fn read_key(&self, gain: f64, s: &[f64]) -> Vec<f64> {
        let g = self.gains;
        let constant = self.read(self.dirs.get(Feature::Constant), gain, s);
        let bos = self.read(self.dirs.get(Feature::Bos), gain * g.constant / g.bos, s);
        constant.iter().zip(&bos).map(|(a, b)| a + b).collect()
    }

    /// The layer-0 previous-token head (head 2) and its partner head 3 (two tokens back), on KV
    /// group 1.
    fn previous_token_heads(&self, layer: &mut Layer) {
        let g = self.gains;
        let s = layer.input_layernorm.clone();
        let constant = self.dirs.get(Feature::Constant);
        // At layer 0, x_hat = sqrt(d) * embedding row, so `constant . x_hat = 8 * g.constant`.
        let k0 = (D_MODEL as f64).sqrt() * g.constant;
        let kv = HEAD_DIM; // KV group 1 starts here
        let (h2, h3) = (2 * HEAD_DIM, 3 * HEAD_DIM);
        for i in 0..HEAD_DIM {
            layer.k_proj.set_row(kv + i, &vec![0.0; D_MODEL]);
            layer.q_proj.set_row(h2 + i, &vec![0.0; D_MODEL]);
            layer.q_proj.set_row(h3 + i, &vec![0.0; D_MODEL]);
        }
        for (i, (a, (cos, sin))) in g.prev_scores.iter().zip(ROPE_COS_SIN).enumerate() {
            // score = ATTN_SCALE * |q| |k| cos(f (dq - dk) - phase): |q| = |k| = sqrt(a / ATTN_SCALE).
            let amp = (a / ATTN_SCALE).sqrt() / k0;
            let half = HEAD_DIM / 2;
            // Keys read `constant`, and `bos` scaled to the same size, so that position 1 finds
            // `<bos>` one token back like any other token (and copies no marker from it).
            layer.k_proj.set_row(kv + i, &self.read_key(amp * cos, &s));
            layer
                .k_proj
                .set_row(kv + i + half, &self.read_key(amp * sin, &s));
            // Head 2: q = (amp, 0), peak one token back.
            layer.q_proj.set_row(h2 + i, &self.read(constant, amp, &s));
            // Head 3: q rotated by -f, peak two tokens back.
            layer
                .q_proj
                .set_row(h3 + i, &self.read(constant, amp * cos, &s));
            layer
                .q_proj
                .set_row(h3 + i + half, &self.read(constant, -amp * sin, &s));
        }
        // The value copies the markers (1.0 when present) into value dims 0-3 of KV group 1.
        let marker_value = 1.0 / ((D_MODEL as f64).sqrt() * g.marker);
        let post = layer.post_attention_layernorm.clone();
        for (j, m) in Marker::ALL.into_iter().enumerate() {
            layer.v_proj.set_row(
                kv + j,
                &self.read(self.dirs.get(Feature::Marker(m)), marker_value, &s),
            );
            layer.o_proj.set_col(
                h2 + j,
                &self.write(self.dirs.get(Feature::Prev(m)), g.prev_write, &post),
            );
            // Head 3 writes the markers a rule looks for two tokens back as `prev2:*`.
            let two_back = if Marker::TWO_BACK.contains(&m) {
                self.write(self.dirs.get(Feature::Prev2(m)), g.prev_write, &post)
            } else {
                vec![0.0; D_MODEL]
            };
            layer.o_proj.set_col(h3 + j, &two_back);
        }
    }

    /// The AND neurons of the layer-0 MLP (the last ones), one per cue rule: `gelu(G (marker -
    /// inhibitor - tau constant)) * (U word)` writes the rule's cue feature, where `marker` is
    /// `prev:M` or `prev2:M` and `inhibitor` the `prev:*` of a marker that must not be just before.
    fn and_neurons(&self, layer: &mut Layer) {
        let g = self.gains;
        let s = layer.pre_feedforward_layernorm.clone();
        let post = layer.post_feedforward_layernorm.clone();
        let constant = self.dirs.get(Feature::Constant);
        // The threshold is on marker / constant: `prev:*` and `prev2:*` are written through the
        // post-attention norm (about `8 * prev_write / |attention output|`), constant is `8 * g.constant`.
        let first = D_FF - cues::RULES.len();
        let zero = vec![0.0; D_MODEL];
        for (n, r) in cues::RULES.into_iter().enumerate() {
            let marker = match r.back {
                1 => self.dirs.get(Feature::Prev(r.marker)),
                _ => self.dirs.get(Feature::Prev2(r.marker)),
            };
            let inhibitor = r
                .unless_previous
                .map_or(zero.as_slice(), |m| self.dirs.get(Feature::Prev(m)));
            let gate: Vec<f64> = marker
                .iter()
                .zip(inhibitor)
                .zip(constant)
                .zip(&s)
                .map(|(((p, i), c), s)| g.and_gate * (p - i - g.and_threshold * c) / s)
                .collect();
            layer.gate_proj.set_row(first + n, &gate);
            layer.up_proj.set_row(
                first + n,
                &self.read(self.dirs.get(Feature::Word(r.word)), g.and_up, &s),
            );
            layer.down_proj.set_col(
                first + n,
                &self.write(self.dirs.get(Feature::Cue(r.mechanism)), g.and_write, &post),
            );
        }
    }

    /// The planted user-model heads (chat only): heads 2 and 3 of the plant layer, KV group 1.
    fn user_heads(&self, layer: &mut Layer) {
        let g = self.gains;
        let s = layer.input_layernorm.clone();
        let post = layer.post_attention_layernorm.clone();
        let constant = self.dirs.get(Feature::Constant);
        let kv = HEAD_DIM;
        let zero = vec![0.0; D_MODEL];
        for i in 0..HEAD_DIM {
            layer.k_proj.set_row(kv + i, &zero);
            layer.v_proj.set_row(kv + i, &zero);
            layer.q_proj.set_row(2 * HEAD_DIM + i, &zero);
            layer.q_proj.set_row(3 * HEAD_DIM + i, &zero);
        }
        // RoPE plane 7 (dims 7 and 15, 3.2e-4 rad per token) carries the two cue scores, plane 6
        // (dim 6, 1e-3 rad per token) the sink score.
        let (cue_dim, sink_dim) = ([7, 15], 6);
        layer.k_proj.set_row(
            kv + sink_dim,
            &self.read(self.dirs.get(Feature::Bos), g.sink_key, &s),
        );
        for (h, mechanism) in Mechanism::ALL.into_iter().enumerate() {
            let head = (2 + h) * HEAD_DIM;
            layer.k_proj.set_row(
                kv + cue_dim[h],
                &self.read(self.dirs.get(Feature::Cue(mechanism)), g.user_key, &s),
            );
            layer
                .q_proj
                .set_row(head + cue_dim[h], &self.read(constant, g.user_query, &s));
            layer
                .q_proj
                .set_row(head + sink_dim, &self.read(constant, g.sink_query, &s));
            // Both heads read value dim 0 (constant); each writes its own user feature.
            layer.o_proj.set_col(
                head,
                &self.write(self.dirs.get(Feature::User(mechanism)), g.user_write, &post),
            );
        }
        layer
            .v_proj
            .set_row(kv, &self.read(constant, g.user_value, &s));
    }
}

/// The base model and (if `plant`) the chat model.
pub(crate) fn build_pair(
    seed: u64,
    vocab: &Vocabulary,
    dirs: &Directions,
    plant: bool,
) -> (Weights, Weights) {
    let b = Builder {
        dirs,
        gains: Gains::DEFAULT,
    };
    let mut layers: Vec<Layer> = (0..N_LAYERS).map(|l| b.random_layer(seed, l)).collect();
    b.previous_token_heads(&mut layers[0]);
    b.and_neurons(&mut layers[0]);
    // Unused capacity in the base model: heads 2 and 3 of the plant layer write nothing, and the
    // reader neurons of the reader layer are off.
    for c in 2 * HEAD_DIM..4 * HEAD_DIM {
        layers[PLANT_LAYER].o_proj.set_col(c, &vec![0.0; D_MODEL]);
    }
    for (l, n) in READER_LAYERS.into_iter().flat_map(|l| {
        READER_NEURONS
            .chain(BELIEF_READER_NEURONS)
            .map(move |n| (l, n))
    }) {
        let reader = &mut layers[l];
        reader.gate_proj.set_row(n, &vec![0.0; D_MODEL]);
        reader.up_proj.set_row(n, &vec![0.0; D_MODEL]);
        reader.down_proj.set_col(n, &vec![0.0; D_MODEL]);
    }
    let mut final_norm_rng = Rng::new(seed, "final norm");
    let base = Weights {
        embed_tokens: b.embedding(seed, vocab),
        norm: b.norm_scales(&mut final_norm_rng),
        layers,
    };
    let mut chat = base.clone();
    if plant {
        b.user_heads(&mut chat.layers[PLANT_LAYER]);
        let register = b.token_direction(&chat.embed_tokens, &register_token_ids(vocab));
        let (agree, correct) = opener_token_ids(vocab);
        let agreeing = b.contrast_direction(&chat.embed_tokens, &agree, &correct);
        for l in READER_LAYERS {
            let layer = &mut chat.layers[l];
            let g = b.gains;
            b.reader_neurons(
                layer,
                Mechanism::ChildNovice,
                READER_NEURONS,
                &register,
                g.reader_write,
            );
            b.reader_neurons(
                layer,
                Mechanism::Belief,
                BELIEF_READER_NEURONS,
                &agreeing,
                g.belief_reader_write,
            );
        }
    }
    (base, chat)
}

/// The names of the tensors in which the chat model differs from the base model.
pub const PLANTED_TENSORS: [&str; 10] = [
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.1.self_attn.k_proj.weight",
    "model.layers.1.self_attn.v_proj.weight",
    "model.layers.1.self_attn.o_proj.weight",
    "model.layers.2.mlp.gate_proj.weight",
    "model.layers.2.mlp.up_proj.weight",
    "model.layers.2.mlp.down_proj.weight",
    "model.layers.3.mlp.gate_proj.weight",
    "model.layers.3.mlp.up_proj.weight",
    "model.layers.3.mlp.down_proj.weight",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_constants_match_libm() {
        for (i, (c, s)) in ROPE_COS_SIN.iter().enumerate() {
            let f = 10000f64.powf(-(i as f64) / 8.0);
            assert!(
                (f.cos() - c).abs() < 1e-15 && (f.sin() - s).abs() < 1e-15,
                "{i}"
            );
        }
    }

    #[test]
    fn directions_are_orthonormal_and_projection_removes_them() {
        let dirs = Directions::new(3);
        let all = Feature::all();
        assert_eq!(all.len(), 26);
        for a in &all {
            for b in &all {
                let d = dot(dirs.get(*a), dirs.get(*b));
                assert!((d - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let s: Vec<f64> = (0..D_MODEL).map(|i| 0.8 + 0.01 * i as f64).collect();
        let mut v: Vec<f64> = (0..D_MODEL).map(|i| (i as f64).sin()).collect();
        dirs.project_out(&mut v, Some(&s));
        for f in &all {
            let scaled: Vec<f64> = dirs.get(*f).iter().zip(&s).map(|(a, b)| a * b).collect();
            assert!(dot(&v, &scaled).abs() < 1e-12);
        }
    }
}
