//! Qwen3 (Qwen Team 2025, arXiv:2505.09388), the decoder under
//! Qwen3-Embedding-0.6B/4B/8B, which sentence-transformers loads as
//! transformers' `Qwen3Model` and pools at the last token (the `<|endoftext|>`
//! its tokenizer appends).
//!
//! Mirrors `src/transformers/models/qwen3/modeling_qwen3.py`:
//! - the token table; no position table, positions enter through RoPE;
//! - pre-norm blocks of RMSNorm → causal self-attention → residual, RMSNorm →
//!   SwiGLU MLP (`down(silu(gate(x)) · up(x))`) → residual; a final RMSNorm;
//! - grouped-query attention: `num_key_value_heads` key/value heads, each serving
//!   `num_attention_heads / num_key_value_heads` query heads;
//! - heads `head_dim` wide, given by the config and not derived from
//!   `hidden_size` (Qwen3-4B: 2560 wide, 32 heads of 128);
//! - an RMSNorm over each query and key head (`q_norm`, `k_norm`) before the
//!   rotation;
//! - no biases unless `attention_bias` (q/k/v/o projections).
//!
//! Positions are `0..T` whatever the padding side, as in transformers: RoPE only
//! ever compares two positions, so the shift a left-padded text gets changes no
//! score, and its padding is hidden by the mask.
//!
//! Not implemented, and refused by name: sliding-window layers
//! (`use_sliding_window`; no released Qwen3 model enables them) and RoPE types other
//! than `default` and `linear`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;

use super::Architecture;
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{Activation, AttentionMask, Linear, RmsNorm, Rope, Visibility};
use crate::weights::{Scope, Weights};

/// The fields of a Qwen3 `config.json` this implementation reads. Defaults are
/// transformers' `Qwen3Config` defaults (`head_dim` 128 included: transformers
/// never derives it from `hidden_size`).
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
    /// Decoder blocks.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Query heads per block.
    #[serde(default = "default_heads")]
    pub num_attention_heads: i64,
    /// Key/value heads per block (`None`: one per query head).
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Width of every head.
    #[serde(default = "default_head_dim")]
    pub head_dim: i64,
    /// The MLP gate's activation.
    #[serde(default = "silu")]
    pub hidden_act: Activation,
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
    /// RoPE base as the Hub's configs give it (transformers 4.x).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE parameters as transformers 4.x names them; wins over `rope_parameters`.
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    /// RoPE parameters as transformers 5 writes them (`rope_type`, `rope_theta`,
    /// `factor`).
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    /// Whether `sliding_window` applies (to layers from `max_window_layers` on).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Keys a sliding-window layer sees.
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// The first layer with a sliding window when `layer_types` is absent.
    #[serde(default = "default_max_window_layers")]
    pub max_window_layers: i64,
    /// Each block's attention, as transformers 5 writes it.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn default_vocab_size() -> i64 {
    151_936
}
fn default_hidden_size() -> i64 {
    4096
}
fn default_intermediate_size() -> i64 {
    22_016
}
fn default_layers() -> usize {
    32
}
fn default_heads() -> i64 {
    32
}
fn default_head_dim() -> i64 {
    128
}
fn silu() -> Activation {
    Activation::Silu
}
fn default_max_positions() -> i64 {
    32_768
}
fn default_eps() -> f64 {
    1e-6
}
fn default_max_window_layers() -> i64 {
    28
}

/// transformers' RoPE base when no spelling gives one.
const DEFAULT_THETA: f64 = 10_000.0;

/// One set of RoPE parameters; `type` is the transformers 4.x name of `rope_type`.
#[derive(Debug, Clone, Default, Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
}

/// What a config means once its spellings and defaults are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Key/value heads.
    pub kv_heads: i64,
    /// RoPE base.
    pub theta: f64,
    /// Positions are divided by this (`linear` RoPE scaling; 1 for none).
    pub linear_factor: f64,
}

