//! Gemma 3's text model (`gemma3_text`), the encoder of EmbeddingGemma
//! (google/embeddinggemma-300m), which runs it with bidirectional attention.
//!
//! Mirrors transformers' `Gemma3TextModel`
//! (`src/transformers/models/gemma3/modeling_gemma3.py`, transformers 5):
//! - embeddings: the token table times `√hidden_size`, that factor first rounded
//!   to the weights' precision (in bf16, √768 ≈ 27.71 becomes 27.75);
//! - blocks with four RMSNorms each (before and after attention, before and after
//!   the MLP), all in Gemma's form: normalized in f32, times `1 + w`;
//! - attention with separate q/k/v projections, grouped-query heads
//!   (`num_key_value_heads`), `head_dim` independent of `hidden_size`, an RMSNorm
//!   over each query and key head, RoPE, and scores scaled by
//!   `query_pre_attn_scalar^-1/2` rather than `head_dim^-1/2`;
//! - each block is global (`full_attention`) or local (`sliding_attention`), with a
//!   RoPE theta per kind;
//! - a gated MLP: `down(act(gate(x)) · up(x))`, GELU-tanh by default;
//! - a final RMSNorm.
//!
//! Attention visibility (transformers' `masking_utils` with Gemma3's overlays):
//! - `use_bidirectional_attention: true` (EmbeddingGemma): global blocks see every
//!   key; local blocks see keys within `sliding_window / 2` (rounded down) on each
//!   side. transformers stores `sliding_window // 2 + 1` and keeps keys at a
//!   distance strictly below it; config.json keeps the full width.
//! - otherwise (Gemma 3 as a decoder): causal, local blocks seeing the query and
//!   the `sliding_window - 1` keys before it.
//!
//! `attn_logit_softcapping` is read by transformers' Gemma3 but never applied (its
//! attention does not pass it to any kernel), so it is ignored here too.
//!
//! f16 is refused: Gemma 3's activations grow beyond f16's range (EmbeddingGemma's
//! model card says they do not support float16 and names float32 and bfloat16), so
//! a model loaded with `dtype f16` is an error naming bf16 and f32 instead of
//! vectors of infinities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::Architecture;
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{Activation, AttentionMask, Linear, RmsNorm, Rope, Visibility};
use crate::weights::{Scope, Weights};

/// The fields of a Gemma 3 text `config.json` this implementation reads. Defaults
/// are transformers' `Gemma3TextConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Rows of the token table.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: i64,
    /// Width of every hidden state.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: i64,
    /// Width of each of the MLP's gate and up projections.
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: i64,
    /// Transformer blocks.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Query heads per block.
    #[serde(default = "default_heads")]
    pub num_attention_heads: i64,
    /// Key/value heads per block; each serves `num_attention_heads /
    /// num_key_value_heads` query heads.
    #[serde(default = "default_kv_heads")]
    pub num_key_value_heads: i64,
    /// Width of every head (independent of `hidden_size`).
    #[serde(default = "default_head_dim")]
    pub head_dim: i64,
    /// Activation of the MLP's gate.
    #[serde(default = "gelu_tanh")]
    pub hidden_activation: Activation,
    /// The longest sequence the model was trained for (RoPE has no table; this
    /// bounds inputs).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    /// Epsilon of every RMSNorm.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Whether the q/k/v/o projections have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Scores are scaled by `query_pre_attn_scalar^-1/2`.
    #[serde(default = "default_query_pre_attn_scalar")]
    pub query_pre_attn_scalar: f64,
    /// Width of the local blocks' window (see the module documentation for what it
    /// means in each attention direction). `null` is allowed only without local blocks.
    #[serde(default = "default_sliding_window")]
    pub sliding_window: Option<i64>,
    /// Each block's attention.
    #[serde(default)]
    pub layer_types: Option<Vec<LayerType>>,
    /// Without `layer_types`: every n-th block (counting from 1) is global, the
    /// others local.
    #[serde(default)]
    pub sliding_window_pattern: Option<i64>,
    /// Whether every token sees the tokens after it too (EmbeddingGemma).
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    /// RoPE per layer type (`full_attention`, `sliding_attention`), as transformers
    /// 5 writes it. Parsed in [`Config::plan`], so that a flat form is refused with
    /// a message rather than a serde error.
    #[serde(default)]
    pub rope_parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// transformers 4's theta of the global blocks.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 4's theta of the local blocks.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// transformers 4's RoPE scaling, which applies to the global blocks only.
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
}

