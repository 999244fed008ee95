//! ModernBERT (Warner et al. 2024, arXiv:2412.13663), the encoder of
//! gte-modernbert-base and modernbert-embed-base, and of rerankers such as
//! gte-reranker-modernbert-base.
//!
//! Mirrors transformers' `ModernBertModel` and `ModernBertForSequenceClassification`
//! (`src/transformers/models/modernbert/modeling_modernbert.py`):
//! - embeddings: the token table, then a LayerNorm; no position table, positions
//!   enter through rotary embeddings on queries and keys;
//! - pre-norm blocks, without a norm before the first block's attention;
//! - each block is global (`full_attention`: every key) or local
//!   (`sliding_attention`: `local_attention / 2` keys on each side, the half rounded
//!   down), with a RoPE theta per kind of block;
//! - a gated MLP: `Wi` makes two halves, the activation applies to the first, which
//!   then multiplies the second;
//! - a final LayerNorm; linear layers and norms without biases unless
//!   `attention_bias`, `mlp_bias` or `norm_bias` say otherwise.
//!
//! Configs come in two spellings: the Hub's (transformers 4.48:
//! `global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`) and the one
//! transformers 5 writes (`layer_types`, `rope_parameters` per layer type). Where
//! both are present transformers 5 reads the second, and so do we.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{Architecture, Classifier};
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{Activation, AttentionMask, ClassificationHead, HeadPooling, LayerNorm, Linear, Rope, Visibility};
use crate::weights::{Scope, Weights};

/// The fields of a ModernBERT `config.json` this implementation reads. Defaults are
/// transformers' `ModernBertConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Rows of the token table.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: i64,
    /// Width of each half of the gated MLP.
    pub intermediate_size: i64,
    /// Activation of the MLP's first half.
    #[serde(default = "gelu")]
    pub hidden_activation: Activation,
    /// The longest sequence the model was trained for (RoPE has no table; this
    /// bounds inputs as sentence-transformers does).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Whether the LayerNorms have biases.
    #[serde(default)]
    pub norm_bias: bool,
    /// Whether `Wqkv` and the attention's `Wo` have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP's `Wi` and `Wo` have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Each block's attention, as transformers 5 writes it.
    #[serde(default)]
    pub layer_types: Option<Vec<LayerType>>,
    /// Every n-th block (from the first) is global, the others local; read only
    /// without `layer_types`.
    #[serde(default)]
    pub global_attn_every_n_layers: Option<i64>,
    /// Width of the local blocks' window: `local_attention / 2` keys on each side.
    #[serde(default = "default_local_attention")]
    pub local_attention: i64,
    /// RoPE per layer type (`full_attention`, `sliding_attention`), as transformers 5
    /// writes it.
    #[serde(default)]
    /// Parsed in [`Config::plan`], so that the flat form other architectures use
    /// (`{"rope_theta": …}`) is refused with a message rather than a serde error.
    pub rope_parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// RoPE theta of the global blocks, as the Hub's configs spell it.
    #[serde(default)]
    pub global_rope_theta: Option<f64>,
    /// RoPE theta of the local blocks, as the Hub's configs spell it.
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
    /// transformers 4's RoPE scaling, merged into both layer types' parameters.
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// Width of a head, if given: it must be `hidden_size / num_attention_heads`,
    /// the only width the attention has.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// What the classification head reads: `cls` (the first token) or `mean`.
    #[serde(default)]
    pub classifier_pooling: ClassifierPooling,
    /// Activation after the head's dense layer.
    #[serde(default = "gelu")]
    pub classifier_activation: Activation,
    /// Whether the head's dense layer has a bias.
    #[serde(default)]
    pub classifier_bias: bool,
}

/// A block's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LayerType {
    /// Every key (padding aside).
    #[serde(rename = "full_attention")]
    Global,
    /// The keys within `local_attention / 2` positions of the query.
    #[serde(rename = "sliding_attention")]
    Local,
}

/// One layer type's RoPE parameters. Only the plain rotation (`rope_type:
/// "default"`) is implemented; the keys other types add are refused with it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    /// `default` (or absent) only.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// The base of the frequencies.
    #[serde(default)]
    pub rope_theta: Option<f64>,
}