impl Config {
    /// Validates the config and resolves it as transformers 5 does.
    pub fn plan(&self, config_path: &Path) -> Result<Plan, EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: config_path.to_path_buf(), reason };
        let heads = self.num_attention_heads;
        let kv_heads = self.num_key_value_heads.unwrap_or(heads);
        // Qwen3's heads need not split `hidden_size`: the attention is
        // `heads · head_dim` wide, which `check_sizes` sees as the split width.
        super::check_sizes(
            config_path,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("num_attention_heads", heads),
                ("num_key_value_heads", kv_heads),
                ("head_dim", self.head_dim),
                ("num_attention_heads * head_dim", heads.saturating_mul(self.head_dim)),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            self.num_hidden_layers,
            (heads.saturating_mul(self.head_dim), heads),
        )?;
        super::check_eps(config_path, "rms_norm_eps", self.rms_norm_eps)?;
        if heads % kv_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}; each key/value \
                 head must serve the same number of query heads"
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(invalid(format!(
                "head_dim is {}; rotary embeddings pair dimensions, so it must be even",
                self.head_dim
            )));
        }
        self.check_attention_kinds(config_path)?;
        let (theta, linear_factor) = self.rope(config_path)?;
        Ok(Plan { kv_heads, theta, linear_factor })
    }

    /// Refuses sliding-window layers: transformers gives a layer a window when
    /// `use_sliding_window` is set and the layer is `sliding_attention` in
    /// `layer_types` (or, without it, its index is at least `max_window_layers`).
    fn check_attention_kinds(&self, config_path: &Path) -> Result<(), EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: config_path.to_path_buf(), reason };
        let sliding_layers: Vec<usize> = match &self.layer_types {
            Some(types) if types.len() != self.num_hidden_layers => {
                return Err(invalid(format!(
                    "layer_types lists {} layers but num_hidden_layers is {}; give one type per layer",
                    types.len(),
                    self.num_hidden_layers
                )))
            }
            Some(types) => {
                if let Some(other) =
                    types.iter().find(|t| !matches!(t.as_str(), "full_attention" | "sliding_attention"))
                {
                    return Err(invalid(format!(
                        "layer_types has {other:?}; Qwen3 layers are \"full_attention\" or \"sliding_attention\""
                    )));
                }
                types.iter().enumerate().filter(|(_, t)| *t == "sliding_attention").map(|(i, _)| i).collect()
            }
            None if self.use_sliding_window && self.sliding_window.is_some() => {
                (0..self.num_hidden_layers).filter(|&i| i as i64 >= self.max_window_layers).collect()
            }
            None => Vec::new(),
        };
        if let Some(first) = sliding_layers.first() {
            return Err(invalid(format!(
                "layer {first} is a sliding-window layer (use_sliding_window {}, sliding_window {:?}, layer_types or \
                 max_window_layers {}); sliding-window attention is not implemented for Qwen3. Released Qwen3 \
                 models have use_sliding_window false and only full_attention layers",
                self.use_sliding_window, self.sliding_window, self.max_window_layers
            )));
        }
        Ok(())
    }

    /// `(theta, linear factor)` as transformers 5 resolves them: `rope_scaling`
    /// (when set) replaces `rope_parameters`; a theta inside them wins over the
    /// top-level `rope_theta`, then 10000.
    fn rope(&self, config_path: &Path) -> Result<(f64, f64), EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: config_path.to_path_buf(), reason };
        let empty = |v: &&Value| v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
        let (key, raw) = match (self.rope_scaling.as_ref().filter(|v| !empty(v)), &self.rope_parameters) {
            (Some(scaling), _) => ("rope_scaling", Some(scaling)),
            (None, parameters) => ("rope_parameters", parameters.as_ref().filter(|v| !empty(v))),
        };
        // Parameters per layer type (as ModernBERT and Gemma3 give them) are not
        // Qwen3's: transformers' Qwen3 fails to load them, so do not guess.
        if let Some(layer_type) =
            ["full_attention", "sliding_attention"].into_iter().find(|t| raw.is_some_and(|v| v.get(t).is_some()))
        {
            return Err(invalid(format!(
                "{key} gives parameters per layer type ({layer_type:?}); Qwen3 takes one set for every layer, \
                 e.g. {{\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}"
            )));
        }
        let params = match raw {
            None => RopeParameters::default(),
            Some(value) if value.is_null() => RopeParameters::default(),
            Some(value) => RopeParameters::deserialize(value)
                .map_err(|e| invalid(format!("{key} is not a set of RoPE parameters ({e})")))?,
        };
        let theta = params.rope_theta.or(self.rope_theta).unwrap_or(DEFAULT_THETA);
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(invalid(format!("the RoPE theta is {theta}; it must be a positive number")));
        }
        let kind = params.rope_type.or(params.legacy_type).unwrap_or_else(|| "default".to_owned());
        match kind.as_str() {
            "default" => Ok((theta, 1.0)),
            "linear" => {
                let factor = params.factor.ok_or_else(|| {
                    invalid(format!("{key} has rope_type \"linear\" without a factor; add \"factor\" (e.g. 2.0)"))
                })?;
                if !(factor > 0.0 && factor.is_finite()) {
                    return Err(invalid(format!("{key}.factor is {factor}; it must be a positive number")));
                }
                if let Some(partial) = params.partial_rotary_factor.filter(|&p| p != 1.0) {
                    return Err(invalid(format!(
                        "{key}.partial_rotary_factor is {partial}; rotating part of each head is not implemented"
                    )));
                }
                Ok((theta, factor))
            }
            other => Err(invalid(format!(
                "{key} has rope_type {other:?}, which is not supported; only \"default\" and \"linear\" are implemented"
            ))),
        }
    }
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(Qwen3Model::load(weights, self, config_path)?))
    }
}

