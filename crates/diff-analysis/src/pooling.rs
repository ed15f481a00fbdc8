//! Pooling: one vector per prompt from the per-token values of its rows.
//!
//! Which tokens are pooled changes the results (REFERENCE.md section 3): the `<bos>` row is an
//! attention sink with a huge norm, and about 40% of chat-specific latents fire mainly on
//! chat-template tokens. Every result records the pooling it used.

use std::fmt;
use std::str::FromStr;

use model_pair::TokenMeta;
use ndarray::{Array1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// How a prompt's rows become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the content tokens: `<bos>`, padding and chat-template tokens excluded (default).
    #[default]
    MeanContent,
    /// Maximum over the content tokens.
    Max,
    /// The prompt's last token (in chat-template mode the newline after `model`, where the chat
    /// model is about to answer; in raw mode the last content token).
    LastToken,
    /// Mean over the chat-template tokens only (`<start_of_turn>`, role, newlines, `<end_of_turn>`);
    /// needs chat-templated prompts.
    TemplateOnly,
    /// Mean over every token including `<bos>` and template tokens: the seed notebook's
    /// `latents.mean(dim=(0, 1))`, kept for comparison.
    MeanAll,
}

impl Pooling {
    /// Every pooling, in documentation order.
    pub const ALL: [Pooling; 5] = [
        Pooling::MeanContent,
        Pooling::Max,
        Pooling::LastToken,
        Pooling::TemplateOnly,
        Pooling::MeanAll,
    ];

    /// The name used by `--pooling`: `mean`, `max`, `last`, `template`, `mean-all`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::MeanContent => "mean",
            Pooling::Max => "max",
            Pooling::LastToken => "last",
            Pooling::TemplateOnly => "template",
            Pooling::MeanAll => "mean-all",
        }
    }

    /// A sentence for reports.
    pub fn description(self) -> &'static str {
        match self {
            Pooling::MeanContent => {
                "mean over content tokens (BOS, padding and chat-template tokens excluded)"
            }
            Pooling::Max => "max over content tokens (BOS, padding and chat-template tokens excluded)",
            Pooling::LastToken => "the last token of the prompt",
            Pooling::TemplateOnly => "mean over chat-template tokens only",
            Pooling::MeanAll => {
                "mean over every token including BOS and template tokens (the seed notebook's pooling)"
            }
        }
    }

    /// Whether this pooling only makes sense on chat-templated prompts.
    pub fn requires_chat_template(self) -> bool {
        self == Pooling::TemplateOnly
    }

    /// Whether a row takes part in the pooling (padding never does; for [`Pooling::LastToken`] use
    /// [`selected_rows`](Self::selected_rows)).
    fn includes(self, t: &TokenMeta) -> bool {
        match self {
            Pooling::MeanContent | Pooling::Max => t.is_content(),
            Pooling::TemplateOnly => t.is_template && !t.is_pad && !t.is_bos,
            Pooling::MeanAll | Pooling::LastToken => !t.is_pad,
        }
    }

    /// The rows of one prompt (`tokens`, in position order) that the pooling reads.
    pub fn selected_rows(self, tokens: &[TokenMeta]) -> Vec<usize> {
        if self == Pooling::LastToken {
            return tokens.iter().rposition(|t| !t.is_pad).into_iter().collect();
        }
        tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| self.includes(t))
            .map(|(i, _)| i)
            .collect()
    }

    /// Pools `values [rows, features]` of one prompt whose rows are described by `tokens`.
    ///
    /// # Errors
    /// [`AnalysisError::Shape`] when `values` and `tokens` disagree, [`AnalysisError::EmptyPooling`]
    /// when no row is selected (`prompt` names the prompt in the message).
    pub fn pool(
        self,
        values: ArrayView2<'_, f32>,
        tokens: &[TokenMeta],
        prompt: &str,
    ) -> Result<Array1<f32>> {
        if values.nrows() != tokens.len() {
            return Err(AnalysisError::Shape {
                what: "pooled rows".into(),
                expected: format!("{} rows (one per token)", tokens.len()),
                actual: format!("{:?}", values.dim()),
            });
        }
        let rows = self.selected_rows(tokens);
        if rows.is_empty() {
            let reason = match self {
                Pooling::TemplateOnly => {
                    "it has no chat-template token (raw prompts have none: use the chat template)"
                }
                _ => "it has no content token",
            };
            return Err(AnalysisError::EmptyPooling {
                pooling: self.name().into(),
                prompt: shorten(prompt, 80),
                reason: reason.into(),
            });
        }
        let selected = values.select(Axis(0), &rows);
        Ok(match self {
            Pooling::Max => selected.fold_axis(Axis(0), f32::NEG_INFINITY, |a, b| a.max(*b)),
            _ => {
                let mut sum = Array1::<f64>::zeros(values.ncols());
                for row in selected.rows() {
                    sum.zip_mut_with(&row, |s, v| *s += f64::from(*v));
                }
                sum.mapv(|s| (s / rows.len() as f64) as f32)
            }
        })
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pooling {
    type Err = AnalysisError;

    fn from_str(s: &str) -> Result<Self> {
        let key = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match key.as_str() {
            "mean" | "mean-content" => Pooling::MeanContent,
            "max" => Pooling::Max,
            "last" | "last-token" => Pooling::LastToken,
            "template" | "template-only" => Pooling::TemplateOnly,
            "mean-all" => Pooling::MeanAll,
            _ => {
                return Err(AnalysisError::option(
                    "--pooling",
                    format!(
                        "unknown pooling `{s}`: expected mean, max, last, template or mean-all"
                    ),
                ))
            }
        })
    }
}