/// A block's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LayerType {
    /// Every key (padding aside; causal models: every key up to the query).
    #[serde(rename = "full_attention")]
    Global,
    /// A window around the query.
    #[serde(rename = "sliding_attention")]
    Local,
}

/// One layer type's RoPE parameters: the plain rotation (`default`) or `linear`
/// scaling (Gemma 3's larger decoders), the only ones implemented.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    /// `default`, `linear`, or absent (default).
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// The base of the frequencies.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Positions are divided by this (`linear` only).
    #[serde(default)]
    pub factor: Option<f64>,
}

fn default_vocab_size() -> i64 {
    262_208
}
fn default_hidden_size() -> i64 {
    2304
}
fn default_intermediate_size() -> i64 {
    9216
}
fn default_layers() -> usize {
    26
}
fn default_heads() -> i64 {
    8
}
fn default_kv_heads() -> i64 {
    4
}
fn default_head_dim() -> i64 {
    256
}
fn gelu_tanh() -> Activation {
    Activation::GeluTanh
}
fn default_max_positions() -> i64 {
    131_072
}
fn default_eps() -> f64 {
    1e-6
}
fn default_query_pre_attn_scalar() -> f64 {
    256.0
}
fn default_sliding_window() -> Option<i64> {
    Some(4096)
}

/// transformers' thetas when a config gives none.
const DEFAULT_GLOBAL_THETA: f64 = 1_000_000.0;
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;
/// transformers' pattern without `layer_types`: every sixth block global.
const DEFAULT_PATTERN: i64 = 6;

/// One kind of block's positions: RoPE theta and linear scaling factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopePlan {
    /// Base of the frequencies.
    pub theta: f64,
    /// Positions are divided by this (1: no scaling).
    pub factor: f64,
}