/// The Qwen3 decoder stack, run as an encoder: token states of the last block,
/// after the final norm.
pub struct Qwen3Model {
    tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    rope: Rope,
    heads: i64,
    hidden_size: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit.
    config_path: PathBuf,
}

impl Qwen3Model {
    /// Builds the model from its weights: `embed_tokens.*`, `layers.N.*`, `norm.*`
    /// as sentence-transformers saves `Qwen3Model`, or the same under `model.` (a
    /// `Qwen3ForCausalLM` checkpoint); missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        let plan = config.plan(config_path)?;
        weights.detect_prefix("embed_tokens.weight");
        let root = weights.pp("");
        let c = config;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(&root.pp("layers").pp(i), c, &plan))
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = root.pp("embed_tokens").get("weight", &[c.vocab_size, c.hidden_size]);
        let device = tokens.device();
        Ok(Qwen3Model {
            tokens,
            layers,
            norm: RmsNorm::load(&root.pp("norm"), c.hidden_size, c.rms_norm_eps)?,
            rope: Rope::new(c.head_dim, plan.theta, plan.linear_factor, device)?,
            heads: c.num_attention_heads,
            hidden_size: c.hidden_size,
            limits: EncoderLimits {
                vocab_size: c.vocab_size,
                type_vocab_size: None,
                max_positions: usize::try_from(c.max_position_embeddings).unwrap_or(usize::MAX),
            },
            config_path: config_path.to_path_buf(),
        })
    }
}

impl Encoder for Qwen3Model {
    fn hidden_size(&self) -> i64 {
        self.hidden_size
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let (_, seq) = input.input_ids.size2()?;
        super::check_input(&self.config_path, input, self.limits)?;
        let mut hidden = Tensor::f_embedding(&self.tokens, &input.input_ids, -1, false, false)?;
        // The causal band and the rotation tables once per forward pass; the
        // tables `[T, head_dim]` rounded to the model's precision, as transformers
        // rounds them.
        let mask = AttentionMask::new(&input.attention_mask, Visibility::CAUSAL, self.heads, None)?;
        let (cos, sin) = self.rope.tables(seq, hidden.kind())?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask, &cos, &sin)?;
        }
        self.norm.forward(&hidden)
    }
}

