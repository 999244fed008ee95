//! DistilBERT (Sanh et al. 2019, arXiv:1910.01108), the encoder of
//! msmarco-distilbert-*, multi-qa-distilbert-* and DistilBERT cross-encoders.
//!
//! Mirrors transformers' `DistilBertModel`
//! (`src/transformers/models/distilbert/modeling_distilbert.py`): BERT's
//! post-LayerNorm blocks under other names, without token types, absolute
//! positions, and every LayerNorm at eps 1e-12 (fixed in the Python code; no
//! config key sets it). `sinusoidal_pos_embds` changes only how the position table
//! is initialized: the table is a stored weight either way, so it is read like any
//! other. `DistilBertForSequenceClassification` adds the head: the first token's
//! state → `pre_classifier` → ReLU → `classifier`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::Tensor;

use super::{Architecture, Classifier};
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{positions, Activation, AttentionMask, ClassificationHead, HeadPooling, LayerNorm, Linear};
use crate::weights::{Scope, Weights};

/// The epsilon of every DistilBERT LayerNorm (`nn.LayerNorm(dim, eps=1e-12)`).
const LAYER_NORM_EPS: f64 = 1e-12;

/// More blocks than this is not a model but a hostile config (as in `check_sizes`).
const MAX_LAYERS: usize = 256;

/// The fields of a DistilBERT `config.json` this implementation reads (its own
/// names: `dim` is BERT's `hidden_size`, `hidden_dim` its `intermediate_size`).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Rows of the word embedding table.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub dim: i64,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Attention heads per block.
    pub n_heads: i64,
    /// Width of the feed-forward layer.
    pub hidden_dim: i64,
    /// Feed-forward activation (transformers' default is `gelu`).
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Rows of the position embedding table.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
}

fn default_activation() -> Activation {
    Activation::Gelu
}

fn default_max_position_embeddings() -> i64 {
    512
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(DistilBertModel::load(weights, self, config_path)?))
    }

    /// `DistilBertForSequenceClassification`: first token → `pre_classifier` →
    /// ReLU → `classifier` (both beside the `distilbert.` base model).
    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let encoder = DistilBertModel::load(weights, self, config_path)?;
        let dim = self.dim;
        let pre = Linear::load(&weights.pp_root("pre_classifier"), dim, dim);
        let out = Linear::load(&weights.pp_root("classifier"), dim, labels);
        let head = ClassificationHead::new(HeadPooling::First, Some((pre, Activation::Relu)), None, out)?;
        Ok(Classifier { encoder: Box::new(encoder), head })
    }
}

impl Config {
    /// Refuses sizes no DistilBERT has before anything is allocated from them,
    /// naming DistilBERT's own keys.
    fn validate(&self, config_path: &Path) -> Result<(), EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: config_path.to_path_buf(), reason };
        if self.n_layers == 0 || self.n_layers > MAX_LAYERS {
            return Err(invalid(format!("n_layers is {}; it must be between 1 and {MAX_LAYERS}", self.n_layers)));
        }
        if self.n_heads < 1 || self.dim % self.n_heads != 0 {
            return Err(invalid(format!(
                "dim {} is not a multiple of n_heads {}; each attention head must get an equal share",
                self.dim, self.n_heads
            )));
        }
        super::check_sizes(
            config_path,
            &[
                ("vocab_size", self.vocab_size),
                ("dim", self.dim),
                ("n_heads", self.n_heads),
                ("hidden_dim", self.hidden_dim),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            self.n_layers,
            (self.dim, self.n_heads),
        )
    }
}

/// The DistilBERT encoder stack.
pub struct DistilBertModel {
    word: Tensor,
    position: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    dim: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit the embedding tables.
    config_path: PathBuf,
}

impl DistilBertModel {
    /// Builds the model from its weights; missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        config.validate(config_path)?;
        // A classifier checkpoint has `distilbert.` before the base model's names.
        weights.detect_prefix("embeddings.word_embeddings.weight");
        let root = weights.pp("");
        let embeddings = root.pp("embeddings");
        let (dim, positions) = (config.dim, config.max_position_embeddings);
        let blocks = root.pp("transformer").pp("layer");
        let layers = (0..config.n_layers).map(|i| Layer::load(&blocks.pp(i), config)).collect::<Result<_, _>>()?;
        Ok(DistilBertModel {
            word: embeddings.pp("word_embeddings").get("weight", &[config.vocab_size, dim]),
            position: embeddings.pp("position_embeddings").get("weight", &[positions, dim]),
            norm: LayerNorm::load(&embeddings.pp("LayerNorm"), dim, LAYER_NORM_EPS),
            layers,
            dim,
            limits: EncoderLimits {
                vocab_size: config.vocab_size,
                // No token type table: the ids are ignored (the tokenizer sends none).
                type_vocab_size: None,
                // Positive: checked by `validate`.
                max_positions: positions as usize,
            },
            config_path: config_path.to_path_buf(),
        })
    }
}

