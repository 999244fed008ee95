//! The T5 encoder (Raffel et al. 2019, arXiv:1910.10683), as sentence-t5 and GTR
//! use it: sentence-transformers loads a `t5` config as `T5EncoderModel`, then
//! mean-pools and applies a bias-free Dense layer.
//!
//! Mirrors transformers' `T5EncoderModel` (`src/transformers/models/t5/modeling_t5.py`):
//! - no position embeddings; a bias added to the attention scores from T5's
//!   bidirectional relative-distance buckets, whose table only block 0 stores and
//!   every block reuses (computed once per forward pass here);
//! - pre-norm blocks with T5's RMSNorm (no mean subtraction, no bias, computed in
//!   f32), a final norm after the last block, no biases anywhere;
//! - scores `q·k` are not divided by √d_kv (T5 folded the scale into its init);
//! - the feed-forward is `wo(act(wi x))` for `feed_forward_proj: "relu"` (the
//!   original T5, sentence-t5) or `wo(act(wi_0 x) · wi_1 x)` for `"gated-…"` (T5
//!   v1.1), where `"gated-gelu"` means the tanh approximation, as transformers maps it.
//!
//! In f16 transformers keeps `wo` in f32 (`_keep_in_fp32_modules`) and clamps
//! infinities after every sub-block, because T5's activations overflow f16's range;
//! this does the same.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::Architecture;
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{positions, Activation, AttentionMask, Linear, RmsNorm};
use crate::weights::{Scope, Weights};

/// More blocks than this is not a model but a hostile config (as in `check_sizes`).
const MAX_LAYERS: usize = 256;

/// T5 has no position table, so no length limit of its own: the token limit comes
/// from `max_seq_length` or the tokenizer's `model_max_length` (sentence-t5 and
/// GTR declare one). This only keeps the limit a finite number; texts are capped far
/// below it by `MAX_TEXT_BYTES`.
const NO_POSITION_LIMIT: usize = 1 << 30;

/// The fields of a T5 `config.json` this implementation reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Rows of the embedding table (`shared`).
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub d_model: i64,
    /// Width of one attention head (`num_heads · d_kv` need not equal `d_model`).
    pub d_kv: i64,
    /// Width of the feed-forward layer.
    pub d_ff: i64,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Attention heads per block.
    pub num_heads: i64,
    /// Rows of the relative attention bias table.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
    /// Distance from which every farther key shares one bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `"relu"`, `"gelu"`, … or `"gated-gelu"`, `"gated-silu"`, ….
    #[serde(default = "default_feed_forward")]
    pub feed_forward_proj: String,
}

fn default_buckets() -> i64 {
    32
}

fn default_max_distance() -> i64 {
    128
}

fn default_eps() -> f64 {
    1e-6
}

fn default_feed_forward() -> String {
    "relu".to_owned()
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(T5Encoder::load(weights, self, config_path)?))
    }
}

/// The feed-forward variant `feed_forward_proj` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FeedForward {
    gated: bool,
    activation: Activation,
}