struct Layer {
    input_norm: RmsNorm,
    /// q, k and v projections side by side: `heads·d`, `kv_heads·d`, `kv_heads·d`.
    qkv: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    o: Linear,
    post_attention_norm: RmsNorm,
    /// `[2 · intermediate, hidden]`: the gate, then the up projection.
    gate_up: Linear,
    activation: Activation,
    down: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Layer {
    fn load(w: &Scope<'_>, c: &Config, plan: &Plan) -> Result<Self, EmbedError> {
        let (h, i, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_width, kv_width) = (c.num_attention_heads * d, plan.kv_heads * d);
        let attention = w.pp("self_attn");
        let mlp = w.pp("mlp");
        let projection = |name: &str, out: i64| Linear::load_with_bias(&attention.pp(name), h, out, c.attention_bias);
        Ok(Layer {
            input_norm: RmsNorm::load(&w.pp("input_layernorm"), h, c.rms_norm_eps)?,
            qkv: Linear::fuse(&[
                projection("q_proj", q_width),
                projection("k_proj", kv_width),
                projection("v_proj", kv_width),
            ])?,
            q_norm: RmsNorm::load(&attention.pp("q_norm"), d, c.rms_norm_eps)?,
            k_norm: RmsNorm::load(&attention.pp("k_norm"), d, c.rms_norm_eps)?,
            o: Linear::load_with_bias(&attention.pp("o_proj"), q_width, h, c.attention_bias),
            post_attention_norm: RmsNorm::load(&w.pp("post_attention_layernorm"), h, c.rms_norm_eps)?,
            gate_up: Linear::fuse(&[
                Linear::load_no_bias(&mlp.pp("gate_proj"), h, i),
                Linear::load_no_bias(&mlp.pp("up_proj"), h, i),
            ])?,
            activation: c.hidden_act,
            down: Linear::load_no_bias(&mlp.pp("down_proj"), i, h),
            heads: c.num_attention_heads,
            kv_heads: plan.kv_heads,
            head_dim: d,
        })
    }

    /// One block; `cos` and `sin` are `[T, head_dim]` in `xs`'s precision.
    fn forward(&self, xs: &Tensor, mask: &AttentionMask, cos: &Tensor, sin: &Tensor) -> Result<Tensor, EmbedError> {
        let (q_width, kv_width) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let qkv = self.qkv.forward(&self.input_norm.forward(xs)?)?;
        // Each query and key head normalized, then rotated, rounded where
        // transformers rounds (in one pass on AVX-512 CPUs).
        let q = self.q_norm.forward_heads_rotated(&qkv, (0, self.heads), cos, sin)?;
        let k = self.k_norm.forward_heads_rotated(&qkv, (q_width, self.kv_heads), cos, sin)?;
        let v = qkv.f_narrow(-1, q_width + kv_width, kv_width)?;
        let context = mask.attend_split(&q, &k, &v, self.heads, self.kv_heads, None)?;
        let hidden = self.o.forward_plus(&context, xs)?;
        let both = self.gate_up.forward(&self.post_attention_norm.forward(&hidden)?)?;
        let gated = self.activation.forward_gated(&both)?;
        self.down.forward_plus(&gated, &hidden)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use super::super::tests::model_files::{write_model, Layout};
    use super::*;

    /// A small config; `extra` overrides or adds keys.
    fn config(extra: Value) -> Value {
        let mut config = json!({
            "model_type": "qwen3", "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 24,
            "max_position_embeddings": 64
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

    #[test]
    fn missing_keys_take_transformers_defaults() {
        let minimal = json!({"model_type": "qwen3", "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2});
        let parsed: Config = serde_json::from_value(minimal.clone()).unwrap();
        // transformers' head_dim default is 128 whatever hidden_size is.
        assert_eq!((parsed.head_dim, parsed.num_attention_heads, parsed.rms_norm_eps), (128, 32, 1e-6));
        assert_eq!(parsed.hidden_act, Activation::Silu);
        assert_eq!(plan(minimal).unwrap(), Plan { kv_heads: 32, theta: 10_000.0, linear_factor: 1.0 });
    }

    #[test]
    fn rope_settings_resolve_as_transformers_resolves_them() {
        for (extra, theta, factor) in [
            // Qwen3-Embedding's config.json on the Hub (transformers 4.51).
            (json!({"rope_theta": 1_000_000.0, "rope_scaling": null}), 1_000_000.0, 1.0),
            // transformers 5.
            (json!({"rope_parameters": {"rope_type": "default", "rope_theta": 300.0}}), 300.0, 1.0),
            // A theta inside the parameters wins over the top-level one, which fills in.
            (json!({"rope_theta": 5.0, "rope_parameters": {"rope_type": "default", "rope_theta": 7.0}}), 7.0, 1.0),
            (json!({"rope_theta": 5.0, "rope_parameters": {"rope_type": "linear", "factor": 2.0}}), 5.0, 2.0),
            // rope_scaling, when set, replaces rope_parameters; `type` is its old name for rope_type.
            (
                json!({"rope_scaling": {"type": "linear", "factor": 4.0}, "rope_parameters": {"rope_theta": 7.0}}),
                10_000.0,
                4.0,
            ),
            (json!({"rope_scaling": {}, "rope_parameters": {"rope_theta": 7.0}}), 7.0, 1.0),
            // A window that use_sliding_window leaves off.
            (json!({"sliding_window": 4096, "use_sliding_window": false, "max_window_layers": 0}), 10_000.0, 1.0),
        ] {
            let p = plan(config(extra.clone())).unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert_eq!((p.theta, p.linear_factor), (theta, factor), "{extra}");
        }
    }

    #[test]
    fn configs_the_model_cannot_honour_are_refused_naming_the_key() {
        for (extra, expected) in [
            (json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}), "rope_scaling has rope_type \"yarn\""),
            (json!({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}), "rope_type \"dynamic\""),
            (json!({"rope_parameters": {"rope_type": "linear"}}), "\"linear\" without a factor"),
            (json!({"rope_parameters": {"rope_type": "linear", "factor": 0.0}}), "rope_parameters.factor is 0"),
            (
                json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}}),
                "partial_rotary_factor is 0.5",
            ),
            (json!({"rope_parameters": {"rope_theta": "big"}}), "rope_parameters is not a set of RoPE parameters"),
            (
                json!({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 9.0}}}),
                "rope_parameters gives parameters per layer type (\"full_attention\")",
            ),
            (json!({"rope_theta": 0.0}), "the RoPE theta is 0"),
            (json!({"rope_theta": -1.0, "rope_parameters": {"rope_type": "default"}}), "the RoPE theta is -1"),
            (
                json!({"use_sliding_window": true, "sliding_window": 8, "max_window_layers": 1}),
                "layer 1 is a sliding-window layer",
            ),
            (json!({"layer_types": ["full_attention", "sliding_attention"]}), "layer 1 is a sliding-window layer"),
            (json!({"layer_types": ["full_attention"]}), "layer_types lists 1 layers but num_hidden_layers is 2"),
            (json!({"layer_types": ["full_attention", "chunked"]}), "layer_types has \"chunked\""),
            (json!({"num_key_value_heads": 3}), "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
            (json!({"num_key_value_heads": 0}), "num_key_value_heads is 0"),
            (json!({"head_dim": 7}), "head_dim is 7; rotary embeddings pair dimensions"),
            (json!({"head_dim": -8}), "head_dim is -8"),
            (json!({"rms_norm_eps": 0.0}), "rms_norm_eps is 0"),
            (json!({"vocab_size": 0}), "vocab_size is 0; it must be between 1 and"),
            (json!({"num_hidden_layers": 0}), "num_hidden_layers is 0"),
            (json!({"num_attention_heads": 1 << 30}), "num_attention_heads is 1073741824"),
        ] {
            let err = plan(config(extra.clone())).expect_err("the config must be refused").to_string();
            assert!(err.contains(expected) && err.contains("config.json"), "{extra}: {err}");
        }
    }

    /// Random weights for `config` under `prefix` (`""` as sentence-transformers
    /// saves `Qwen3Model`, `"model."` in a `Qwen3ForCausalLM` checkpoint).
    fn write_tiny(dir: &Path, config: &Value, prefix: &str) {
        let n = |k: &str| config[k].as_i64().unwrap();
        let (h, i, d) = (n("hidden_size"), n("intermediate_size"), n("head_dim"));
        let (q, kv) = (n("num_attention_heads") * d, n("num_key_value_heads") * d);
        let mut shapes =
            vec![("embed_tokens.weight".to_owned(), vec![n("vocab_size"), h]), ("norm.weight".into(), vec![h])];
        for l in 0..n("num_hidden_layers") {
            let p = format!("layers.{l}");
            for (name, shape) in [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![q, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, q]),
                ("self_attn.q_norm.weight", vec![d]),
                ("self_attn.k_norm.weight", vec![d]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                shapes.push((format!("{p}.{name}"), shape));
            }
        }
        tch::manual_seed(23);
        let tensors: Vec<(String, Tensor)> = shapes
            .into_iter()
            .map(|(name, shape)| {
                (format!("{prefix}{name}"), Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.3 + 0.05)
            })
            .collect();
        write_model(dir, config, &tensors, Layout::Safetensors);
    }

    fn token_states(dir: &Path, ids: &[i64]) -> Tensor {
        let encoder = super::super::load_encoder(dir, Kind::Float, Device::Cpu).unwrap();
        let len = ids.len() as i64;
        let input = crate::EncoderInput {
            input_ids: Tensor::from_slice(ids).view([1, len]),
            attention_mask: Tensor::ones([1, len], (Kind::Int64, Device::Cpu)),
            token_type_ids: Tensor::zeros([1, len], (Kind::Int64, Device::Cpu)),
        };
        encoder.forward(&input).unwrap().get(0)
    }

    #[test]
    fn a_token_sees_only_itself_and_the_tokens_before_it() {
        // A causal-LM checkpoint (weights under `model.`, as Qwen3ForCausalLM saves
        // them): changing token 5 must leave tokens 0..5 as they were and change
        // every token from 5 on.
        let dir = tempfile::tempdir().unwrap();
        let config = config(json!({"architectures": ["Qwen3ForCausalLM"]}));
        write_tiny(dir.path(), &config, "model.");
        let ids = [1i64, 5, 9, 13, 17, 21, 25, 2, 3];
        let mut changed = ids;
        changed[5] = 29;
        let (a, b) = (token_states(dir.path(), &ids), token_states(dir.path(), &changed));
        assert_eq!(a.size(), [9, 16], "hidden_size wide, though the heads are 4 × 8 = 32 wide");
        let moved: Vec<bool> =
            (0..ids.len() as i64).map(|t| (a.get(t) - b.get(t)).abs().max().double_value(&[]) > 1e-6).collect();
        assert_eq!(moved, [false, false, false, false, false, true, true, true, true]);
    }
}