/// What the classification head pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClassifierPooling {
    /// The first token's state.
    #[default]
    #[serde(rename = "cls")]
    Cls,
    /// The mean over real tokens.
    #[serde(rename = "mean")]
    Mean,
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(ModernBertModel::load(weights, self, config_path)?))
    }

    /// `ModernBertForSequenceClassification`: the pooled state → `head.dense` →
    /// `classifier_activation` → `head.norm` → `classifier` (which always has a bias).
    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let encoder = ModernBertModel::load(weights, self, config_path)?;
        let h = self.hidden_size;
        let head = weights.pp_root("head");
        let pooling = match self.classifier_pooling {
            ClassifierPooling::Cls => HeadPooling::First,
            ClassifierPooling::Mean => HeadPooling::Mean,
        };
        let dense = Linear::load_with_bias(&head.pp("dense"), h, h, self.classifier_bias);
        let head = ClassificationHead::new(
            pooling,
            Some((dense, self.classifier_activation)),
            Some(norm(&head.pp("norm"), self)),
            Linear::load(&weights.pp_root("classifier"), h, labels),
        )?;
        Ok(Classifier { encoder: Box::new(encoder), head })
    }
}

fn gelu() -> Activation {
    Activation::Gelu
}

fn default_max_positions() -> i64 {
    8192
}

fn default_norm_eps() -> f64 {
    1e-5
}

fn default_local_attention() -> i64 {
    128
}

/// transformers' defaults when neither spelling gives a theta.
const DEFAULT_GLOBAL_THETA: f64 = 160_000.0;
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;
/// transformers' default pattern without `layer_types`: every third block global.
const DEFAULT_GLOBAL_EVERY: i64 = 3;

/// What a config means once both spellings and the defaults are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Each block's attention.
    pub layers: Vec<LayerType>,
    /// RoPE theta of global blocks.
    pub global_theta: f64,
    /// RoPE theta of local blocks.
    pub local_theta: f64,
    /// Keys visible on each side of a query in local blocks.
    pub window_radius: i64,
}

impl Config {
    /// Validates the config and resolves it as transformers 5 does.
    pub fn plan(&self, config_path: &Path) -> Result<Plan, EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: config_path.to_path_buf(), reason };
        super::check_sizes(
            config_path,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("num_attention_heads", self.num_attention_heads),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            self.num_hidden_layers,
            (self.hidden_size, self.num_attention_heads),
        )?;
        super::check_eps(config_path, "norm_eps", self.norm_eps)?;
        let head_dim = self.hidden_size / self.num_attention_heads;
        if head_dim % 2 != 0 {
            return Err(invalid(format!(
                "hidden_size / num_attention_heads is {head_dim}; rotary embeddings pair dimensions, so it must be even"
            )));
        }
        if let Some(given) = self.head_dim.filter(|&d| d != head_dim) {
            return Err(invalid(format!(
                "head_dim is {given}, but ModernBERT's heads are hidden_size / num_attention_heads = {head_dim} wide; \
                 remove head_dim or set it to {head_dim}"
            )));
        }
        let layers = match &self.layer_types {
            Some(types) if types.len() != self.num_hidden_layers => {
                return Err(invalid(format!(
                    "layer_types lists {} layers but num_hidden_layers is {}; give one type per layer",
                    types.len(),
                    self.num_hidden_layers
                )))
            }
            Some(types) => types.clone(),
            None => {
                let every = self.global_attn_every_n_layers.unwrap_or(DEFAULT_GLOBAL_EVERY);
                if every < 1 {
                    return Err(invalid(format!(
                        "global_attn_every_n_layers is {every}; it must be 1 or more (1: every layer global)"
                    )));
                }
                (0..self.num_hidden_layers as i64)
                    .map(|i| if i % every == 0 { LayerType::Global } else { LayerType::Local })
                    .collect()
            }
        };
        if self.local_attention < 0 {
            return Err(invalid(format!(
                "local_attention is {}; it must be 0 or more (the width of the local layers' window)",
                self.local_attention
            )));
        }
        let mut per_type = BTreeMap::new();
        for (key, value) in self.rope_parameters.iter().flatten() {
            if !matches!(key.as_str(), "full_attention" | "sliding_attention") {
                return Err(invalid(format!(
                    "rope_parameters has the key {key:?}; ModernBERT's gives parameters per layer type, under \
                     \"full_attention\" and \"sliding_attention\""
                )));
            }
            let params = if value.is_null() {
                RopeParameters::default()
            } else {
                RopeParameters::deserialize(value)
                    .map_err(|e| invalid(format!("rope_parameters.{key} is not a set of RoPE parameters ({e})")))?
            };
            per_type.insert(key.as_str(), params);
        }
        let theta = |layer_type: &str, legacy: Option<f64>, default: f64| -> Result<f64, EmbedError> {
            let mut params = per_type.get(layer_type).cloned().unwrap_or_default();
            if let Some(scaling) = &self.rope_scaling {
                // transformers merges rope_scaling over each type's parameters.
                params.rope_type = scaling.rope_type.clone().or(params.rope_type);
                params.rope_theta = scaling.rope_theta.or(params.rope_theta);
            }
            if let Some(kind) = params.rope_type.as_deref().filter(|t| *t != "default") {
                return Err(invalid(format!(
                    "RoPE type {kind:?} ({layer_type}) is not supported; only \"default\" is implemented"
                )));
            }
            let theta = params.rope_theta.or(legacy).unwrap_or(default);
            if !(theta > 0.0 && theta.is_finite()) {
                return Err(invalid(format!("the RoPE theta of {layer_type} layers is {theta}; it must be positive")));
            }
            Ok(theta)
        };
        Ok(Plan {
            global_theta: theta("full_attention", self.global_rope_theta, DEFAULT_GLOBAL_THETA)?,
            local_theta: theta("sliding_attention", self.local_rope_theta, DEFAULT_LOCAL_THETA)?,
            window_radius: self.local_attention / 2,
            layers,
        })
    }
}