impl Config {
    /// Refuses values no T5 has before anything is allocated, naming T5's own keys.
    fn validate(&self, config_path: &Path) -> Result<FeedForward, EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: config_path.to_path_buf(), reason };
        if self.num_layers == 0 || self.num_layers > MAX_LAYERS {
            return Err(invalid(format!("num_layers is {}; it must be between 1 and {MAX_LAYERS}", self.num_layers)));
        }
        super::check_sizes(
            config_path,
            &[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("d_kv", self.d_kv),
                ("d_ff", self.d_ff),
                ("num_heads", self.num_heads),
                ("relative_attention_num_buckets", self.relative_attention_num_buckets),
                ("relative_attention_max_distance", self.relative_attention_max_distance),
            ],
            self.num_layers,
            // Heads are d_kv wide whatever d_model is; only their count is checked here.
            (self.num_heads, self.num_heads),
        )?;
        if self.num_heads.checked_mul(self.d_kv).is_none_or(|inner| inner > 1 << 24) {
            return Err(invalid(format!(
                "num_heads {} × d_kv {} is larger than any model's attention width",
                self.num_heads, self.d_kv
            )));
        }
        // Half the buckets per direction, a quarter exact: fewer than 4 leaves no exact
        // bucket, and the logarithmic ones need max_distance beyond the exact ones.
        let exact = self.relative_attention_num_buckets / 4;
        if exact < 1 || self.relative_attention_max_distance <= exact {
            return Err(invalid(format!(
                "relative_attention_num_buckets {} and relative_attention_max_distance {} cannot bucket distances; \
                 the buckets must be at least 4 and the distance more than a quarter of them (released models use 32 and 128)",
                self.relative_attention_num_buckets, self.relative_attention_max_distance
            )));
        }
        super::check_eps(config_path, "layer_norm_epsilon", self.layer_norm_epsilon)?;
        let unknown = || {
            invalid(format!(
                "feed_forward_proj {:?} is not an activation or \"gated-\" and an activation (released models use \"relu\" or \"gated-gelu\")",
                self.feed_forward_proj
            ))
        };
        let (gated, name) = match self.feed_forward_proj.split('-').collect::<Vec<_>>().as_slice() {
            [name] => (false, *name),
            ["gated", name] => (true, *name),
            _ => return Err(unknown()),
        };
        // transformers' compatibility rule for T5 v1.1 checkpoints.
        let name = if self.feed_forward_proj == "gated-gelu" { "gelu_new" } else { name };
        let activation: Activation =
            serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| unknown())?;
        Ok(FeedForward { gated, activation })
    }
}

/// The T5 encoder stack.
pub struct T5Encoder {
    embed: Tensor,
    /// `[buckets, heads]`, block 0's `relative_attention_bias`.
    relative_bias: Tensor,
    buckets: i64,
    max_distance: i64,
    layers: Vec<Block>,
    final_norm: RmsNorm,
    d_model: i64,
    limits: EncoderLimits,
    /// config.json, named when an input does not fit the embedding table.
    config_path: PathBuf,
}

impl T5Encoder {
    /// Builds the encoder from its weights; missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        let feed_forward = config.validate(config_path)?;
        weights.detect_prefix("encoder.final_layer_norm.weight");
        let root = weights.pp("");
        let encoder = root.pp("encoder");
        let (d, eps) = (config.d_model, config.layer_norm_epsilon);
        // The tied table: transformers 5 saves `shared.weight` only, older savers
        // both names, some encoder-only exports `encoder.embed_tokens.weight` only.
        let table = if root.has("shared.weight") || !encoder.has("embed_tokens.weight") {
            root.pp("shared")
        } else {
            encoder.pp("embed_tokens")
        };
        let blocks = encoder.pp("block");
        let layers = (0..config.num_layers)
            .map(|i| Block::load(&blocks.pp(i).pp("layer"), config, feed_forward))
            .collect::<Result<_, _>>()?;
        let attention = blocks.pp(0).pp("layer").pp(0).pp("SelfAttention");
        Ok(T5Encoder {
            embed: table.get("weight", &[config.vocab_size, d]),
            relative_bias: attention
                .pp("relative_attention_bias")
                .get("weight", &[config.relative_attention_num_buckets, config.num_heads]),
            buckets: config.relative_attention_num_buckets,
            max_distance: config.relative_attention_max_distance,
            layers,
            final_norm: RmsNorm::load(&encoder.pp("final_layer_norm"), d, eps)?,
            d_model: d,
            limits: EncoderLimits {
                vocab_size: config.vocab_size,
                type_vocab_size: None,
                max_positions: NO_POSITION_LIMIT,
            },
            config_path: config_path.to_path_buf(),
        })
    }

    /// `[1, heads, T, T]` bias from the bucketed relative distance `key - query`,
    /// in the model's precision (as transformers adds it).
    fn position_bias(&self, seq: i64) -> Result<Tensor, EmbedError> {
        // Buckets on the CPU (see `positions::relative_bucket`).
        let relative = positions::relative_distances(seq)?;
        let buckets = positions::relative_bucket(&relative, self.buckets, self.max_distance)?
            .f_to_device(self.relative_bias.device())?;
        let values = Tensor::f_embedding(&self.relative_bias, &buckets, -1, false, false)?; // [q, k, heads]
        Ok(values.f_permute([2, 0, 1])?.f_unsqueeze(0)?)
    }
}

