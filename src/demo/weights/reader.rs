//! The planted downstream readers of the chat model (layers [`READER_LAYERS`](super::READER_LAYERS)):
//! neurons [`READER_NEURONS`](super::READER_NEURONS) read `user:child_novice` and raise the logits of the
//! [`SIMPLE_REGISTER`] words; neurons [`BELIEF_READER_NEURONS`](super::BELIEF_READER_NEURONS) read
//! `user:belief` and raise the tokens that open the persona dataset's agreeing answers (the model goes
//! along with a stated belief). So causal tests have known effects to find.

use std::collections::BTreeSet;

use persona_dataset::PersonaDataset;

use super::SIMPLE_REGISTER;
use super::{cues, norm, Builder, Feature, Layer, Mat, Mechanism, Vocabulary, D_MODEL};

/// Every token id of the simple-register lexemes (all forms).
pub(crate) fn register_token_ids(vocab: &Vocabulary) -> Vec<u32> {
    vocab
        .tokens()
        .iter()
        .enumerate()
        .filter(|(_, t)| SIMPLE_REGISTER.contains(&cues::lexeme(t).as_str()))
        .map(|(id, _)| id as u32)
        .collect()
}

/// The tokens that open the shipped persona dataset's agreeing answers and no correcting one ("Yes,"),
/// and those that open correcting answers and no agreeing one ("Actually,"), each with every form of its
/// lexeme (`Yes`, `▁Yes`), in id order.
pub(crate) fn opener_token_ids(vocab: &Vocabulary) -> (Vec<u32>, Vec<u32>) {
    let dataset = PersonaDataset::shipped();
    let items = dataset.forced_choice_items();
    let first = |text: &str| vocab.first_token_id(text).map(|id| id as u32);
    let agree: BTreeSet<u32> = items
        .iter()
        .filter_map(|c| first(&c.continuations.agree))
        .collect();
    let correct: BTreeSet<u32> = items
        .iter()
        .filter_map(|c| first(&c.continuations.correct))
        .collect();
    // Every form of each opener (`Yes`, `▁Yes`), as the child reader takes every form of its words.
    let forms = |ids: BTreeSet<u32>| -> Vec<u32> {
        let lexemes: BTreeSet<String> = ids
            .iter()
            .map(|id| cues::lexeme(&vocab.tokens()[*id as usize]))
            .collect();
        vocab
            .tokens()
            .iter()
            .enumerate()
            .filter(|(_, t)| lexemes.contains(&cues::lexeme(t)))
            .map(|(id, _)| id as u32)
            .collect()
    };
    (
        forms(agree.difference(&correct).copied().collect()),
        forms(correct.difference(&agree).copied().collect()),
    )
}

impl Builder<'_> {
    /// A unit direction that raises the logits of `ids` and not every token's: the normalised sum of
    /// their embeddings with the reserved features removed (all embeddings share `constant`).
    pub(super) fn token_direction(&self, embed: &Mat, ids: &[u32]) -> Vec<f64> {
        self.contrast_direction(embed, ids, &[])
    }

    /// A unit direction that raises the logits of `up` and lowers those of `down`: the normalised
    /// difference of their summed embeddings, reserved features removed.
    pub(super) fn contrast_direction(&self, embed: &Mat, up: &[u32], down: &[u32]) -> Vec<f64> {
        let mut sum = vec![0.0; D_MODEL];
        for (ids, sign) in [(up, 1.0), (down, -1.0)] {
            for id in ids {
                let id = *id as usize;
                let row = &embed.data[id * D_MODEL..(id + 1) * D_MODEL];
                sum.iter_mut().zip(row).for_each(|(s, x)| *s += sign * x);
            }
        }
        self.dirs.project_out(&mut sum, None);
        let n = norm(&sum);
        sum.iter().map(|x| x / n).collect()
    }

    /// A planted reader (chat only): `gelu(G z) * (U z)` with `z = user:<mechanism> - tau * constant`
    /// on `neurons`, written along `direction`. Without the user direction `z` is deeply negative and
    /// the neurons are silent.
    pub(super) fn reader_neurons(
        &self,
        layer: &mut Layer,
        mechanism: Mechanism,
        neurons: std::ops::Range<usize>,
        direction: &[f64],
        write_gain: f64,
    ) {
        let g = self.gains;
        let s = layer.pre_feedforward_layernorm.clone();
        let post = layer.post_feedforward_layernorm.clone();
        let user = self.dirs.get(Feature::User(mechanism));
        let constant = self.dirs.get(Feature::Constant);
        // `z = user - tau * constant` (read through the pre-MLP norm): the gate is `gelu(G z)` and the
        // up projection `U z`, so the product is never negative (GeLU's negative lobe meets a negative
        // `z`) and is monotone in `z` but for a bump of at most `0.17 * 0.75 * U / G` just below the
        // threshold.
        let z: Vec<f64> = user
            .iter()
            .zip(constant)
            .zip(&s)
            .map(|((u, c), s)| (u - g.reader_threshold * c) / s)
            .collect();
        let scaled = |gain: f64| z.iter().map(|v| gain * v).collect::<Vec<f64>>();
        for n in neurons {
            layer.gate_proj.set_row(n, &scaled(g.reader_gate));
            layer.up_proj.set_row(n, &scaled(g.reader_up));
            layer
                .down_proj
                .set_col(n, &self.write(direction, write_gain, &post));
        }
    }
}
