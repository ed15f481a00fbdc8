//! The Activation Difference Lens beside the hunt (`day1 --no-crosscoder`): the persona dataset's
//! contrasts as prompt pairs, and one call that computes the corpus and contrast differences at the hook's
//! layer and reads them ([`activation_diff_lens::summarise`]).

use activation_diff_lens::output::AdlSummary;
use activation_diff_lens::{
    accumulate, contrast_difference, summarise, AdlModels, AdlSpec, AdlState, ContrastDifference,
    ContrastPrompts, ContrastSpec, NamedContrast, ReadOptions, SteeringRequest,
};
use model_pair::{PromptInput, TokenizationMode};
use persona_dataset::{Contrast, PersonaDataset};

use crate::error::Result;
use crate::extract::prompt_input;

/// The prompt pairs of `contrast` in `dataset`, positive side first (text prompts stay text: the
/// contrast spec's tokenization decides the template; conversations are flattened in raw mode).
pub fn contrast_prompts(
    dataset: &PersonaDataset,
    contrast: &Contrast,
    mode: TokenizationMode,
) -> Result<Vec<ContrastPrompts>> {
    Ok(contrast
        .pairs(dataset)?
        .into_iter()
        .map(|pair| ContrastPrompts {
            positive: prompt_input(pair.positive, mode),
            negative: prompt_input(pair.negative, mode),
        })
        .collect())
}

/// What `day1 --no-crosscoder` adds: the ADL at the hook's layer (options other than the layers).
#[derive(Debug, Clone, PartialEq)]
pub struct AdlOptions {
    /// Texts unrelated to the fine-tune for the corpus difference, under a name (none: contrasts only).
    pub corpus: Option<(String, Vec<PromptInput>)>,
    /// Use at most this many corpus texts.
    pub max_texts: Option<usize>,
    /// Positions after `<bos>` (corpus) and from the cue (contrasts).
    pub k: usize,
    /// How the difference is read.
    pub read: ReadOptions,
    /// Steering with the first mean difference found.
    pub steering: SteeringRequest,
}

impl Default for AdlOptions {
    /// No corpus, every text when one is given, `k = 5`, the default reading, no steering.
    fn default() -> Self {
        AdlOptions {
            corpus: None,
            max_texts: None,
            k: 5,
            read: ReadOptions::default(),
            steering: SteeringRequest {
                prompts: Vec::new(),
                max_strength: 2.0,
                max_new_tokens: 24,
            },
        }
    }
}

/// Computes the corpus difference (when a corpus is given) and every contrast's difference at `layers`
/// (steering uses the first), and reads them. `with.models` need their unembedding (and the chat model whole for the Patchscope and
/// steering).
pub fn run_adl(
    with: AdlModels<'_>,
    dataset: &PersonaDataset,
    contrasts: &[Contrast],
    layers: &[usize],
    tokenization: TokenizationMode,
    options: &AdlOptions,
    progress: bool,
) -> Result<AdlSummary> {
    let corpus = match &options.corpus {
        Some((name, texts)) => {
            let mut spec = AdlSpec::new(layers.to_vec());
            spec.k = options.k;
            spec.max_texts = options.max_texts;
            let mut state = AdlState::new(spec, with.models[1].config().hidden_size);
            accumulate(
                with.models,
                with.tokenizer,
                texts,
                &mut state,
                &mut |_| Ok(()),
                progress,
            )?;
            Some((name.as_str(), state.result()?))
        }
        None => None,
    };
    let mut spec = ContrastSpec::new(layers.to_vec());
    spec.k = options.k;
    spec.tokenization = tokenization;
    let bar = if progress {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let differences = contrasts
        .iter()
        .map(|c| {
            let pairs = contrast_prompts(dataset, c, tokenization)?;
            Ok(contrast_difference(
                with.models,
                with.tokenizer,
                &pairs,
                &spec,
                &bar,
            )?)
        })
        .collect::<Result<Vec<ContrastDifference>>>()?;
    bar.finish_and_clear();
    let named: Vec<NamedContrast<'_>> = contrasts
        .iter()
        .zip(&differences)
        .map(|(c, d)| NamedContrast {
            category: &c.category,
            sides: [&c.positive, &c.negative],
            difference: d,
        })
        .collect();
    Ok(summarise(
        with,
        corpus.as_ref().map(|(n, d)| (*n, d)),
        &named,
        &options.read,
        &options.steering,
    )?)
}