/// What a config means once its spellings and defaults are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Each block's attention.
    pub layers: Vec<LayerType>,
    /// Keys each kind of block may see besides padding.
    pub global: Visibility,
    /// Keys local blocks may see besides padding.
    pub local: Visibility,
    /// RoPE of the global blocks.
    pub global_rope: RopePlan,
    /// RoPE of the local blocks.
    pub local_rope: RopePlan,
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
                ("intermediate_size", self.intermediate_size),
                ("num_attention_heads", self.num_attention_heads),
                ("num_key_value_heads", self.num_key_value_heads),
                ("head_dim", self.head_dim),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            self.num_hidden_layers,
            // transformers' Gemma3TextConfig requires this too, although heads have
            // their own width.
            (self.hidden_size, self.num_attention_heads),
        )?;
        super::check_eps(config_path, "rms_norm_eps", self.rms_norm_eps)?;
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}; each key/value head must serve \
                 the same number of query heads",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(invalid(format!(
                "head_dim is {}; rotary embeddings pair dimensions, so it must be even",
                self.head_dim
            )));
        }
        if !(self.query_pre_attn_scalar > 0.0 && self.query_pre_attn_scalar.is_finite()) {
            return Err(invalid(format!(
                "query_pre_attn_scalar is {}; it must be a positive number (scores are scaled by its inverse square \
                 root; released models use head_dim)",
                self.query_pre_attn_scalar
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
                let every = self.sliding_window_pattern.unwrap_or(DEFAULT_PATTERN);
                if every < 1 {
                    return Err(invalid(format!(
                        "sliding_window_pattern is {every}; it must be 1 or more (every n-th layer is global)"
                    )));
                }
                (1..=self.num_hidden_layers as i64)
                    .map(|i| if i % every == 0 { LayerType::Global } else { LayerType::Local })
                    .collect()
            }
        };
        let bidirectional = self.use_bidirectional_attention.unwrap_or(false);
        let local = if layers.contains(&LayerType::Local) {
            match self.sliding_window {
                Some(window) if window >= 1 => {
                    if bidirectional {
                        Visibility::window(window / 2)
                    } else {
                        Visibility { before: Some(window - 1), after: Some(0) }
                    }
                }
                Some(window) => {
                    return Err(invalid(format!(
                        "sliding_window is {window}; it must be 1 or more (the width of the local layers' window)"
                    )))
                }
                None => {
                    return Err(invalid(
                        "sliding_window is null, but some layers are sliding_attention; give the window's width"
                            .to_owned(),
                    ))
                }
            }
        } else {
            Visibility::ALL
        };
        let global = if bidirectional { Visibility::ALL } else { Visibility::CAUSAL };

        let mut per_type = BTreeMap::new();
        for (key, value) in self.rope_parameters.iter().flatten() {
            if !matches!(key.as_str(), "full_attention" | "sliding_attention") {
                return Err(invalid(format!(
                    "rope_parameters has the key {key:?}; Gemma 3 gives parameters per layer type, under \
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
        let rope = |layer_type: &str, legacy: Option<f64>, default: f64| -> Result<RopePlan, EmbedError> {
            let mut params = per_type.get(layer_type).cloned().unwrap_or_default();
            if layer_type == "full_attention" {
                if let Some(scaling) = &self.rope_scaling {
                    // transformers merges rope_scaling over the global blocks' parameters only.
                    params.rope_type = scaling.rope_type.clone().or(params.rope_type);
                    params.rope_theta = scaling.rope_theta.or(params.rope_theta);
                    params.factor = scaling.factor.or(params.factor);
                }
            }
            let factor = match params.rope_type.as_deref().unwrap_or("default") {
                "default" => 1.0,
                "linear" => match params.factor {
                    Some(f) if f > 0.0 && f.is_finite() => f,
                    other => {
                        return Err(invalid(format!(
                            "the linear RoPE scaling of {layer_type} layers has factor {other:?}; it must be a \
                             positive number"
                        )))
                    }
                },
                kind => {
                    return Err(invalid(format!(
                        "RoPE type {kind:?} ({layer_type}) is not supported; \"default\" and \"linear\" are implemented"
                    )))
                }
            };
            let theta = params.rope_theta.or(legacy).unwrap_or(default);
            if !(theta > 0.0 && theta.is_finite()) {
                return Err(invalid(format!("the RoPE theta of {layer_type} layers is {theta}; it must be positive")));
            }
            Ok(RopePlan { theta, factor })
        };
        Ok(Plan {
            global_rope: rope("full_attention", self.rope_theta, DEFAULT_GLOBAL_THETA)?,
            local_rope: rope("sliding_attention", self.rope_local_base_freq, DEFAULT_LOCAL_THETA)?,
            layers,
            global,
            local,
        })
    }
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(Gemma3TextModel::load(weights, self, config_path)?))
    }
}

/// The Gemma 3 text stack.
pub struct Gemma3TextModel {
    tokens: Tensor,
    /// `√hidden_size` in the weights' precision.
    embedding_scale: Tensor,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    global: (Visibility, Rope),
    local: (Visibility, Rope),
    heads: i64,
    hidden_size: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit.
    config_path: PathBuf,
}

impl Gemma3TextModel {
    /// Builds the model from its weights (under `model.` in checkpoints of the
    /// task heads); missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        let plan = config.plan(config_path)?;
        weights.detect_prefix("embed_tokens.weight");
        let root = weights.pp("");
        let c = config;
        let tokens = root.pp("embed_tokens").get("weight", &[c.vocab_size, c.hidden_size]);
        // Stand-ins of the dry run have the compute precision too, so this is
        // refused before any tensor is read.
        if tokens.kind() == Kind::Half {
            return Err(EmbedError::UnsupportedPrecision {
                path: config_path.to_path_buf(),
                architecture: "Gemma 3",
                precision: "f16",
                reason: "its activations grow beyond f16's range",
                fix: "dtype bf16 (as Gemma 3 was trained) or f32",
            });
        }
        let layers = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, &kind)| Layer::load(&root.pp("layers").pp(i), c, kind))
            .collect::<Result<Vec<_>, _>>()?;
        let device = tokens.device();
        let embedding_scale = Tensor::f_from_slice(&[(c.hidden_size as f64).sqrt() as f32])?
            .f_reshape([] as [i64; 0])?
            .f_to_kind(tokens.kind())?
            .f_to_device(device)?;
        let rope = |r: RopePlan| Rope::new(c.head_dim, r.theta, r.factor, device);
        Ok(Gemma3TextModel {
            embedding_scale,
            tokens,
            layers,
            final_norm: RmsNorm::load_gemma(&root.pp("norm"), c.hidden_size, c.rms_norm_eps)?,
            global: (plan.global, rope(plan.global_rope)?),
            local: (plan.local, rope(plan.local_rope)?),
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

impl Encoder for Gemma3TextModel {
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
            Tensor::f_embedding(&self.tokens, &input.input_ids, -1, false, false)?.f_mul(&self.embedding_scale)?;
        let kind = hidden.kind();
        // Masks and rotation tables once per forward pass, for the kinds of block
        // present. Positions are 0..seq whatever the padding, as in transformers:
        // rotations and windows depend only on distances, which padding on the
        // left does not change.
        let prepare = |kind_of_block: LayerType, (visibility, rope): &(Visibility, Rope)| {
            if !self.layers.iter().any(|l| l.kind == kind_of_block) {
                return Ok(None);
            }
            let mask = AttentionMask::new(&input.attention_mask, *visibility, self.heads, None)?;
            Ok::<_, EmbedError>(Some((mask, rope.tables(seq, kind)?)))
        };
        let global = prepare(LayerType::Global, &self.global)?;
        let local = prepare(LayerType::Local, &self.local)?;
        for layer in &self.layers {
            let (mask, (cos, sin)) = match layer.kind {
                LayerType::Global => global.as_ref(),
                LayerType::Local => local.as_ref(),
            }
            .ok_or_else(|| EmbedError::InvalidFile {
                path: self.config_path.clone(),
                reason: "internal: a layer type without its mask".into(),
            })?;
            hidden = layer.forward(&hidden, mask, cos, sin)?;
        }
        self.final_norm.forward(&hidden)
    }
}

struct Layer {
    kind: LayerType,
    input_norm: RmsNorm,
    /// Queries, keys and values side by side: `heads·d`, `kv_heads·d`, `kv_heads·d`.
    qkv: Linear,
    query_norm: RmsNorm,
    key_norm: RmsNorm,
    attention_out: Linear,
    post_attention_norm: RmsNorm,
    pre_mlp_norm: RmsNorm,
    /// `[2 · intermediate, hidden]`: the gate, then the up projection.
    gate_up: Linear,
    activation: Activation,
    down: Linear,
    post_mlp_norm: RmsNorm,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    /// `query_pre_attn_scalar^-1/2 · √head_dim`: the kernels divide scores by
    /// `√head_dim`, so queries are multiplied by this to get Gemma's scale.
    query_factor: f64,
}

impl Layer {
    fn load(w: &Scope<'_>, c: &Config, kind: LayerType) -> Result<Self, EmbedError> {
        let (h, i, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_width, kv_width) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let attention = w.pp("self_attn");
        let mlp = w.pp("mlp");
        let norm = |name: &str, size: i64| RmsNorm::load_gemma(&w.pp(name), size, c.rms_norm_eps);
        let projection = |name: &str, out: i64| Linear::load_with_bias(&attention.pp(name), h, out, c.attention_bias);
        Ok(Layer {
            kind,
            input_norm: norm("input_layernorm", h)?,
            qkv: Linear::fuse(&[
                projection("q_proj", q_width),
                projection("k_proj", kv_width),
                projection("v_proj", kv_width),
            ])?,
            query_norm: RmsNorm::load_gemma(&attention.pp("q_norm"), d, c.rms_norm_eps)?,
            key_norm: RmsNorm::load_gemma(&attention.pp("k_norm"), d, c.rms_norm_eps)?,
            attention_out: Linear::load_with_bias(&attention.pp("o_proj"), q_width, h, c.attention_bias),
            post_attention_norm: norm("post_attention_layernorm", h)?,
            pre_mlp_norm: norm("pre_feedforward_layernorm", h)?,
            gate_up: Linear::fuse(&[
                Linear::load_no_bias(&mlp.pp("gate_proj"), h, i),
                Linear::load_no_bias(&mlp.pp("up_proj"), h, i),
            ])?,
            activation: c.hidden_activation,
            down: Linear::load_no_bias(&mlp.pp("down_proj"), i, h),
            post_mlp_norm: norm("post_feedforward_layernorm", h)?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: d,
            query_factor: (d as f64).sqrt() / c.query_pre_attn_scalar.sqrt(),
        })
    }

    fn forward(&self, xs: &Tensor, mask: &AttentionMask, cos: &Tensor, sin: &Tensor) -> Result<Tensor, EmbedError> {
        let (batch, seq, _) = xs.size3()?;
        let d = self.head_dim;
        let qkv = self.qkv.forward(&self.input_norm.forward(xs)?)?;
        let (q_width, kv_width) = (self.heads * d, self.kv_heads * d);
        let q = qkv.f_narrow(-1, 0, q_width)?.f_reshape([batch, seq, self.heads, d])?;
        let k = qkv.f_narrow(-1, q_width, kv_width)?.f_reshape([batch, seq, self.kv_heads, d])?;
        let v = qkv.f_narrow(-1, q_width + kv_width, kv_width)?;
        // Per-head norms (rounded to the model's precision, as transformers does),
        // then the rotation in f32 with the tables rounded first, rounded once.
        // Gemma's score scale rides on the queries' rotation, before that rounding.
        let cos = cos.f_to_kind(Kind::Float)?.f_view([seq, 1, d])?;
        let sin = sin.f_to_kind(Kind::Float)?.f_view([seq, 1, d])?;
        let rotate = |x: &Tensor, factor: Option<f64>| -> Result<Tensor, EmbedError> {
            let rotated = Rope::rotate(&x.f_to_kind(Kind::Float)?, &cos, &sin)?;
            let scaled = match factor {
                Some(f) => rotated.f_mul_scalar(f)?,
                None => rotated,
            };
            Ok(scaled.f_to_kind(xs.kind())?.f_reshape([batch, seq, -1])?)
        };
        let q = rotate(&self.query_norm.forward(&q)?, Some(self.query_factor))?;
        let k = rotate(&self.key_norm.forward(&k)?, None)?;
        let context = mask.attend_split(&q, &k, &v, self.heads, self.kv_heads, None)?;
        let attended = self.post_attention_norm.forward(&self.attention_out.forward(&context)?)?;
        let hidden = xs.f_add(&attended)?;
        let both = self.gate_up.forward(&self.pre_mlp_norm.forward(&hidden)?)?;
        let gated = self.activation.forward_gated(&both)?;
        let out = self.post_mlp_norm.forward(&self.down.forward(&gated)?)?;
        Ok(hidden.f_add(&out)?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use super::super::tests::model_files::{write_model, Layout};
    use super::*;

    /// A small config as transformers 5 writes it; `extra` overrides or adds keys.
    fn config(extra: Value) -> Value {
        let mut config = json!({
            "model_type": "gemma3_text", "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 24,
            "max_position_embeddings": 64, "query_pre_attn_scalar": 8, "sliding_window": 8,
            "use_bidirectional_attention": true
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

    const PLAIN: RopePlan = RopePlan { theta: 1_000_000.0, factor: 1.0 };

    #[test]
    fn missing_keys_take_transformers_defaults() {
        // Every sixth layer global, thetas 1e6 / 1e4, a causal model unless told.
        let p = plan(json!({"model_type": "gemma3_text", "num_hidden_layers": 7})).unwrap();
        assert_eq!(p.layers, [L, L, L, L, L, G, L]);
        assert_eq!((p.global_rope, p.local_rope.theta), (PLAIN, 10_000.0));
        assert_eq!((p.global, p.local), (Visibility::CAUSAL, Visibility { before: Some(4095), after: Some(0) }));
    }

    #[test]
    fn a_bidirectional_window_reaches_half_its_width_each_side() {
        // transformers keeps keys closer than sliding_window // 2 + 1: 4 of 8, and 4 of 9.
        for (window, radius) in [(8, 4), (9, 4), (512, 256), (1, 0)] {
            let p = plan(config(json!({"sliding_window": window}))).unwrap();
            assert_eq!((p.global, p.local), (Visibility::ALL, Visibility::window(radius)), "window {window}");
        }
        // Causal: the query and window - 1 keys before it.
        let p = plan(config(json!({"sliding_window": 8, "use_bidirectional_attention": false}))).unwrap();
        assert_eq!((p.global, p.local), (Visibility::CAUSAL, Visibility { before: Some(7), after: Some(0) }));
    }

    #[test]
    fn both_spellings_give_the_pattern_and_rope() {
        let v5 = json!({
            "layer_types": ["full_attention", "sliding_attention", "full_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 7.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 3.0}
            },
            // Ignored where layer_types and rope_parameters say otherwise, as in transformers.
            "sliding_window_pattern": 2, "rope_theta": 5.0, "rope_local_base_freq": 6.0
        });
        let p = plan(config(v5)).unwrap();
        assert_eq!(p.layers, [G, L, G]);
        assert_eq!(
            (p.global_rope, p.local_rope),
            (RopePlan { theta: 7.0, factor: 8.0 }, RopePlan { theta: 3.0, factor: 1.0 })
        );
        // transformers 4: the pattern counts from 1; rope_scaling scales the global layers only.
        let v4 = json!({
            "sliding_window_pattern": 2, "rope_theta": 5.0, "rope_local_base_freq": 6.0,
            "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "attn_logit_softcapping": 50.0
        });
        let p = plan(config(v4)).unwrap();
        assert_eq!(p.layers, [L, G, L]);
        assert_eq!(
            (p.global_rope, p.local_rope),
            (RopePlan { theta: 5.0, factor: 2.0 }, RopePlan { theta: 6.0, factor: 1.0 })
        );
    }

    #[test]
    fn configs_the_model_cannot_honour_are_refused_naming_the_key() {
        for (extra, expected) in [
            (json!({"num_key_value_heads": 3}), "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
            (json!({"num_key_value_heads": 0}), "num_key_value_heads is 0"),
            (json!({"head_dim": 7}), "head_dim is 7; rotary embeddings pair dimensions"),
            (json!({"head_dim": -8}), "head_dim is -8"),
            (json!({"num_attention_heads": 3}), "hidden_size 16 is not a multiple of num_attention_heads 3"),
            (json!({"query_pre_attn_scalar": 0.0}), "query_pre_attn_scalar is 0"),
            (json!({"rms_norm_eps": -1.0}), "rms_norm_eps is -1"),
            (json!({"sliding_window": 0}), "sliding_window is 0; it must be 1 or more"),
            (json!({"sliding_window": null}), "sliding_window is null, but some layers are sliding_attention"),
            (json!({"layer_types": ["full_attention"]}), "layer_types lists 1 layers but num_hidden_layers is 3"),
            (json!({"sliding_window_pattern": 0}), "sliding_window_pattern is 0"),
            (
                json!({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 4.0}}}),
                "RoPE type \"yarn\" (full_attention) is not supported",
            ),
            (
                json!({"rope_scaling": {"rope_type": "linear"}}),
                "linear RoPE scaling of full_attention layers has factor None",
            ),
            (json!({"rope_parameters": {"rope_type": "default", "rope_theta": 10.0}}), "rope_parameters has the key"),
            (json!({"rope_local_base_freq": -1.0}), "the RoPE theta of sliding_attention layers is -1"),
            (json!({"vocab_size": 0}), "vocab_size is 0; it must be between 1 and"),
            (json!({"num_hidden_layers": 0}), "num_hidden_layers is 0"),
        ] {
            let err = refusal(extra.clone());
            assert!(err.contains(expected) && err.contains("config.json"), "{extra}: {err}");
        }
        // Without local layers, no window is needed.
        assert!(plan(config(
            json!({"sliding_window": null, "layer_types": ["full_attention", "full_attention", "full_attention"]})
        ))
        .is_ok());
    }

    /// Random weights for `config` (one per name Gemma 3 reads), written with the
    /// config into `dir`.
    fn write_tiny(dir: &Path, config: &Value) {
        let n = |k: &str| config[k].as_i64().unwrap();
        let (h, i, d) = (n("hidden_size"), n("intermediate_size"), n("head_dim"));
        let (q, kv) = (n("num_attention_heads") * d, n("num_key_value_heads") * d);
        let mut shapes =
            vec![("embed_tokens.weight".to_owned(), vec![n("vocab_size"), h]), ("norm.weight".to_owned(), vec![h])];
        for l in 0..n("num_hidden_layers") {
            let p = format!("layers.{l}");
            for norm in [
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ] {
                shapes.push((format!("{p}.{norm}.weight"), vec![h]));
            }
            for (name, shape) in [
                ("self_attn.q_proj", vec![q, h]),
                ("self_attn.k_proj", vec![kv, h]),
                ("self_attn.v_proj", vec![kv, h]),
                ("self_attn.o_proj", vec![h, q]),
                ("self_attn.q_norm", vec![d]),
                ("self_attn.k_norm", vec![d]),
                ("mlp.gate_proj", vec![i, h]),
                ("mlp.up_proj", vec![i, h]),
                ("mlp.down_proj", vec![h, i]),
            ] {
                shapes.push((format!("{p}.{name}.weight"), shape));
            }
        }
        tch::manual_seed(19);
        let tensors: Vec<(String, Tensor)> = shapes
            .into_iter()
            .map(|(name, shape)| (name, Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.3))
            .collect();
        write_model(dir, config, &tensors, Layout::Safetensors);
    }

    /// Token states of two texts through one one-block model whose block is `layer_type`.
    fn one_block(layer_type: &str, bidirectional: bool, texts: [&[i64]; 2]) -> [Tensor; 2] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(json!({
            "num_hidden_layers": 1, "layer_types": [layer_type], "sliding_window": 5,
            "use_bidirectional_attention": bidirectional
        }));
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
    fn each_block_sees_exactly_the_keys_transformers_shows_it() {
        // One block, so a token's state depends only on the tokens it attends to:
        // changing token 6 changes exactly the tokens that see it.
        let ids = [1i64, 5, 9, 13, 17, 21, 25, 2, 3, 4, 6, 7];
        let mut changed = ids;
        changed[6] = 29;
        let moved = |layer_type: &str, bidirectional: bool| -> Vec<usize> {
            let [a, b] = one_block(layer_type, bidirectional, [&ids, &changed]);
            (0..ids.len())
                .filter(|&t| (a.get(t as i64) - b.get(t as i64)).abs().max().double_value(&[]) > 1e-6)
                .collect()
        };
        // A window of 5: 2 keys each side when bidirectional; the query and 4 keys
        // before it when causal (so tokens 6..=10 see token 6).
        assert_eq!(moved("sliding_attention", true), [4, 5, 6, 7, 8]);
        assert_eq!(moved("sliding_attention", false), [6, 7, 8, 9, 10]);
        assert_eq!(moved("full_attention", true), (0..ids.len()).collect::<Vec<_>>());
        assert_eq!(moved("full_attention", false), (6..ids.len()).collect::<Vec<_>>());
    }

    #[test]
    fn f16_is_refused_and_bf16_and_f32_load() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &config(json!({})));
        let Err(err) = super::super::load_encoder(dir.path(), Kind::Half, Device::Cpu) else {
            panic!("Gemma 3 loaded in f16");
        };
        let message = err.to_string();
        assert!(matches!(err, EmbedError::UnsupportedPrecision { precision: "f16", .. }), "{message}");
        assert!(message.contains("bf16") && message.contains("f32"), "{message}");
        // bf16 and f32 load.
        for kind in [Kind::BFloat16, Kind::Float] {
            assert!(super::super::load_encoder(dir.path(), kind, Device::Cpu).is_ok(), "{kind:?}");
        }
    }
}
