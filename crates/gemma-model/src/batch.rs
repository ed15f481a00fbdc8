//! Batches of token sequences of different lengths: padding, attention mask and positions.

use ndarray::Array2;

use crate::error::{GemmaError, Result};

/// Which end of a short sequence receives the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Real tokens first, pads after (token `i` of every prompt sits at index `i`).
    #[default]
    Right,
    /// Pads first, real tokens last (as used for generation); positions still start at 0 on the
    /// first real token.
    Left,
}

/// Token ids of `batch` prompts padded to a common length `seq_len`, with their attention mask.
///
/// Every real token's activations equal those of its prompt run alone: pads are never attended to,
/// and positions count real tokens only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    ids: Vec<u32>,
    mask: Vec<bool>,
    batch: usize,
    seq_len: usize,
    side: PaddingSide,
}

impl TokenBatch {
    /// Pads `sequences` with `pad_id` on `side`.
    ///
    /// Errors on an empty batch or an empty sequence.
    pub fn new(sequences: &[Vec<u32>], pad_id: u32, side: PaddingSide) -> Result<Self> {
        if sequences.is_empty() {
            return Err(GemmaError::InvalidInput {
                reason: "the batch has no sequences".into(),
            });
        }
        if let Some(i) = sequences.iter().position(Vec::is_empty) {
            return Err(GemmaError::InvalidInput {
                reason: format!("sequence {i} of the batch has no tokens"),
            });
        }
        let seq_len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let batch = sequences.len();
        let mut ids = vec![pad_id; batch * seq_len];
        let mut mask = vec![false; batch * seq_len];
        for (b, seq) in sequences.iter().enumerate() {
            let offset = match side {
                PaddingSide::Right => 0,
                PaddingSide::Left => seq_len - seq.len(),
            };
            let row = b * seq_len + offset;
            ids[row..row + seq.len()].copy_from_slice(seq);
            mask[row..row + seq.len()]
                .iter_mut()
                .for_each(|m| *m = true);
        }
        Ok(TokenBatch {
            ids,
            mask,
            batch,
            seq_len,
            side,
        })
    }

    /// A batch of one unpadded sequence.
    pub fn single(sequence: Vec<u32>) -> Result<Self> {
        Self::new(&[sequence], 0, PaddingSide::Right)
    }

    /// Which end of a short sequence was padded.
    pub fn padding_side(&self) -> PaddingSide {
        self.side
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Padded length.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Token ids, row-major `[batch, seq_len]`.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Attention mask, row-major `[batch, seq_len]` (`true` = real token).
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// Number of real tokens.
    pub fn n_real_tokens(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }

    /// RoPE positions, row-major `[batch, seq_len]`: the count of real tokens before each index
    /// (pads get position 0; they are never attended to).
    pub fn positions(&self) -> Vec<u32> {
        let mut positions = vec![0u32; self.ids.len()];
        for b in 0..self.batch {
            let mut next = 0u32;
            for t in 0..self.seq_len {
                let i = b * self.seq_len + t;
                if self.mask[i] {
                    positions[i] = next;
                    next += 1;
                }
            }
        }
        positions
    }

    /// The real tokens of sequence `b`, without padding.
    pub fn sequence(&self, b: usize) -> Vec<u32> {
        let row = b * self.seq_len..(b + 1) * self.seq_len;
        self.ids[row.clone()]
            .iter()
            .zip(&self.mask[row])
            .filter(|(_, m)| **m)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Token ids as an `[batch, seq_len]` i64 array (the layout of `input_ids` files).
    pub fn ids_array(&self) -> Array2<i64> {
        Array2::from_shape_fn((self.batch, self.seq_len), |(b, t)| {
            self.ids[b * self.seq_len + t] as i64
        })
    }

    /// Attention mask as an `[batch, seq_len]` i64 array of 0/1.
    pub fn mask_array(&self) -> Array2<i64> {
        Array2::from_shape_fn((self.batch, self.seq_len), |(b, t)| {
            self.mask[b * self.seq_len + t] as i64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_positions_start_at_the_first_real_token() {
        let b = TokenBatch::new(&[vec![2, 5, 6], vec![2, 7]], 0, PaddingSide::Left).unwrap();
        assert_eq!(b.ids(), &[2, 5, 6, 0, 2, 7]);
        assert_eq!(b.positions(), vec![0, 1, 2, 0, 0, 1]);
        assert_eq!(b.sequence(1), vec![2, 7]);
        let b = TokenBatch::new(&[vec![2, 5, 6], vec![2, 7]], 0, PaddingSide::Right).unwrap();
        assert_eq!(b.ids(), &[2, 5, 6, 2, 7, 0]);
        assert_eq!(b.mask_array().row(1).to_vec(), vec![1, 1, 0]);
        assert_eq!(b.positions(), vec![0, 1, 2, 0, 1, 0]);
    }

    #[test]
    fn empty_inputs_are_errors() {
        assert!(TokenBatch::new(&[], 0, PaddingSide::Right).is_err());
        assert!(TokenBatch::new(&[vec![2], vec![]], 0, PaddingSide::Right).is_err());
    }
}