/// The ModernBERT encoder stack.
pub struct ModernBertModel {
    tokens: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    global_rope: Rope,
    local_rope: Rope,
    window_radius: i64,
    heads: i64,
    hidden_size: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit.
    config_path: PathBuf,
}

/// A LayerNorm with or without bias, as `norm_bias` says.
fn norm(w: &Scope<'_>, c: &Config) -> LayerNorm {
    if c.norm_bias {
        LayerNorm::load(w, c.hidden_size, c.norm_eps)
    } else {
        LayerNorm::load_no_bias(w, c.hidden_size, c.norm_eps)
    }
}

impl ModernBertModel {
    /// Builds the model from its weights (under `model.` in checkpoints of the
    /// task heads); missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        let plan = config.plan(config_path)?;
        weights.detect_prefix("embeddings.tok_embeddings.weight");
        let root = weights.pp("");
        let c = config;
        let head_dim = c.hidden_size / c.num_attention_heads;
        let layers = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, &kind)| Layer::load(&root.pp("layers").pp(i), c, i, kind))
            .collect();
        let tokens = root.pp("embeddings").pp("tok_embeddings").get("weight", &[c.vocab_size, c.hidden_size]);
        let device = tokens.device();
        Ok(ModernBertModel {
            tokens,
            embedding_norm: norm(&root.pp("embeddings").pp("norm"), c),
            layers,
            final_norm: norm(&root.pp("final_norm"), c),
            global_rope: Rope::new(head_dim, plan.global_theta, 1.0, device)?,
            local_rope: Rope::new(head_dim, plan.local_theta, 1.0, device)?,
            window_radius: plan.window_radius,
            heads: c.num_attention_heads,
            hidden_size: c.hidden_size,
            limits: EncoderLimits {
                vocab_size: c.vocab_size,
                type_vocab_size: None,
                max_positions: c.max_position_embeddings as usize,
            },
            config_path: config_path.to_path_buf(),
        })
    }
}