impl Encoder for DistilBertModel {
    fn hidden_size(&self) -> i64 {
        self.dim
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        super::check_input(&self.config_path, input, self.limits)?;
        let mask = AttentionMask::padding(&input.attention_mask)?;
        // Counted from each text's first token, so a left-padded text gets the ids a
        // right-padded one gets (transformers numbers the padded row from 0; the two
        // agree on right padding, which DistilBERT tokenizers use).
        let ids = positions::from_first_token(&input.attention_mask)?;
        let words = Tensor::f_embedding(&self.word, &input.input_ids, -1, false, false)?;
        let pos = Tensor::f_embedding(&self.position, &ids, -1, false, false)?;
        let mut hidden = self.norm.forward(&words.f_add(&pos)?)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(hidden)
    }
}

/// One `TransformerBlock`: attention, add & norm, feed-forward, add & norm.
struct Layer {
    /// `q_lin`, `k_lin` and `v_lin` fused into one `[3·dim, dim]` product, the
    /// layout our attention kernel reads (and one larger product runs faster).
    qkv: Linear,
    out: Linear,
    attention_norm: LayerNorm,
    lin1: Linear,
    activation: Activation,
    lin2: Linear,
    output_norm: LayerNorm,
    heads: i64,
}

impl Layer {
    fn load(w: &Scope<'_>, c: &Config) -> Result<Self, EmbedError> {
        let (d, f) = (c.dim, c.hidden_dim);
        let attention = w.pp("attention");
        let ffn = w.pp("ffn");
        Ok(Layer {
            qkv: Linear::fuse(&[
                Linear::load(&attention.pp("q_lin"), d, d),
                Linear::load(&attention.pp("k_lin"), d, d),
                Linear::load(&attention.pp("v_lin"), d, d),
            ])?,
            out: Linear::load(&attention.pp("out_lin"), d, d),
            attention_norm: LayerNorm::load(&w.pp("sa_layer_norm"), d, LAYER_NORM_EPS),
            lin1: Linear::load(&ffn.pp("lin1"), d, f),
            activation: c.activation,
            lin2: Linear::load(&ffn.pp("lin2"), f, d),
            output_norm: LayerNorm::load(&w.pp("output_layer_norm"), d, LAYER_NORM_EPS),
            heads: c.n_heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &AttentionMask) -> Result<Tensor, EmbedError> {
        let context = mask.attend(&self.qkv.forward(xs)?, self.heads)?;
        let attended = self.attention_norm.forward(&self.out.forward_plus(&context, xs)?)?;
        let inner = self.lin1.forward_activated(&attended, self.activation)?;
        self.output_norm.forward(&self.lin2.forward_plus(&inner, &attended)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tch::{Device, Kind};

    use super::super::load_encoder;
    use super::super::tests::model_files::{write_model, Layout};
    use super::*;

    fn config() -> Value {
        json!({
            "model_type": "distilbert", "vocab_size": 20, "dim": 8, "n_layers": 2, "n_heads": 2,
            "hidden_dim": 16, "activation": "gelu", "max_position_embeddings": 16, "pad_token_id": 0,
            "sinusoidal_pos_embds": false, "seq_classif_dropout": 0.2
        })
    }

    /// Random tensors named and shaped as `config` describes.
    fn tensors(config: &Value) -> Vec<(String, Tensor)> {
        let n = |k: &str| config[k].as_i64().unwrap();
        let (d, f) = (n("dim"), n("hidden_dim"));
        let mut shapes: Vec<(String, Vec<i64>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![n("vocab_size"), d]),
            ("embeddings.position_embeddings.weight".into(), vec![n("max_position_embeddings"), d]),
        ];
        let mut add = |name: String, out: i64, inp: Option<i64>| {
            match inp {
                Some(inp) => shapes.push((format!("{name}.weight"), vec![out, inp])),
                None => shapes.push((format!("{name}.weight"), vec![out])),
            }
            shapes.push((format!("{name}.bias"), vec![out]));
        };
        add("embeddings.LayerNorm".into(), d, None);
        for l in 0..n("n_layers") {
            let p = format!("transformer.layer.{l}");
            for x in ["q_lin", "k_lin", "v_lin", "out_lin"] {
                add(format!("{p}.attention.{x}"), d, Some(d));
            }
            add(format!("{p}.sa_layer_norm"), d, None);
            add(format!("{p}.ffn.lin1"), f, Some(d));
            add(format!("{p}.ffn.lin2"), d, Some(f));
            add(format!("{p}.output_layer_norm"), d, None);
        }
        shapes.into_iter().map(|(name, shape)| (name, Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.5)).collect()
    }

    fn load(config: &Value, weights_of: &Value) -> Result<Box<dyn Encoder>, EmbedError> {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), config, &tensors(weights_of), Layout::Safetensors);
        load_encoder(dir.path(), Kind::Float, Device::Cpu)
    }

    fn with(mut config: Value, key: &str, value: Value) -> Value {
        config[key] = value;
        config
    }

    fn error(result: Result<Box<dyn Encoder>, EmbedError>) -> String {
        result.err().expect("loading must fail").to_string()
    }

    #[test]
    fn bad_sizes_are_refused_naming_distilberts_keys() {
        let base = config();
        for (key, value, expected) in [
            ("n_heads", json!(3), "dim 8 is not a multiple of n_heads 3"),
            ("n_heads", json!(0), "dim 8 is not a multiple of n_heads 0"),
            ("n_layers", json!(0), "n_layers is 0; it must be between 1 and 256"),
            ("n_layers", json!(100_000), "n_layers is 100000; it must be between 1 and 256"),
            ("hidden_dim", json!(-4), "hidden_dim is -4; it must be between 1 and"),
            ("dim", json!(0), "dim is 0; it must be between 1 and"),
            ("vocab_size", json!(0), "vocab_size is 0; it must be between 1 and"),
            ("max_position_embeddings", json!(1_i64 << 40), "max_position_embeddings is 1099511627776"),
        ] {
            let err = error(load(&with(base.clone(), key, value), &base));
            assert!(err.contains(expected) && err.contains("config.json"), "{key}: {err}");
        }
        // Plausible sizes that disagree with the checkpoint name the tensor.
        let err = error(load(&with(base.clone(), "hidden_dim", json!(1 << 20)), &base));
        assert!(err.contains("transformer.layer.0.ffn.lin1.weight: expected [1048576, 8], found [16, 8]"), "{err}");
        let err = error(load(&with(base.clone(), "activation", json!("swiglu")), &base));
        assert!(err.contains("not a valid distilbert config") && err.contains("swiglu"), "{err}");
    }

    #[test]
    fn loads_with_or_without_the_classifier_prefix_and_checks_ids() {
        let base = config();
        let dir = tempfile::tempdir().unwrap();
        let input = |ids: &[i64]| EncoderInput {
            input_ids: Tensor::from_slice(ids).view([1, ids.len() as i64]),
            attention_mask: Tensor::ones([1, ids.len() as i64], (Kind::Int64, Device::Cpu)),
            token_type_ids: Tensor::zeros([1, ids.len() as i64], (Kind::Int64, Device::Cpu)),
        };
        // The same tensors twice (tests share libtorch's random generator, so they
        // are drawn once), under the base model's names and as a classifier has them.
        let weights = tensors(&base);
        let mut outputs = Vec::new();
        for prefix in ["", "distilbert."] {
            let named: Vec<_> = weights.iter().map(|(n, t)| (format!("{prefix}{n}"), t.shallow_clone())).collect();
            write_model(dir.path(), &base, &named, Layout::Safetensors);
            let encoder = load_encoder(dir.path(), Kind::Float, Device::Cpu).unwrap();
            assert_eq!(encoder.limits(), EncoderLimits { vocab_size: 20, type_vocab_size: None, max_positions: 16 });
            outputs.push(encoder.forward(&input(&[1, 5, 19, 2])).unwrap());
            let err = encoder.forward(&input(&[1, 20])).unwrap_err().to_string();
            assert!(err.contains("token id 20 is not between 0 and vocab_size - 1 = 19"), "{err}");
            let err = encoder.forward(&input(&[3; 17])).unwrap_err().to_string();
            assert!(err.contains("a sequence of 17 tokens needs more than the 16 positions"), "{err}");
        }
        assert_eq!(outputs[0].size(), [1, 4, 8]);
        assert!(outputs[0].f_equal(&outputs[1]).unwrap());
    }
}
