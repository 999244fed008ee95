//! MPNet (Song et al. 2020, arXiv:2004.09297), the encoder of all-mpnet-base-v2 and
//! multi-qa-mpnet-base-dot-v1.
//!
//! Mirrors transformers' `MPNetModel` (`src/transformers/models/mpnet/modeling_mpnet.py`):
//! RoBERTa-style positions and embeddings without token types, post-LayerNorm blocks,
//! and a T5-style relative position bias computed once from a bucket table shared by
//! every layer and added to the attention scores.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{Architecture, Classifier};
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{positions, Activation, AttentionMask, ClassificationHead, HeadPooling, LayerNorm, Linear};
use crate::weights::{Scope, Weights};

/// transformers computes buckets with 32 whatever `relative_attention_num_buckets`
/// says (`compute_position_bias(x)` keeps its default); matching outputs means
/// doing the same.
const BUCKETS: i64 = 32;
const MAX_DISTANCE: i64 = 128;
/// transformers' `MPNetEmbeddings` numbers positions after id 1 whatever
/// `pad_token_id` says (every released checkpoint uses 1 anyway).
const PADDING_IDX: i64 = 1;

/// The fields of an MPNet `config.json` this implementation reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Rows of the word embedding table.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Feed-forward activation.
    pub hidden_act: Activation,
    /// Rows of the position embedding table.
    pub max_position_embeddings: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Rows of the relative attention bias table.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(MPNetModel::load(weights, self, config_path)?))
    }

    /// `MPNetForSequenceClassification`: `[CLS]` → `classifier.dense` → tanh →
    /// `classifier.out_proj`, as RoBERTa's head.
    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let encoder = MPNetModel::load(weights, self, config_path)?;
        let h = self.hidden_size;
        let classifier = weights.pp_root("classifier");
        let dense = Linear::load(&classifier.pp("dense"), h, h);
        let out = Linear::load(&classifier.pp("out_proj"), h, labels);
        let head = ClassificationHead::new(HeadPooling::First, Some((dense, Activation::Tanh)), None, out)?;
        Ok(Classifier { encoder: Box::new(encoder), head })
    }
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_buckets() -> i64 {
    32
}

/// The MPNet encoder stack.
pub struct MPNetModel {
    word: Tensor,
    position: Tensor,
    embedding_norm: LayerNorm,
    relative_bias: Tensor,
    layers: Vec<Layer>,
    hidden_size: i64,
    heads: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit the embedding tables.
    config_path: PathBuf,
}