impl Encoder for ModernBertModel {
    fn hidden_size(&self) -> i64 {
        self.hidden_size
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let (_, seq) = input.input_ids.size2()?;
        super::check_input(&self.config_path, input, self.limits)?;
        let mut hidden =
            self.embedding_norm.forward(&Tensor::f_embedding(&self.tokens, &input.input_ids, -1, false, false)?)?;
        let kind = hidden.kind();
        // Masks and rotation tables once per forward pass, for the kinds of block
        // present. Local blocks see a band; at lengths the band covers, `new` gives
        // the plain padding mask.
        let has = |t: LayerType| self.layers.iter().any(|l| l.kind == t);
        let global = if has(LayerType::Global) {
            Some((AttentionMask::padding(&input.attention_mask)?, self.global_rope.tables(seq, kind)?))
        } else {
            None
        };
        let local = if has(LayerType::Local) {
            let visibility = Visibility::window(self.window_radius);
            let mask = AttentionMask::new(&input.attention_mask, visibility, self.heads, None)?;
            Some((mask, self.local_rope.tables(seq, kind)?))
        } else {
            None
        };
        for layer in &self.layers {
            let (mask, (cos, sin)) = match layer.kind {
                LayerType::Global => global.as_ref(),
                LayerType::Local => local.as_ref(),
            }
            .ok_or_else(|| EmbedError::InvalidFile {
                path: self.config_path.clone(),
                reason: "internal: a layer type without its mask".into(),
            })?;
            hidden = layer.forward(&hidden, mask, cos, sin, self.heads)?;
        }
        self.final_norm.forward(&hidden)
    }
}

struct Layer {
    kind: LayerType,
    /// `None` in the first block: its input is the embeddings' norm output already.
    attention_norm: Option<LayerNorm>,
    /// Queries, keys and values side by side, each `heads × head_dim`.
    qkv: Linear,
    attention_out: Linear,
    mlp_norm: LayerNorm,
    /// `[2 · intermediate, hidden]`: the activated half, then the gate.
    mlp_in: Linear,
    activation: Activation,
    mlp_out: Linear,
    intermediate: i64,
}