impl Encoder for T5Encoder {
    fn hidden_size(&self) -> i64 {
        self.d_model
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let (_, seq) = input.input_ids.size2()?;
        super::check_input(&self.config_path, input, self.limits)?;
        // Distances between real tokens do not change when padding shifts them, so
        // left and right padding give the same bias between them.
        let mask = AttentionMask::padding_and_bias(&input.attention_mask, &self.position_bias(seq)?)?;
        let mut hidden = Tensor::f_embedding(&self.embed, &input.input_ids, -1, false, false)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        self.final_norm.forward(&hidden)
    }
}

/// One `T5Block`: `layer.0` self-attention, `layer.1` feed-forward, each pre-norm
/// with a residual add.
struct Block {
    attention_norm: RmsNorm,
    /// `q`, `k` and `v` fused into one `[3·heads·d_kv, d_model]` product (the layout
    /// our attention kernel reads), with `q` multiplied by √d_kv: the kernel divides
    /// scores by √d_kv and T5 does not, so this undoes it once at load instead of on
    /// every forward pass (exact when √d_kv is a power of two, as d_kv = 64 gives).
    qkv: Linear,
    o: Linear,
    ff_norm: RmsNorm,
    /// `wi`, or `wi_0` of a gated feed-forward.
    wi: Linear,
    /// `wi_1` of a gated feed-forward.
    gate: Option<Linear>,
    activation: Activation,
    wo: Linear,
    heads: i64,
}

