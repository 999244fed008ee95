//! The sequence-classification head of a cross-encoder: what turns an encoder's
//! token states into one logit per label. Architectures differ only in which of
//! these steps they have and what their weights are called, so each builds a
//! [`ClassificationHead`] from its own checkpoint names:
//! - BERT: `[CLS]` → pooler dense → tanh → classifier;
//! - RoBERTa / XLM-R: `[CLS]` → dense → tanh → out_proj;
//! - DistilBERT: `[CLS]` → pre_classifier → ReLU → classifier;
//! - ModernBERT: `[CLS]` or mean → dense → activation → LayerNorm → classifier;
//! - DeBERTa-v2: `[CLS]` → pooler dense → activation → classifier.
//!
//! The head runs in f32 whatever the encoder's precision: it is one small product
//! per pair, and the scores are what a reranker compares.

use tch::{Kind, Tensor};

use super::{Activation, LayerNorm, Linear};
use crate::error::EmbedError;

/// Which token states the head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPooling {
    /// The first real token's state (`[CLS]`, `<s>`).
    First,
    /// The mean over real tokens (ModernBERT's `classifier_pooling: "mean"`).
    Mean,
}

/// Pooling, then an optional dense layer with its activation, an optional norm,
/// and the output layer.
pub struct ClassificationHead {
    pooling: HeadPooling,
    dense: Option<(Linear, Activation)>,
    norm: Option<LayerNorm>,
    out: Linear,
}

impl ClassificationHead {
    /// A head from its parts (tensors in any precision; converted to f32 here).
    pub fn new(
        pooling: HeadPooling,
        dense: Option<(Linear, Activation)>,
        norm: Option<LayerNorm>,
        out: Linear,
    ) -> Result<Self, EmbedError> {
        Ok(ClassificationHead {
            pooling,
            dense: dense.map(|(l, a)| Ok::<_, EmbedError>((l.to_kind(Kind::Float)?, a))).transpose()?,
            norm: norm.map(|n| n.to_kind(Kind::Float)).transpose()?,
            out: out.to_kind(Kind::Float)?,
        })
    }

    /// `[B, labels]` f32 logits from `[B, T, H]` token states and the `[B, T]`
    /// attention mask.
    pub fn forward(&self, hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor, EmbedError> {
        let hidden = hidden.f_to_kind(Kind::Float)?;
        let mut pooled = match self.pooling {
            HeadPooling::First => {
                // The first real token, wherever padding is: token 0 for a
                // right-padded batch (what transformers reads), and the same token
                // when a tokenizer pads on the left.
                let first = attention_mask.f_ne(0)?.f_to_kind(Kind::Int)?.f_argmax(1, false)?;
                let index = first.f_view([-1, 1, 1])?.f_expand([-1, 1, hidden.size()[2]], false)?;
                hidden.f_gather(1, &index, false)?.f_squeeze_dim(1)?
            }
            HeadPooling::Mean => {
                let mask = attention_mask.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?;
                let sum = hidden.f_mul(&mask)?.f_sum_dim_intlist(1, false, Kind::Float)?;
                sum.f_div(&mask.f_sum_dim_intlist(1, false, Kind::Float)?.f_clamp_min(1e-9)?)?
            }
        };
        if let Some((dense, activation)) = &self.dense {
            pooled = activation.forward(&dense.forward(&pooled)?)?;
        }
        if let Some(norm) = &self.norm {
            pooled = norm.forward(&pooled)?;
        }
        self.out.forward(&pooled)
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    #[test]
    fn each_step_is_applied_in_order() {
        let options = (Kind::Float, Device::Cpu);
        // Two texts of three tokens, the second with one padding token.
        let hidden =
            Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]).view([2, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0]).view([2, 3]);
        let sum = Linear::new(Tensor::ones([1, 2], options), Some(Tensor::from_slice(&[0.5f32])));
        let first = ClassificationHead::new(HeadPooling::First, None, None, sum.to_kind(Kind::Float).unwrap()).unwrap();
        let logits = Vec::<f32>::try_from(first.forward(&hidden, &mask).unwrap().view(-1)).unwrap();
        assert_eq!(logits, [1.0 + 2.0 + 0.5, 7.0 + 8.0 + 0.5]);
        let mean = ClassificationHead::new(HeadPooling::Mean, None, None, sum.to_kind(Kind::Float).unwrap()).unwrap();
        let logits = Vec::<f32>::try_from(mean.forward(&hidden, &mask).unwrap().view(-1)).unwrap();
        // Text 2 averages its two real tokens only: (7 + 9) / 2 + (8 + 10) / 2.
        assert_eq!(logits, [3.0 + 4.0 + 0.5, 8.0 + 9.0 + 0.5]);
        // Padded on the left, the first real token is read, not the padding.
        let left =
            Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 7.0, 8.0, 9.0, 10.0]).view([2, 3, 2]);
        let left_mask = Tensor::from_slice(&[1i64, 1, 1, 0, 1, 1]).view([2, 3]);
        let logits = Vec::<f32>::try_from(first.forward(&left, &left_mask).unwrap().view(-1)).unwrap();
        assert_eq!(logits, [1.0 + 2.0 + 0.5, 7.0 + 8.0 + 0.5]);
        let negate = Linear::new(Tensor::from_slice(&[-1.0f32, 0.0, 0.0, -1.0]).view([2, 2]), None);
        let relu = ClassificationHead::new(HeadPooling::First, Some((negate, Activation::Relu)), None, sum).unwrap();
        let logits = Vec::<f32>::try_from(relu.forward(&hidden, &mask).unwrap().view(-1)).unwrap();
        assert_eq!(logits, [0.5, 0.5]);
    }
}
