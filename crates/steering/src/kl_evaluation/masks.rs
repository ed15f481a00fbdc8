//! Which positions the KL evaluation scores: those that predict a token the model speaks, split into
//! the first `k` predictions of each turn and the rest (science-of-finetuning's
//! `evaluate_interventions_effects.py`).

use model_pair::TokenizedPrompt;
use serde::{Deserialize, Serialize};

/// Per position of one conversation (position `i` predicts token `i + 1`), the subsets it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionMasks {
    /// Predicts an assistant token (model-turn content or the `<end_of_turn>` closing the turn).
    pub assistant: Vec<bool>,
    /// Among the first `k` assistant predictions of each contiguous run, and not itself a chat-template
    /// token (the reference's `mask_k_first_ones_vec(assistant_pred_mask, k) & ~ctrl_mask`: the
    /// newline after `<start_of_turn>model`, which predicts a turn's first token, is left out).
    pub k_first: Vec<bool>,
    /// Assistant predictions not in `k_first`.
    pub post_k_first: Vec<bool>,
}

/// The three subsets of scored positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionSubset {
    /// Every position predicting an assistant token.
    All,
    /// The first `k` per turn (see [`PredictionMasks::k_first`]).
    KFirst,
    /// The rest.
    PostKFirst,
}

impl PositionSubset {
    /// The three subsets, in report order.
    pub const ALL: [PositionSubset; 3] = [
        PositionSubset::All,
        PositionSubset::KFirst,
        PositionSubset::PostKFirst,
    ];
}

impl PredictionMasks {
    /// The masks of `conversation` with the first `k` predictions of each turn.
    pub fn new(conversation: &TokenizedPrompt, k: usize) -> Self {
        let n = conversation.ids.len();
        let assistant: Vec<bool> = (0..n)
            .map(|i| i + 1 < n && conversation.assistant[i + 1])
            .collect();
        let mut k_first = vec![false; n];
        let mut run = 0;
        for i in 0..n {
            run = if assistant[i] { run + 1 } else { 0 };
            k_first[i] = assistant[i] && run <= k && !conversation.template[i];
        }
        let post_k_first = (0..n).map(|i| assistant[i] && !k_first[i]).collect();
        PredictionMasks {
            assistant,
            k_first,
            post_k_first,
        }
    }

    /// The mask of `subset`.
    pub fn of(&self, subset: PositionSubset) -> &[bool] {
        match subset {
            PositionSubset::All => &self.assistant,
            PositionSubset::KFirst => &self.k_first,
            PositionSubset::PostKFirst => &self.post_k_first,
        }
    }

    /// Whether any position is scored.
    pub fn any(&self) -> bool {
        self.assistant.iter().any(|b| *b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(template: &[u8], assistant: &[u8]) -> TokenizedPrompt {
        TokenizedPrompt {
            ids: (0..template.len() as u32).collect(),
            template: template.iter().map(|b| *b == 1).collect(),
            assistant: assistant.iter().map(|b| *b == 1).collect(),
        }
    }

    #[test]
    fn masks_shift_by_one_and_split_each_turn_at_k() {
        // <bos> <sot> user \n u u <eot> \n <sot> model \n a a a <eot> \n
        let template = [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1];
        let assistant = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0];
        let masks = PredictionMasks::new(&conversation(&template, &assistant), 2);
        let on = |m: &[bool]| {
            m.iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        // Positions 10 (the newline after "model") .. 13 predict the turn's tokens 11..14.
        assert_eq!(on(&masks.assistant), [10, 11, 12, 13]);
        // The first two of the run are 10 and 11; 10 is template, so only 11 remains.
        assert_eq!(on(&masks.k_first), [11]);
        assert_eq!(on(&masks.post_k_first), [10, 12, 13]);
        assert!(masks.any());
    }
}
