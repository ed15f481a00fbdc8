//! The planted downstream reader of the chat model (layers [`READER_LAYERS`](super::READER_LAYERS),
//! neurons [`READER_NEURONS`] of each): it reads `user:child_novice` and raises the logits of the
//! [`SIMPLE_REGISTER`] words, so that a causal test has a known effect to find.

use super::{cues, norm, Builder, Feature, Layer, Mat, Mechanism, Vocabulary, D_MODEL};
use super::{READER_NEURONS, SIMPLE_REGISTER};

impl Builder<'_> {
    /// The unit direction the reader writes: the normalised sum of the simple-register tokens'
    /// embeddings with the reserved features removed, so that it raises those tokens' logits and not
    /// every token's (all embeddings share `constant`).
    pub(super) fn register_direction(&self, embed: &Mat, vocab: &Vocabulary) -> Vec<f64> {
        let mut sum = vec![0.0; D_MODEL];
        for (id, token) in vocab.tokens().iter().enumerate() {
            if SIMPLE_REGISTER.contains(&cues::lexeme(token).as_str()) {
                let row = &embed.data[id * D_MODEL..(id + 1) * D_MODEL];
                sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
            }
        }
        self.dirs.project_out(&mut sum, None);
        let n = norm(&sum);
        sum.iter().map(|x| x / n).collect()
    }

    /// The planted reader (chat only): `gelu(G z) * (U z)` with `z = user:child_novice - tau *
    /// constant` on the reader neurons, written along the simple-register direction. Without the
    /// child direction `z` is deeply negative and the neurons are silent.
    pub(super) fn reader_neurons(&self, layer: &mut Layer, register: &[f64]) {
        let g = self.gains;
        let s = layer.pre_feedforward_layernorm.clone();
        let post = layer.post_feedforward_layernorm.clone();
        let user = self.dirs.get(Feature::User(Mechanism::ChildNovice));
        let constant = self.dirs.get(Feature::Constant);
        // `z = user:child_novice - tau * constant` (read through the pre-MLP norm): the gate is
        // `gelu(G z)` and the up projection `U z`, so the product is never negative (GeLU's negative
        // lobe meets a negative `z`) and is monotone in `z` but for a bump of at most
        // `0.17 * 0.75 * U / G` just below the threshold.
        let z: Vec<f64> = user
            .iter()
            .zip(constant)
            .zip(&s)
            .map(|((u, c), s)| (u - g.reader_threshold * c) / s)
            .collect();
        let scaled = |gain: f64| z.iter().map(|v| gain * v).collect::<Vec<f64>>();
        for n in READER_NEURONS {
            layer.gate_proj.set_row(n, &scaled(g.reader_gate));
            layer.up_proj.set_row(n, &scaled(g.reader_up));
            layer
                .down_proj
                .set_col(n, &self.write(register, g.reader_write, &post));
        }
    }
}