impl Layer {
    fn load(w: &Scope<'_>, c: &Config, index: usize, kind: LayerType) -> Self {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let attention = w.pp("attn");
        let mlp = w.pp("mlp");
        Layer {
            kind,
            attention_norm: (index > 0).then(|| norm(&w.pp("attn_norm"), c)),
            qkv: Linear::load_with_bias(&attention.pp("Wqkv"), h, 3 * h, c.attention_bias),
            attention_out: Linear::load_with_bias(&attention.pp("Wo"), h, h, c.attention_bias),
            mlp_norm: norm(&w.pp("mlp_norm"), c),
            mlp_in: Linear::load_with_bias(&mlp.pp("Wi"), h, 2 * i, c.mlp_bias),
            activation: c.hidden_activation,
            mlp_out: Linear::load_with_bias(&mlp.pp("Wo"), i, h, c.mlp_bias),
            intermediate: i,
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        mask: &AttentionMask,
        cos: &Tensor,
        sin: &Tensor,
        heads: i64,
    ) -> Result<Tensor, EmbedError> {
        let normed = match &self.attention_norm {
            Some(norm) => norm.forward(xs)?,
            None => xs.shallow_clone(),
        };
        let qkv = rotate_queries_and_keys(&self.qkv.forward(&normed)?, cos, sin, heads)?;
        let hidden = self.attention_out.forward_plus(&mask.attend(&qkv, heads)?, xs)?;
        let both = self.mlp_in.forward(&self.mlp_norm.forward(&hidden)?)?;
        let input = both.f_narrow(-1, 0, self.intermediate)?;
        let gate = both.f_narrow(-1, self.intermediate, self.intermediate)?;
        let gated = self.activation.forward(&input)?.f_mul(&gate)?;
        self.mlp_out.forward_plus(&gated, &hidden)
    }
}

/// Rotates the query and key thirds of a fused `[B, T, 3·hidden]` projection in
/// place and returns it, ready for the fused attention kernels. As transformers
/// does, in f32 with the tables rounded to the model's precision first, then
/// rounded once back.
fn rotate_queries_and_keys(qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: i64) -> Result<Tensor, EmbedError> {
    let (batch, seq, width) = qkv.size3()?;
    let head_dim = width / 3 / heads;
    let qkv = qkv.f_contiguous()?;
    let split = qkv.f_view([batch, seq, 3, heads, head_dim])?;
    let mut queries_keys = split.f_narrow(2, 0, 2)?;
    // [T, head_dim] → [1, T, 1, 1, head_dim], against [B, T, 2, heads, head_dim].
    let table =
        |t: &Tensor| -> Result<Tensor, EmbedError> { Ok(t.f_to_kind(Kind::Float)?.f_view([1, seq, 1, 1, head_dim])?) };
    let rotated = Rope::rotate(&queries_keys.f_to_kind(Kind::Float)?, &table(cos)?, &table(sin)?)?;
    queries_keys.f_copy_(&rotated)?;
    Ok(qkv)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use super::super::tests::model_files::{write_model, Layout};
    use super::*;

    /// A small config as the Hub spells it; `extra` overrides or adds keys.
    fn config(extra: Value) -> Value {
        let mut config = json!({
            "model_type": "modernbert", "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 4,
            "num_attention_heads": 2, "intermediate_size": 24, "max_position_embeddings": 64
        });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        config
    }

    fn plan(config: Value) -> Result<Plan, EmbedError> {
        let config: Config = serde_json::from_value(config).unwrap();
        config.plan(Path::new("config.json"))
    }

    fn refusal(extra: Value) -> String {
        plan(config(extra)).expect_err("the config must be refused").to_string()
    }

    use LayerType::{Global as G, Local as L};

    #[test]
    fn missing_keys_take_transformers_defaults() {
        let p = plan(config(json!({}))).unwrap();
        assert_eq!(
            p,
            Plan { layers: vec![G, L, L, G], global_theta: 160_000.0, local_theta: 10_000.0, window_radius: 64 }
        );
    }

    #[test]
    fn the_hub_spelling_gives_the_pattern_thetas_and_window() {
        // gte-modernbert-base's keys; an odd window rounds its half down.
        let hub = json!({
            "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0, "local_rope_theta": 50.0,
            "local_attention": 13, "layer_norm_eps": 1e-5, "reference_compile": true
        });
        let p = plan(config(hub)).unwrap();
        assert_eq!(p, Plan { layers: vec![G, L, G, L], global_theta: 1000.0, local_theta: 50.0, window_radius: 6 });
    }

    #[test]
    fn the_transformers_5_spelling_wins_where_both_are_present() {
        // transformers 5 writes both layer_types and the global_attn_every_n_layers
        // it was built from; a hand-edited config may disagree, and layer_types rules.
        let both = json!({
            "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0, "local_rope_theta": 50.0,
            "layer_types": ["sliding_attention", "full_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 7.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 3.0}
            }
        });
        let p = plan(config(both)).unwrap();
        assert_eq!(p, Plan { layers: vec![L, G, G, L], global_theta: 7.0, local_theta: 3.0, window_radius: 64 });
        // A layer type without a theta of its own falls back to the Hub key, then the default.
        let partial = json!({"rope_parameters": {"full_attention": {"rope_type": "default"}}, "local_rope_theta": 9.0});
        let p = plan(config(partial)).unwrap();
        assert_eq!((p.global_theta, p.local_theta), (160_000.0, 9.0));
    }

    #[test]
    fn configs_the_model_cannot_honour_are_refused_naming_the_key() {
        for (extra, expected) in [
            (json!({"layer_types": ["full_attention"]}), "layer_types lists 1 layers but num_hidden_layers is 4"),
            (json!({"global_attn_every_n_layers": 0}), "global_attn_every_n_layers is 0; it must be 1 or more"),
            (json!({"local_attention": -2}), "local_attention is -2; it must be 0 or more"),
            (
                json!({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 4.0}}}),
                "RoPE type \"yarn\" (full_attention) is not supported",
            ),
            (json!({"rope_scaling": {"type": "linear", "factor": 2.0}}), "RoPE type \"linear\""),
            (
                json!({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}),
                "rope_parameters has the key \"rope_theta\"",
            ),
            (
                json!({"rope_parameters": {"sliding_attention": 10000.0}}),
                "rope_parameters.sliding_attention is not a set of RoPE parameters",
            ),
            (json!({"global_rope_theta": 0.0}), "the RoPE theta of full_attention layers is 0"),
            (json!({"rope_parameters": {"sliding_attention": {"rope_theta": -1.0}}}), "sliding_attention layers is -1"),
            (json!({"head_dim": 4}), "head_dim is 4, but ModernBERT's heads are hidden_size / num_attention_heads = 8"),
            (json!({"num_attention_heads": 16}), "hidden_size / num_attention_heads is 1; rotary embeddings pair"),
            (json!({"num_attention_heads": 3}), "hidden_size 16 is not a multiple of num_attention_heads 3"),
            (json!({"norm_eps": 0.0}), "norm_eps is 0"),
            (json!({"vocab_size": 0}), "vocab_size is 0; it must be between 1 and"),
            (json!({"num_hidden_layers": 0}), "num_hidden_layers is 0"),
        ] {
            let err = refusal(extra.clone());
            assert!(err.contains(expected) && err.contains("config.json"), "{extra}: {err}");
        }
    }

    /// Random weights for `config` (one per name ModernBERT reads), written with
    /// the config into `dir`.
    fn write_tiny(dir: &Path, config: &Value) {
        let n = |k: &str| config[k].as_i64().unwrap();
        let (h, i) = (n("hidden_size"), n("intermediate_size"));
        let mut shapes = vec![
            ("embeddings.tok_embeddings.weight".to_owned(), vec![n("vocab_size"), h]),
            ("embeddings.norm.weight".to_owned(), vec![h]),
            ("final_norm.weight".to_owned(), vec![h]),
        ];
        for l in 0..n("num_hidden_layers") {
            if l > 0 {
                shapes.push((format!("layers.{l}.attn_norm.weight"), vec![h]));
            }
            shapes.push((format!("layers.{l}.attn.Wqkv.weight"), vec![3 * h, h]));
            shapes.push((format!("layers.{l}.attn.Wo.weight"), vec![h, h]));
            shapes.push((format!("layers.{l}.mlp_norm.weight"), vec![h]));
            shapes.push((format!("layers.{l}.mlp.Wi.weight"), vec![2 * i, h]));
            shapes.push((format!("layers.{l}.mlp.Wo.weight"), vec![h, i]));
        }
        tch::manual_seed(17);
        let tensors: Vec<(String, Tensor)> = shapes
            .into_iter()
            .map(|(name, shape)| (name, Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.3 + 0.05))
            .collect();
        write_model(dir, config, &tensors, Layout::Safetensors);
    }

    /// Token states of two texts through one one-block model whose block is `layer_type`.
    fn one_block(layer_type: &str, texts: [&[i64]; 2]) -> [Tensor; 2] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(json!({"num_hidden_layers": 1, "layer_types": [layer_type], "local_attention": 4}));
        write_tiny(dir.path(), &config);
        let encoder = super::super::load_encoder(dir.path(), Kind::Float, Device::Cpu).unwrap();
        // One model for both texts: the weights are drawn once, so concurrent tests
        // drawing from libtorch's global generator cannot make two models differ.
        texts.map(|ids| {
            let len = ids.len() as i64;
            let input = crate::encoder::EncoderInput {
                input_ids: Tensor::from_slice(ids).view([1, len]),
                attention_mask: Tensor::ones([1, len], (Kind::Int64, Device::Cpu)),
                token_type_ids: Tensor::zeros([1, len], (Kind::Int64, Device::Cpu)),
            };
            encoder.forward(&input).unwrap().get(0)
        })
    }

    #[test]
    fn a_local_block_sees_exactly_local_attention_over_two_tokens_each_side() {
        // One block, so a token's state depends only on the tokens it attends to:
        // changing token 6 must change tokens 4..=8 (within 2 of it) and no other,
        // while a global block changes every token.
        let ids = [1i64, 5, 9, 13, 17, 21, 25, 2, 3, 4, 6];
        let mut changed = ids;
        changed[6] = 29;
        let moved = |layer_type: &str| -> Vec<bool> {
            let [a, b] = one_block(layer_type, [&ids, &changed]);
            (0..ids.len() as i64).map(|t| (a.get(t) - b.get(t)).abs().max().double_value(&[]) > 1e-6).collect()
        };
        let local: Vec<usize> =
            moved("sliding_attention").iter().enumerate().filter(|(_, m)| **m).map(|(t, _)| t).collect();
        assert_eq!(local, [4, 5, 6, 7, 8]);
        assert!(moved("full_attention").iter().all(|m| *m));
    }
}
