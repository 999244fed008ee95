//! BERT (Devlin et al. 2018, arXiv:1810.04805), the encoder of all-MiniLM, e5 and bge.
//!
//! Mirrors transformers' `BertModel`
//! (`src/transformers/models/bert/modeling_bert.py`): learned absolute positions,
//! token types, post-LayerNorm residual blocks. Embedding models skip the pooler
//! (sentence-transformers pools the token embeddings itself); cross-encoders
//! (`BertForSequenceClassification`) run it in their head: `[CLS]` → pooler dense →
//! tanh → classifier.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::Tensor;

use super::{Architecture, Classifier};
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{positions, Activation, AttentionMask, ClassificationHead, HeadPooling, LayerNorm, Linear};
use crate::weights::{Scope, Weights};

/// The fields of a BERT `config.json` this implementation reads.
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
    /// Rows of the token type table; some distilled checkpoints omit the key.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is implemented (every documented model uses it).
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Id of the padding token; RoBERTa-style models number positions after it.
    #[serde(default)]
    pub pad_token_id: i64,
}

/// How position ids are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// `0, 1, 2, ...` from each text's first token (BERT).
    Absolute,
    /// `pad + 1, pad + 2, ...` for real tokens and `pad` for padding (RoBERTa, XLM-R,
    /// fairseq's `make_positions`).
    AfterPadding(i64),
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(BertModel::load(weights, self, config_path)?))
    }

    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let encoder = BertModel::load(weights, self, config_path)?;
        let h = self.hidden_size;
        let pooler = Linear::load(&weights.pp("pooler").pp("dense"), h, h);
        let out = Linear::load(&weights.pp_root("classifier"), h, labels);
        let head = ClassificationHead::new(HeadPooling::First, Some((pooler, Activation::Tanh)), None, out)?;
        Ok(Classifier { encoder: Box::new(encoder), head })
    }
}

fn default_type_vocab_size() -> i64 {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// The BERT encoder stack.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden_size: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit the embedding tables.
    config_path: PathBuf,
}

impl BertModel {
    /// Builds the model from its weights; missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        Self::load_with_positions(weights, config, config_path, Positions::Absolute)
    }

    /// Like [`BertModel::load`], with RoBERTa-style position ids when asked.
    pub fn load_with_positions(
        weights: &mut Weights,
        config: &Config,
        config_path: &Path,
        positions: Positions,
    ) -> Result<Self, EmbedError> {
        if let Some(kind) = config.position_embedding_type.as_deref().filter(|k| *k != "absolute") {
            return Err(EmbedError::InvalidFile {
                path: config_path.to_path_buf(),
                reason: format!("position_embedding_type {kind:?} is not supported (only \"absolute\")"),
            });
        }
        super::check_sizes(
            config_path,
            &[
                ("vocab_size", config.vocab_size),
                ("hidden_size", config.hidden_size),
                ("num_attention_heads", config.num_attention_heads),
                ("intermediate_size", config.intermediate_size),
                ("max_position_embeddings", config.max_position_embeddings),
                ("type_vocab_size", config.type_vocab_size),
            ],
            config.num_hidden_layers,
            (config.hidden_size, config.num_attention_heads),
        )?;
        super::check_eps(config_path, "layer_norm_eps", config.layer_norm_eps)?;
        let max_positions = match positions {
            Positions::Absolute => config.max_position_embeddings,
            Positions::AfterPadding(pad) => config.max_position_embeddings - pad - 1,
        };
        weights.detect_prefix("embeddings.word_embeddings.weight");
        let root = weights.pp("");
        let embeddings = Embeddings::load(&root.pp("embeddings"), config, positions);
        let encoder = root.pp("encoder").pp("layer");
        let layers =
            (0..config.num_hidden_layers).map(|i| Layer::load(&encoder.pp(i), config)).collect::<Result<_, _>>()?;
        Ok(BertModel {
            embeddings,
            layers,
            hidden_size: config.hidden_size,
            limits: EncoderLimits {
                vocab_size: config.vocab_size,
                type_vocab_size: Some(config.type_vocab_size),
                // Positive: checked against pad_token_id by the RoBERTa loader.
                max_positions: max_positions.max(0) as usize,
            },
            config_path: config_path.to_path_buf(),
        })
    }
}

impl Encoder for BertModel {
    fn hidden_size(&self) -> i64 {
        self.hidden_size
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        super::check_input(&self.config_path, input, self.limits)?;
        let mask = AttentionMask::padding(&input.attention_mask)?;
        let mut hidden = self.embeddings.forward(input)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(hidden)
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    positions: Positions,
}

impl Embeddings {
    fn load(w: &Scope<'_>, c: &Config, positions: Positions) -> Self {
        Embeddings {
            word: w.pp("word_embeddings").get("weight", &[c.vocab_size, c.hidden_size]),
            position: w.pp("position_embeddings").get("weight", &[c.max_position_embeddings, c.hidden_size]),
            token_type: w.pp("token_type_embeddings").get("weight", &[c.type_vocab_size, c.hidden_size]),
            norm: LayerNorm::load(&w.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps),
            positions,
        }
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let (input_ids, token_type_ids) = (&input.input_ids, &input.token_type_ids);
        let positions = match self.positions {
            Positions::Absolute => positions::from_first_token(&input.attention_mask)?,
            Positions::AfterPadding(pad) => positions::after_padding(input_ids, &input.attention_mask, pad)?,
        };
        let words = Tensor::f_embedding(&self.word, input_ids, -1, false, false)?;
        let types = Tensor::f_embedding(&self.token_type, token_type_ids, -1, false, false)?;
        let pos = Tensor::f_embedding(&self.position, &positions, -1, false, false)?;
        self.norm.forward(&words.f_add(&types)?.f_add(&pos)?)
    }
}

struct Layer {
    /// Query, key and value projections fused into one `[3H, H]` product: one
    /// larger matrix multiplication runs closer to the CPU's peak than three small ones.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    activation: Activation,
    output: Linear,
    output_norm: LayerNorm,
    heads: i64,
}

impl Layer {
    fn load(w: &Scope<'_>, c: &Config) -> Result<Self, EmbedError> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let attention = w.pp("attention");
        let this = attention.pp("self");
        Ok(Layer {
            qkv: Linear::fuse(&[
                Linear::load(&this.pp("query"), h, h),
                Linear::load(&this.pp("key"), h, h),
                Linear::load(&this.pp("value"), h, h),
            ])?,
            attention_out: Linear::load(&attention.pp("output").pp("dense"), h, h),
            attention_norm: LayerNorm::load(&attention.pp("output").pp("LayerNorm"), h, c.layer_norm_eps),
            intermediate: Linear::load(&w.pp("intermediate").pp("dense"), h, i),
            activation: c.hidden_act,
            output: Linear::load(&w.pp("output").pp("dense"), i, h),
            output_norm: LayerNorm::load(&w.pp("output").pp("LayerNorm"), h, c.layer_norm_eps),
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &AttentionMask) -> Result<Tensor, EmbedError> {
        let context = mask.attend(&self.qkv.forward(xs)?, self.heads)?;
        let attended = self.attention_norm.forward(&self.attention_out.forward_plus(&context, xs)?)?;
        let inner = self.intermediate.forward_activated(&attended, self.activation)?;
        self.output_norm.forward(&self.output.forward_plus(&inner, &attended)?)
    }
}