impl Block {
    fn load(w: &Scope<'_>, c: &Config, feed_forward: FeedForward) -> Result<Self, EmbedError> {
        let (d, inner, eps) = (c.d_model, c.num_heads * c.d_kv, c.layer_norm_epsilon);
        let attention = w.pp(0).pp("SelfAttention");
        let q = attention.pp("q").get("weight", &[inner, d]).f_mul_scalar((c.d_kv as f64).sqrt())?;
        let dense = w.pp(1).pp("DenseReluDense");
        let (wi, gate) = if feed_forward.gated {
            (
                Linear::load_no_bias(&dense.pp("wi_0"), d, c.d_ff),
                Some(Linear::load_no_bias(&dense.pp("wi_1"), d, c.d_ff)),
            )
        } else {
            (Linear::load_no_bias(&dense.pp("wi"), d, c.d_ff), None)
        };
        let wo = Linear::load_no_bias(&dense.pp("wo"), c.d_ff, d);
        // As transformers keeps it in f16 models: the product that overflows first.
        let wo = if q.kind() == Kind::Half { wo.to_kind(Kind::Float)? } else { wo };
        Ok(Block {
            attention_norm: RmsNorm::load(&w.pp(0).pp("layer_norm"), d, eps)?,
            qkv: Linear::fuse(&[
                Linear::new(q, None),
                Linear::load_no_bias(&attention.pp("k"), d, inner),
                Linear::load_no_bias(&attention.pp("v"), d, inner),
            ])?,
            o: Linear::load_no_bias(&attention.pp("o"), inner, d),
            ff_norm: RmsNorm::load(&w.pp(1).pp("layer_norm"), d, eps)?,
            wi,
            gate,
            activation: feed_forward.activation,
            wo,
            heads: c.num_heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &AttentionMask) -> Result<Tensor, EmbedError> {
        let normed = self.attention_norm.forward(xs)?;
        let context = mask.attend(&self.qkv.forward(&normed)?, self.heads)?;
        let attended = clamp_f16(self.o.forward_plus(&context, xs)?)?;
        let normed = self.ff_norm.forward(&attended)?;
        let mut inner = self.wi.forward_activated(&normed, self.activation)?;
        if let Some(gate) = &self.gate {
            inner = inner.f_mul(&gate.forward(&normed)?)?;
        }
        let out = if attended.kind() == Kind::Half {
            // `wo` is f32 here (see `load`); the sum is rounded to f16 once.
            let sum = self.wo.forward_plus(&inner.f_to_kind(Kind::Float)?, &attended.f_to_kind(Kind::Float)?)?;
            sum.f_to_kind(Kind::Half)?
        } else {
            self.wo.forward_plus(&inner, &attended)?
        };
        clamp_f16(out)
    }
}

/// transformers' f16 guard after each T5 sub-block: when any value overflowed to
/// ±inf, every value is clamped to 1000 below f16's largest, so later blocks see
/// large finite numbers instead of inf (and NaN after the next norm).
fn clamp_f16(xs: Tensor) -> Result<Tensor, EmbedError> {
    if xs.kind() != Kind::Half {
        return Ok(xs);
    }
    const F16_MAX: f64 = 65504.0;
    let overflowed = xs.f_isinf()?.f_any()?;
    let limit = Tensor::f_where_scalar(&overflowed, F16_MAX - 1000.0, F16_MAX)?.f_to_kind(Kind::Half)?;
    Ok(xs.f_clamp_tensor(Some(limit.f_neg()?), Some(limit))?)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tch::Device;

    use super::super::load_encoder;
    use super::super::tests::model_files::{write_model, Layout};
    use super::*;

    fn config() -> Value {
        json!({
            "model_type": "t5", "architectures": ["T5EncoderModel"], "vocab_size": 20, "d_model": 8,
            "d_kv": 4, "d_ff": 16, "num_layers": 2, "num_heads": 3, "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu"
        })
    }

    /// Random tensors named and shaped as the gated `config()` describes, with the
    /// embedding table under `table`.
    fn tensors(table: &str) -> Vec<(String, Tensor)> {
        let (d, inner, ff) = (8, 12, 16);
        let mut shapes: Vec<(String, Vec<i64>)> = vec![
            (table.to_owned(), vec![20, d]),
            ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".into(), vec![32, 3]),
            ("encoder.final_layer_norm.weight".into(), vec![d]),
        ];
        for l in 0..2 {
            let p = format!("encoder.block.{l}.layer");
            for x in ["q", "k", "v"] {
                shapes.push((format!("{p}.0.SelfAttention.{x}.weight"), vec![inner, d]));
            }
            shapes.push((format!("{p}.0.SelfAttention.o.weight"), vec![d, inner]));
            shapes.push((format!("{p}.0.layer_norm.weight"), vec![d]));
            shapes.push((format!("{p}.1.DenseReluDense.wi_0.weight"), vec![ff, d]));
            shapes.push((format!("{p}.1.DenseReluDense.wi_1.weight"), vec![ff, d]));
            shapes.push((format!("{p}.1.DenseReluDense.wo.weight"), vec![d, ff]));
            shapes.push((format!("{p}.1.layer_norm.weight"), vec![d]));
        }
        shapes.into_iter().map(|(name, shape)| (name, Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.5)).collect()
    }

    fn with(mut config: Value, key: &str, value: Value) -> Value {
        config[key] = value;
        config
    }

    fn load(config: &Value, weights: &[(String, Tensor)]) -> Result<Box<dyn Encoder>, EmbedError> {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), config, weights, Layout::Safetensors);
        load_encoder(dir.path(), Kind::Float, Device::Cpu)
    }

    #[test]
    fn values_no_t5_has_are_refused_naming_the_key() {
        let weights = tensors("shared.weight");
        for (key, value, expected) in [
            ("num_layers", json!(0), "num_layers is 0; it must be between 1 and 256"),
            ("num_heads", json!(0), "num_heads is 0; it must be between 1 and"),
            ("d_kv", json!(-1), "d_kv is -1; it must be between 1 and"),
            ("d_ff", json!(1_i64 << 40), "d_ff is 1099511627776; it must be between 1 and"),
            ("relative_attention_num_buckets", json!(2), "relative_attention_num_buckets 2 and"),
            ("relative_attention_max_distance", json!(8), "relative_attention_max_distance 8 cannot bucket"),
            ("layer_norm_epsilon", json!(0), "layer_norm_epsilon is 0; it must be a positive finite number"),
            ("feed_forward_proj", json!("gated-gelu-x"), "feed_forward_proj \"gated-gelu-x\" is not an activation"),
            ("feed_forward_proj", json!("swiglu"), "feed_forward_proj \"swiglu\" is not an activation"),
        ] {
            let err = load(&with(config(), key, value), &weights).err().expect("must fail").to_string();
            assert!(err.contains(expected) && err.contains("config.json"), "{key}: {err}");
        }
        // Plausible sizes that disagree with the checkpoint name the tensor.
        let err = load(&with(config(), "d_kv", json!(8)), &weights).err().expect("must fail").to_string();
        assert!(
            err.contains("encoder.block.0.layer.0.SelfAttention.q.weight: expected [24, 8], found [12, 8]"),
            "{err}"
        );
        // A relu config asks for `wi`, which a gated checkpoint lacks.
        let err = load(&with(config(), "feed_forward_proj", json!("relu")), &weights).err().unwrap().to_string();
        assert!(err.contains("DenseReluDense.wi.weight (expected [16, 8])"), "{err}");
    }