/// `text` cut to at most `max` characters (with an ellipsis), newlines shown as spaces.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn meta(position: usize, is_bos: bool, is_template: bool) -> TokenMeta {
        TokenMeta {
            prompt: 0,
            position,
            token_id: position as u32,
            is_bos,
            is_pad: false,
            is_template,
            is_assistant: false,
        }
    }

    /// `<bos> <start_of_turn> user \n Hi there <end_of_turn> \n <start_of_turn> model \n`
    fn chat_prompt() -> Vec<TokenMeta> {
        let template = [
            false, true, true, true, false, false, true, true, true, true, true,
        ];
        template
            .iter()
            .enumerate()
            .map(|(i, t)| meta(i, i == 0, *t))
            .collect()
    }

    #[test]
    fn each_pooling_reads_its_rows() {
        let tokens = chat_prompt();
        let values = ndarray::Array2::from_shape_fn((11, 1), |(i, _)| i as f32);
        let pool = |p: Pooling| p.pool(values.view(), &tokens, "x").unwrap()[0];
        assert_eq!(pool(Pooling::MeanContent), 4.5);
        assert_eq!(pool(Pooling::Max), 5.0);
        assert_eq!(pool(Pooling::LastToken), 10.0);
        assert_eq!(
            pool(Pooling::TemplateOnly),
            (1 + 2 + 3 + 6 + 7 + 8 + 9 + 10) as f32 / 8.0
        );
        assert_eq!(pool(Pooling::MeanAll), 5.0);
    }

    #[test]
    fn raw_prompts_have_no_template_rows() {
        let tokens = vec![meta(0, true, false), meta(1, false, false)];
        let values = array![[9.0f32], [1.0]];
        let err = Pooling::TemplateOnly
            .pool(values.view(), &tokens, "Hello")
            .unwrap_err();
        assert!(err.to_string().contains("no chat-template token"), "{err}");
        let only_bos = &tokens[..1];
        assert!(Pooling::MeanContent
            .pool(values.slice(ndarray::s![..1, ..]), only_bos, "")
            .is_err());
    }

    #[test]
    fn names_round_trip() {
        for p in Pooling::ALL {
            assert_eq!(p.name().parse::<Pooling>().unwrap(), p);
        }
        assert!("median".parse::<Pooling>().is_err());
    }
}
