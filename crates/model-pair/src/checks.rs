//! Whether two models can be paired at a hook: one tokenizer, one width, one vocabulary, deep enough.

use gemma_model::{Gemma2Config, GemmaTokenizer, HookPoint, LanguageModel};

use crate::error::{PairError, Result};
use crate::{BASE, CHAT};

/// Checks that two models (with their tokenizers) can be paired at `hook`: identical tokenizers,
/// equal width and vocabulary, both loaded at least as deep as the hook.
pub(crate) fn check_pair(
    base_tok: &GemmaTokenizer,
    chat_tok: &GemmaTokenizer,
    models: [&dyn LanguageModel; 2],
    hook: HookPoint,
) -> Result<()> {
    if !base_tok.same_as(chat_tok) {
        return Err(PairError::Mismatch {
            reason: format!(
                "their tokenizers differ ({} vs {}); the same token ids must go through both",
                base_tok.path().display(),
                chat_tok.path().display()
            ),
        });
    }
    check_configs(models[BASE].config(), models[CHAT].config(), hook)?;
    for (i, m) in models.into_iter().enumerate() {
        check_depth(m, i, hook)?;
    }
    Ok(())
}

/// Checks two models' configs (`config.json` alone, before any weight is read): equal width and
/// vocabulary, and enough layers for `hook` in both.
///
/// # Errors
/// [`PairError::Mismatch`] naming both values or the model short of layers.
pub fn check_configs(base: &Gemma2Config, chat: &Gemma2Config, hook: HookPoint) -> Result<()> {
    if base.hidden_size != chat.hidden_size || base.vocab_size != chat.vocab_size {
        return Err(PairError::Mismatch {
            reason: format!(
                "base has d_model {} and vocab {}, chat has d_model {} and vocab {}",
                base.hidden_size, base.vocab_size, chat.hidden_size, chat.vocab_size
            ),
        });
    }
    for (name, c) in [("base", base), ("chat", chat)] {
        if hook.layers_needed() > c.num_hidden_layers {
            return Err(PairError::Mismatch {
                reason: format!(
                    "hook {hook} needs {} layers, but the {name} model has {} (layers 0..={})",
                    hook.layers_needed(),
                    c.num_hidden_layers,
                    c.num_hidden_layers.saturating_sub(1)
                ),
            });
        }
    }
    Ok(())
}

/// Checks that model `i` is loaded at least as deep as `hook`.
pub(crate) fn check_depth(model: &dyn LanguageModel, i: usize, hook: HookPoint) -> Result<()> {
    if hook.layers_needed() > model.loaded_layers() {
        return Err(PairError::Mismatch {
            reason: format!(
                "hook {hook} needs {} layers, but model {i} ({}) has {} loaded",
                hook.layers_needed(),
                model.name(),
                model.loaded_layers()
            ),
        });
    }
    Ok(())
}