    #[test]
    fn feed_forward_names_map_as_in_transformers() {
        let parse = |name: &str| {
            let c: Config = serde_json::from_value(with(config(), "feed_forward_proj", json!(name))).unwrap();
            c.validate(Path::new("config.json")).unwrap()
        };
        assert_eq!(parse("relu"), FeedForward { gated: false, activation: Activation::Relu });
        assert_eq!(parse("gelu"), FeedForward { gated: false, activation: Activation::Gelu });
        // The T5 v1.1 rule: "gated-gelu" is the tanh approximation.
        assert_eq!(parse("gated-gelu"), FeedForward { gated: true, activation: Activation::GeluTanh });
        assert_eq!(parse("gated-silu"), FeedForward { gated: true, activation: Activation::Silu });
    }

    #[test]
    fn the_tied_table_loads_under_either_name() {
        let input = EncoderInput {
            input_ids: Tensor::from_slice(&[4i64, 19, 0, 1]).view([1, 4]),
            attention_mask: Tensor::ones([1, 4], (Kind::Int64, Device::Cpu)),
            token_type_ids: Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu)),
        };
        // Drawn once: tests share libtorch's random generator.
        let weights = tensors("shared.weight");
        let renamed: Vec<_> = weights
            .iter()
            .map(|(n, t)| (n.replace("shared.weight", "encoder.embed_tokens.weight"), t.shallow_clone()))
            .collect();
        let mut both = weights.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>();
        both.push(("encoder.embed_tokens.weight".into(), weights[0].1.shallow_clone()));
        let outputs: Vec<Tensor> = [&weights, &renamed, &both]
            .iter()
            .map(|w| {
                let encoder = load(&config(), w).unwrap();
                assert_eq!(encoder.limits().type_vocab_size, None);
                encoder.forward(&input).unwrap()
            })
            .collect();
        assert_eq!(outputs[0].size(), [1, 4, 8]);
        assert!(outputs[1].f_equal(&outputs[0]).unwrap() && outputs[2].f_equal(&outputs[0]).unwrap());
        let encoder = load(&config(), &weights).unwrap();
        let mut bad = input;
        bad.input_ids = Tensor::from_slice(&[4i64, 20, 0, 1]).view([1, 4]);
        let err = encoder.forward(&bad).unwrap_err().to_string();
        assert!(err.contains("token id 20 is not between 0 and vocab_size - 1 = 19"), "{err}");
    }

    #[test]
    fn f16_overflow_is_clamped_as_transformers_clamps_it() {
        let values = |t: &Tensor| Vec::<f32>::try_from(t.to_kind(Kind::Float)).unwrap();
        let fine = Tensor::from_slice(&[1.5f32, -65504.0, 3.0]).to_kind(Kind::Half);
        assert_eq!(values(&clamp_f16(fine).unwrap()), [1.5, -65504.0, 3.0], "nothing overflowed: unchanged");
        let over = Tensor::from_slice(&[f32::INFINITY, -65504.0, 3.0, f32::NEG_INFINITY]).to_kind(Kind::Half);
        // 65504 - 1000 rounds to 64512 in f16 (steps of 32 there).
        assert_eq!(values(&clamp_f16(over).unwrap()), [64512.0, -64512.0, 3.0, -64512.0]);
        let f32s = Tensor::from_slice(&[f32::INFINITY]);
        assert_eq!(values(&clamp_f16(f32s).unwrap()), [f32::INFINITY], "only f16 is clamped");
    }
}