impl MPNetModel {
    /// Builds the model from its weights; missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, c: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        super::check_sizes(
            config_path,
            &[
                ("vocab_size", c.vocab_size),
                ("hidden_size", c.hidden_size),
                ("num_attention_heads", c.num_attention_heads),
                ("intermediate_size", c.intermediate_size),
                ("max_position_embeddings", c.max_position_embeddings),
                ("relative_attention_num_buckets", c.relative_attention_num_buckets),
            ],
            c.num_hidden_layers,
            (c.hidden_size, c.num_attention_heads),
        )?;
        super::check_eps(config_path, "layer_norm_eps", c.layer_norm_eps)?;
        if c.max_position_embeddings <= PADDING_IDX + 1 {
            return Err(EmbedError::InvalidFile {
                path: config_path.to_path_buf(),
                reason: format!(
                    "max_position_embeddings is {}; it must be more than {}, the positions MPNet numbers after the padding id",
                    c.max_position_embeddings,
                    PADDING_IDX + 1
                ),
            });
        }
        if c.relative_attention_num_buckets < BUCKETS {
            return Err(EmbedError::InvalidFile {
                path: config_path.to_path_buf(),
                reason: format!(
                    "relative_attention_num_buckets is {}; it must be at least {BUCKETS}, the buckets MPNet computes",
                    c.relative_attention_num_buckets
                ),
            });
        }
        weights.detect_prefix("embeddings.word_embeddings.weight");
        let root = weights.pp("");
        let emb = root.pp("embeddings");
        let encoder = root.pp("encoder");
        let layer = encoder.pp("layer");
        Ok(MPNetModel {
            word: emb.pp("word_embeddings").get("weight", &[c.vocab_size, c.hidden_size]),
            position: emb.pp("position_embeddings").get("weight", &[c.max_position_embeddings, c.hidden_size]),
            embedding_norm: LayerNorm::load(&emb.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps),
            relative_bias: encoder
                .pp("relative_attention_bias")
                .get("weight", &[c.relative_attention_num_buckets, c.num_attention_heads]),
            layers: (0..c.num_hidden_layers).map(|i| Layer::load(&layer.pp(i), c)).collect::<Result<_, _>>()?,
            hidden_size: c.hidden_size,
            heads: c.num_attention_heads,
            limits: EncoderLimits {
                vocab_size: c.vocab_size,
                type_vocab_size: None,
                max_positions: (c.max_position_embeddings - PADDING_IDX - 1) as usize,
            },
            config_path: config_path.to_path_buf(),
        })
    }

    /// `[1, heads, T, T]` bias from the bucketed relative distance `key - query`.
    fn position_bias(&self, seq: i64, dtype: Kind) -> Result<Tensor, EmbedError> {
        // Buckets on the CPU, as transformers computes them: a GPU `log` rounding one
        // ulp lower at an exact power of two would pick the bucket below.
        let relative = positions::relative_distances(seq)?; // [q, k]: key - query
        let buckets = positions::relative_bucket(&relative, BUCKETS, MAX_DISTANCE)?.f_to_device(self.word.device())?;
        let values = Tensor::f_embedding(&self.relative_bias, &buckets, -1, false, false)?; // [q, k, heads]
        Ok(values.f_permute([2, 0, 1])?.f_unsqueeze(0)?.f_to_kind(dtype)?)
    }
}

impl Encoder for MPNetModel {
    fn hidden_size(&self) -> i64 {
        self.hidden_size
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let (_, seq) = input.input_ids.size2()?;
        // Token types are not used by MPNet (`type_vocab_size: None`), so any value is fine there.
        super::check_input(&self.config_path, input, self.limits)?;
        let ids = positions::after_padding(&input.input_ids, &input.attention_mask, PADDING_IDX)?;
        let words = Tensor::f_embedding(&self.word, &input.input_ids, -1, false, false)?;
        let pos = Tensor::f_embedding(&self.position, &ids, -1, false, false)?;
        let mut hidden = self.embedding_norm.forward(&words.f_add(&pos)?)?;
        let bias = self.position_bias(seq, hidden.kind())?;
        let mask = AttentionMask::padding_and_bias(&input.attention_mask, &bias)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask, self.heads)?;
        }
        Ok(hidden)
    }
}

struct Layer {
    /// `q`, `k` and `v` fused into one product, as in BERT.
    qkv: Linear,
    o: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    activation: Activation,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(w: &Scope<'_>, c: &Config) -> Result<Self, EmbedError> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let attention = w.pp("attention");
        let attn = attention.pp("attn");
        Ok(Layer {
            qkv: Linear::fuse(&[
                Linear::load(&attn.pp("q"), h, h),
                Linear::load(&attn.pp("k"), h, h),
                Linear::load(&attn.pp("v"), h, h),
            ])?,
            o: Linear::load(&attn.pp("o"), h, h),
            attention_norm: LayerNorm::load(&attention.pp("LayerNorm"), h, c.layer_norm_eps),
            intermediate: Linear::load(&w.pp("intermediate").pp("dense"), h, i),
            activation: c.hidden_act,
            output: Linear::load(&w.pp("output").pp("dense"), i, h),
            output_norm: LayerNorm::load(&w.pp("output").pp("LayerNorm"), h, c.layer_norm_eps),
        })
    }

    fn forward(&self, xs: &Tensor, mask: &AttentionMask, heads: i64) -> Result<Tensor, EmbedError> {
        let context = mask.attend(&self.qkv.forward(xs)?, heads)?;
        let attended = self.attention_norm.forward(&self.o.forward_plus(&context, xs)?)?;
        let inner = self.intermediate.forward_activated(&attended, self.activation)?;
        self.output_norm.forward(&self.output.forward_plus(&inner, &attended)?)
    }
}
