//! DeBERTa-v2 and v3 (He et al. 2021, arXiv:2006.03654 and arXiv:2111.09543): the
//! encoder of DeBERTa-v3 / mDeBERTa-v3 based embedders and of the ms-marco and
//! mixedbread deberta-v3 rerankers. `model_type` "deberta-v2" covers both versions.
//!
//! Mirrors transformers' `DebertaV2Model`
//! (`src/transformers/models/deberta_v2/modeling_deberta_v2.py`):
//! - embeddings: words, then (when configured) absolute positions and token types,
//!   a projection when `embedding_size` differs from `hidden_size`, a LayerNorm, and
//!   padding positions zeroed;
//! - disentangled attention: the score of query `i` and key `j` is
//!   `(qᵢ·kⱼ + qᵢ·Pk[δ(i,j)] + kⱼ·Pq[δ(i,j)]) / √(d·s)`, where `Pk`, `Pq` are the
//!   relative-position embeddings through the key and query projections (shared with
//!   the content ones under `share_att_key`, else `pos_key_proj`/`pos_query_proj`),
//!   `δ(i,j)` is the table row of the (log-bucketed) distance `i − j`, and `s` is one
//!   plus the number of position terms (`pos_att_type`);
//! - post-LayerNorm residual blocks as in BERT; v2-xlarge adds a convolution over
//!   the embeddings after the first block (`conv_kernel_size`).
//!
//! The position bias depends on each text's queries and keys, so attention is
//! computed here, explicitly in f32, rather than by the shared kernels (which take a
//! bias shared by the batch).
//!
//! Sequence classification (`DebertaV2ForSequenceClassification`): the first
//! token's state → `pooler.dense` → `pooler_hidden_act` → `classifier`.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use tch::{Kind, Tensor};

use super::{Architecture, Classifier};
use crate::encoder::EncoderLimits;
use crate::encoder::{Encoder, EncoderInput};
use crate::error::EmbedError;
use crate::layers::{Activation, ClassificationHead, HeadPooling, LayerNorm, Linear};
use crate::weights::Weights;

/// The fields of a DeBERTa-v2 `config.json` this implementation reads. Defaults are
/// transformers' `DebertaV2Config` defaults, for keys older configs leave out.
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
    #[serde(default = "default_gelu")]
    pub hidden_act: Activation,
    /// Rows of the absolute position table (when `position_biased_input`), and the
    /// relative span when `max_relative_positions` is below 1.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
    /// Rows of the token type table; 0 (v3) means token types are ignored.
    #[serde(default)]
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Whether attention has the relative-position terms at all.
    #[serde(default)]
    pub relative_attention: bool,
    /// Relative distances the table spans each way; below 1: `max_position_embeddings`.
    #[serde(default = "minus_one")]
    pub max_relative_positions: i64,
    /// Log-bucketed distances: the table holds `position_buckets` rows each way;
    /// 0 or below: exact distances, clamped at the span.
    #[serde(default = "minus_one")]
    pub position_buckets: i64,
    /// Which position terms attention adds: "c2p" (content to position), "p2c".
    /// A list, or the older "p2c|c2p" string.
    #[serde(default, deserialize_with = "pos_att_type")]
    pub pos_att_type: Vec<String>,
    /// Whether the position terms use the content query/key projections.
    #[serde(default)]
    pub share_att_key: bool,
    /// "layer_norm" normalizes the relative embeddings; "none" leaves them.
    #[serde(default = "default_norm_rel_ebd")]
    pub norm_rel_ebd: String,
    /// Whether absolute position embeddings are added to the input (v3: false).
    #[serde(default = "default_true")]
    pub position_biased_input: bool,
    /// Width of the embedding tables; `hidden_size` when absent.
    #[serde(default)]
    pub embedding_size: Option<i64>,
    /// Width of each head; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub attention_head_size: Option<i64>,
    /// Kernel width of the convolution after the first block; 0: none.
    #[serde(default)]
    pub conv_kernel_size: i64,
    /// Groups of that convolution.
    #[serde(default = "one")]
    pub conv_groups: i64,
    /// Activation after that convolution.
    #[serde(default = "default_tanh")]
    pub conv_act: Activation,
    /// Width of the classification pooler; must be `hidden_size`.
    #[serde(default)]
    pub pooler_hidden_size: Option<i64>,
    /// Activation after the classification pooler's dense layer.
    #[serde(default = "default_gelu")]
    pub pooler_hidden_act: Activation,
}

fn default_gelu() -> Activation {
    Activation::Gelu
}
fn default_tanh() -> Activation {
    Activation::Tanh
}
fn default_max_position_embeddings() -> i64 {
    512
}
fn default_layer_norm_eps() -> f64 {
    1e-7
}
fn minus_one() -> i64 {
    -1
}
fn one() -> i64 {
    1
}
fn default_true() -> bool {
    true
}
fn default_norm_rel_ebd() -> String {
    "none".to_owned()
}

/// `pos_att_type` as a list, or as transformers' older "p2c|c2p" string (split on
/// `|`, trimmed, lowercased, as transformers reads it); `null` is an empty list.
fn pos_att_type<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Option::<Either>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Either::List(list)) => list,
        Some(Either::Joined(joined)) => joined.to_lowercase().split('|').map(|s| s.trim().to_owned()).collect(),
    })
}

/// The relative-position setup every layer shares, checked once at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelativePositions {
    /// Rows each way: the table has `2 · span` rows, row `span + δ` for distance δ.
    span: i64,
    /// `Some((buckets, max_position))` for log buckets.
    log_buckets: Option<(i64, i64)>,
}

impl RelativePositions {
    /// For a sequence of `seq` tokens: the `[seq, seq]` table rows `δ(i, j)` of the
    /// distances `i − j` (clamped into the table), shifted down by the first row any
    /// pair uses, and that range of rows `(first, count)`. Only those rows need
    /// projecting against the queries and keys.
    fn rows(&self, seq: i64) -> Result<(Tensor, i64, i64), EmbedError> {
        // One row per distance −(seq−1) ..= seq−1.
        let per_distance: Vec<i64> = (-(seq - 1)..seq)
            .map(|d| {
                let bucket = match self.log_buckets {
                    Some((buckets, max_position)) => log_bucket(d, buckets, max_position),
                    None => d,
                };
                (bucket + self.span).clamp(0, 2 * self.span - 1)
            })
            .collect();
        let first = per_distance.iter().copied().min().unwrap_or(0);
        let last = per_distance.iter().copied().max().unwrap_or(0);
        let shifted: Vec<i64> = per_distance.iter().map(|r| r - first).collect();
        let table = Tensor::from_slice(&shifted);
        // distance i − j, offset to index the table.
        let positions = Tensor::f_arange(seq, (Kind::Int64, tch::Device::Cpu))?;
        let distances = positions.f_unsqueeze(1)?.f_sub(&positions.f_unsqueeze(0)?)?.f_add_scalar(seq - 1)?;
        let rows = table.f_index_select(0, &distances.f_view([-1])?)?.f_view([seq, seq])?;
        Ok((rows, first, last - first + 1))
    }
}

/// transformers' `make_log_bucket_position` for one distance: distances up to
/// `buckets / 2` each way are kept exactly; beyond, the bucket grows with the
/// logarithm of the distance, reaching `buckets − 1` at `max_position − 1`. The
/// arithmetic is f32 in transformers' order (a one-ulp difference at a bucket edge
/// would move a distance to the next bucket).
pub(crate) fn log_bucket(distance: i64, buckets: i64, max_position: i64) -> i64 {
    let mid = buckets / 2;
    let magnitude = distance.abs();
    if magnitude <= mid {
        return distance;
    }
    // transformers divides in Python floats (f64) and rounds to f32; f64 then f32
    // rounding of a quotient equals a direct f32 quotient, as the ratio below uses.
    let scale = (((max_position - 1) as f64 / mid as f64) as f32).ln();
    let ratio = (magnitude as f32 / mid as f32).ln() / scale;
    let bucket = (ratio * (mid - 1) as f32).ceil() + mid as f32;
    distance.signum() * bucket as i64
}

/// The DeBERTa-v2 encoder stack.
pub struct DebertaV2Model {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    conv: Option<Conv>,
    /// The relative embeddings (`encoder.rel_embeddings`), rows `0 .. 2·span`.
    relative: Option<Relative>,
    hidden_size: i64,
    heads: i64,
    /// `1 / √(head_dim · (1 + number of position terms))`.
    scale: f64,
    c2p: bool,
    p2c: bool,
    limits: EncoderLimits,
    config_path: PathBuf,
}

struct Relative {
    table: Tensor,
    norm: Option<LayerNorm>,
    positions: RelativePositions,
    /// Per layer, `(Pk, Pq)` as `[heads, 2·span, head_dim]` f32: the relative
    /// embeddings through that layer's position projections. They depend on the
    /// weights only, so they are computed at the first forward pass and kept (not at
    /// load: `Weights::build` runs the loader once on empty stand-ins).
    projected: OnceCell<Vec<Projected>>,
}

/// One layer's relative embeddings through its position projections,
/// `[heads, 2·span, head_dim]` f32: keys for c2p, queries for p2c.
struct Projected {
    key: Option<Tensor>,
    query: Option<Tensor>,
}

struct Embeddings {
    word: Tensor,
    position: Option<Tensor>,
    token_type: Option<Tensor>,
    projection: Option<Linear>,
    norm: LayerNorm,
}

/// v2-xlarge's convolution over the embeddings, added to the first block's output.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    padding: i64,
    groups: i64,
    activation: Activation,
    norm: LayerNorm,
}

struct Layer {
    /// Query, key and value projections fused into one product.
    qkv: Linear,
    /// How the relative embeddings are projected for the position terms.
    positional: Positional,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    activation: Activation,
    output: Linear,
    output_norm: LayerNorm,
}

/// The projections that turn relative embeddings into position keys and queries.
enum Positional {
    /// `share_att_key`: the content query and key projections (`qkv`'s first two
    /// thirds).
    Shared,
    /// `pos_key_proj` (for c2p) and `pos_query_proj` (for p2c).
    Separate { key: Option<Linear>, query: Option<Linear> },
}

fn invalid(config_path: &Path, reason: String) -> EmbedError {
    EmbedError::InvalidFile { path: config_path.to_path_buf(), reason }
}

impl Config {
    /// Checks the values transformers would accept but this model cannot use (or
    /// would turn into NaN), before anything is allocated from them. Returns the
    /// relative-position setup and the embedding width.
    fn validate(&self, config_path: &Path) -> Result<(Option<RelativePositions>, i64), EmbedError> {
        let embedding = self.embedding_size.unwrap_or(self.hidden_size);
        let mut sizes = vec![
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("embedding_size", embedding),
        ];
        if self.type_vocab_size != 0 {
            sizes.push(("type_vocab_size", self.type_vocab_size));
        }
        crate::models::check_sizes(
            config_path,
            &sizes,
            self.num_hidden_layers,
            (self.hidden_size, self.num_attention_heads),
        )?;
        crate::models::check_eps(config_path, "layer_norm_eps", self.layer_norm_eps)?;
        if let Some(size) = self.attention_head_size.filter(|&s| s != self.hidden_size / self.num_attention_heads) {
            return Err(invalid(
                config_path,
                format!(
                    "attention_head_size is {size}, but hidden_size / num_attention_heads is {}; \
                     only heads that split hidden_size evenly are supported (remove the key or make them agree)",
                    self.hidden_size / self.num_attention_heads
                ),
            ));
        }
        if let Some(size) = self.pooler_hidden_size.filter(|&s| s != self.hidden_size) {
            return Err(invalid(
                config_path,
                format!(
                    "pooler_hidden_size is {size}, but the pooler reads the first token's state of width hidden_size {}; \
                     they must be equal",
                    self.hidden_size
                ),
            ));
        }
        if let Some(other) = self.pos_att_type.iter().find(|t| *t != "c2p" && *t != "p2c") {
            return Err(invalid(
                config_path,
                format!("pos_att_type has {other:?}; DeBERTa-v2 knows \"c2p\" and \"p2c\" (e.g. [\"p2c\", \"c2p\"])"),
            ));
        }
        let norms: Vec<String> = self.norm_rel_ebd.to_lowercase().split('|').map(|s| s.trim().to_owned()).collect();
        if let Some(other) = norms.iter().find(|n| *n != "none" && *n != "layer_norm") {
            return Err(invalid(
                config_path,
                format!("norm_rel_ebd has {other:?}; it must be \"layer_norm\" or \"none\""),
            ));
        }
        if self.conv_kernel_size != 0 {
            let (k, groups, h) = (self.conv_kernel_size, self.conv_groups, self.hidden_size);
            // An even kernel with padding (k − 1) / 2 would shorten the sequence.
            if !(1..=63).contains(&k) || k % 2 == 0 {
                return Err(invalid(
                    config_path,
                    format!("conv_kernel_size is {k}; it must be an odd number from 1 to 63, or 0 for no convolution"),
                ));
            }
            if groups < 1 || h % groups != 0 {
                return Err(invalid(
                    config_path,
                    format!("conv_groups is {groups}; it must be at least 1 and divide hidden_size {h}"),
                ));
            }
        }
        if !self.relative_attention {
            return Ok((None, embedding));
        }
        let max_relative =
            if self.max_relative_positions < 1 { self.max_position_embeddings } else { self.max_relative_positions };
        const MAX_SPAN: i64 = 1 << 20;
        let (span, log_buckets) = if self.position_buckets > 0 {
            let (buckets, mid) = (self.position_buckets, self.position_buckets / 2);
            // The log buckets divide by ln((max_relative − 1) / mid): zero or negative
            // there gives NaN or buckets running backwards.
            if buckets < 2 || max_relative - 1 <= mid {
                return Err(invalid(
                    config_path,
                    format!(
                        "position_buckets is {buckets} with max_relative_positions {max_relative}; log buckets need \
                         at least 2 buckets and max_relative_positions above position_buckets / 2 + 1 \
                         (released models: 256 and 512)"
                    ),
                ));
            }
            (buckets, Some((buckets, max_relative)))
        } else {
            (max_relative, None)
        };
        if span > MAX_SPAN {
            return Err(invalid(
                config_path,
                format!(
                    "the relative position table would have {} rows; at most {} are supported",
                    2 * span,
                    2 * MAX_SPAN
                ),
            ));
        }
        Ok((Some(RelativePositions { span, log_buckets }), embedding))
    }
}

impl DebertaV2Model {
    /// Builds the model from its weights; missing tensors are collected in `weights`.
    pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<Self, EmbedError> {
        let (positions, embedding) = config.validate(config_path)?;
        let (h, i, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
        let heads = config.num_attention_heads;
        let c2p = config.pos_att_type.iter().any(|t| t == "c2p");
        let p2c = config.pos_att_type.iter().any(|t| t == "p2c");
        weights.detect_prefix("embeddings.word_embeddings.weight");
        let root = weights.pp("");
        let e = root.pp("embeddings");
        let embeddings = Embeddings {
            word: e.pp("word_embeddings").get("weight", &[config.vocab_size, embedding]),
            position: config
                .position_biased_input
                .then(|| e.pp("position_embeddings").get("weight", &[config.max_position_embeddings, embedding])),
            token_type: (config.type_vocab_size > 0)
                .then(|| e.pp("token_type_embeddings").get("weight", &[config.type_vocab_size, embedding])),
            projection: (embedding != h).then(|| Linear::load_no_bias(&e.pp("embed_proj"), embedding, h)),
            norm: LayerNorm::load(&e.pp("LayerNorm"), h, eps),
        };
        let encoder = root.pp("encoder");
        let relative = positions.map(|positions| Relative {
            table: encoder.pp("rel_embeddings").get("weight", &[2 * positions.span, h]),
            norm: config
                .norm_rel_ebd
                .to_lowercase()
                .split('|')
                .any(|n| n.trim() == "layer_norm")
                .then(|| LayerNorm::load(&encoder.pp("LayerNorm"), h, eps)),
            positions,
            projected: OnceCell::new(),
        });
        let relative_on = relative.is_some();
        let layers = (0..config.num_hidden_layers)
            .map(|n| {
                let w = encoder.pp("layer").pp(n);
                let attention = w.pp("attention");
                let this = attention.pp("self");
                let positional = if config.share_att_key {
                    Positional::Shared
                } else {
                    Positional::Separate {
                        key: (relative_on && c2p).then(|| Linear::load(&this.pp("pos_key_proj"), h, h)),
                        query: (relative_on && p2c).then(|| Linear::load(&this.pp("pos_query_proj"), h, h)),
                    }
                };
                Ok(Layer {
                    qkv: Linear::fuse(&[
                        Linear::load(&this.pp("query_proj"), h, h),
                        Linear::load(&this.pp("key_proj"), h, h),
                        Linear::load(&this.pp("value_proj"), h, h),
                    ])?,
                    positional,
                    attention_out: Linear::load(&attention.pp("output").pp("dense"), h, h),
                    attention_norm: LayerNorm::load(&attention.pp("output").pp("LayerNorm"), h, eps),
                    intermediate: Linear::load(&w.pp("intermediate").pp("dense"), h, i),
                    activation: config.hidden_act,
                    output: Linear::load(&w.pp("output").pp("dense"), i, h),
                    output_norm: LayerNorm::load(&w.pp("output").pp("LayerNorm"), h, eps),
                })
            })
            .collect::<Result<Vec<_>, EmbedError>>()?;
        let conv = (config.conv_kernel_size > 0).then(|| {
            let c = encoder.pp("conv");
            let k = config.conv_kernel_size;
            Conv {
                weight: c.pp("conv").get("weight", &[h, h / config.conv_groups, k]),
                bias: c.pp("conv").get("bias", &[h]),
                padding: (k - 1) / 2,
                groups: config.conv_groups,
                activation: config.conv_act,
                norm: LayerNorm::load(&c.pp("LayerNorm"), h, eps),
            }
        });
        let head_dim = h / heads;
        let terms = 1 + i64::from(c2p) + i64::from(p2c);
        Ok(DebertaV2Model {
            embeddings,
            layers,
            conv,
            relative,
            hidden_size: h,
            heads,
            scale: 1.0 / ((head_dim * terms) as f64).sqrt(),
            c2p,
            p2c,
            limits: EncoderLimits {
                vocab_size: config.vocab_size,
                type_vocab_size: (config.type_vocab_size > 0).then_some(config.type_vocab_size),
                // sentence-transformers limits texts to max_position_embeddings
                // whether or not the model has absolute positions.
                max_positions: config.max_position_embeddings as usize,
            },
            config_path: config_path.to_path_buf(),
        })
    }
}

impl Encoder for DebertaV2Model {
    fn hidden_size(&self) -> i64 {
        self.hidden_size
    }

    fn limits(&self) -> EncoderLimits {
        self.limits
    }

    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let (_, seq) = input.input_ids.size2()?;
        crate::models::check_input(&self.config_path, input, self.limits)?;
        let mask = &input.attention_mask;
        let embedded = self.embeddings.forward(input)?;
        let attention = self.attention_inputs(mask, seq)?;
        let mut hidden = embedded.shallow_clone();
        for (n, layer) in self.layers.iter().enumerate() {
            hidden = layer.forward(&hidden, &attention, n, self)?;
            if n == 0 {
                if let Some(conv) = &self.conv {
                    hidden = conv.forward(&embedded, &hidden, mask)?;
                }
            }
        }
        Ok(hidden)
    }
}

/// What every layer's attention shares within one forward pass.
struct AttentionInputs {
    /// `[B, 1, T, T]` bool: both the query and the key are real tokens. transformers
    /// masks a pair unless both are (a padding query's row is then uniform, and
    /// never read).
    keep: Tensor,
    /// The table rows of each pair's distance, `[T, T]` on the device, counted
    /// from `first`, and the rows `first .. first + count` in use.
    rows: Option<(Tensor, i64, i64)>,
}

impl DebertaV2Model {
    fn attention_inputs(&self, mask: &Tensor, seq: i64) -> Result<AttentionInputs, EmbedError> {
        let (batch, _) = mask.size2()?;
        let real = mask.f_ne(0)?;
        let keep = real.f_view([batch, 1, seq, 1])?.f_logical_and(&real.f_view([batch, 1, 1, seq])?)?;
        let rows = match &self.relative {
            Some(relative) if self.c2p || self.p2c => {
                let (rows, first, count) = relative.positions.rows(seq)?;
                Some((rows.f_to_device(mask.device())?, first, count))
            }
            _ => None,
        };
        Ok(AttentionInputs { keep, rows })
    }

    /// Each layer's `(Pk, Pq)`, `[heads, 2·span, head_dim]` f32, computed once.
    fn projected(&self) -> Result<Option<&[Projected]>, EmbedError> {
        let Some(relative) = &self.relative else { return Ok(None) };
        if let Some(done) = relative.projected.get() {
            return Ok(Some(done));
        }
        let table = relative.table.f_to_kind(Kind::Float)?;
        let table = match &relative.norm {
            Some(norm) => norm.to_kind(Kind::Float)?.forward(&table)?,
            None => table,
        };
        let (rows, h) = table.size2()?;
        let heads = self.heads;
        let split = |projected: Tensor| -> Result<Tensor, EmbedError> {
            Ok(projected.f_view([rows, heads, h / heads])?.f_permute([1, 0, 2])?.f_contiguous()?)
        };
        let mut all = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (key, query) = match &layer.positional {
                Positional::Shared => {
                    let qkv = layer.qkv.to_kind(Kind::Float)?.forward(&table)?;
                    (
                        self.c2p.then(|| split(qkv.narrow(1, h, h))).transpose()?,
                        self.p2c.then(|| split(qkv.narrow(1, 0, h))).transpose()?,
                    )
                }
                Positional::Separate { key, query } => (
                    key.as_ref().map(|k| split(k.to_kind(Kind::Float)?.forward(&table)?)).transpose()?,
                    query.as_ref().map(|q| split(q.to_kind(Kind::Float)?.forward(&table)?)).transpose()?,
                ),
            };
            all.push(Projected { key, query });
        }
        // Another thread cannot have filled it: the model is not `Sync`.
        let _ = relative.projected.set(all);
        Ok(relative.projected.get().map(Vec::as_slice))
    }
}

impl Embeddings {
    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError> {
        let mask = &input.attention_mask;
        let mut sum = Tensor::f_embedding(&self.word, &input.input_ids, -1, false, false)?;
        if let Some(table) = &self.position {
            // Positions counted from each text's first real token. transformers
            // numbers from the first column, which is the same for right padding;
            // counting from the text keeps a left-padded batch equal to it.
            let positions = mask.f_cumsum(1, Kind::Int64)?.f_sub_scalar(1)?.f_clamp_min(0)?;
            sum = sum.f_add(&Tensor::f_embedding(table, &positions, -1, false, false)?)?;
        }
        if let Some(table) = &self.token_type {
            sum = sum.f_add(&Tensor::f_embedding(table, &input.token_type_ids, -1, false, false)?)?;
        }
        if let Some(projection) = &self.projection {
            sum = projection.forward(&sum)?;
        }
        let normed = self.norm.forward(&sum)?;
        Ok(normed.f_mul(&mask.f_unsqueeze(-1)?.f_to_kind(normed.kind())?)?)
    }
}

impl Conv {
    /// `norm(first + act(conv(embedded)))`, with padding positions zeroed before the
    /// activation and after the norm, as transformers' `ConvLayer`.
    fn forward(&self, embedded: &Tensor, first: &Tensor, mask: &Tensor) -> Result<Tensor, EmbedError> {
        let real = mask.f_unsqueeze(-1)?.f_to_kind(first.kind())?;
        let convolved = embedded
            .f_transpose(1, 2)?
            .f_conv1d(&self.weight, Some(&self.bias), [1], [self.padding], [1], self.groups)?
            .f_transpose(1, 2)?
            .f_mul(&real)?;
        let activated = self.activation.forward(&convolved)?;
        Ok(self.norm.forward(&first.f_add(&activated)?)?.f_mul(&real)?)
    }
}

impl Layer {
    fn forward(
        &self,
        xs: &Tensor,
        inputs: &AttentionInputs,
        n: usize,
        model: &DebertaV2Model,
    ) -> Result<Tensor, EmbedError> {
        let context = self.attend(xs, inputs, n, model)?;
        let attended = self.attention_norm.forward(&self.attention_out.forward_plus(&context, xs)?)?;
        let inner = self.intermediate.forward_activated(&attended, self.activation)?;
        self.output_norm.forward(&self.output.forward_plus(&inner, &attended)?)
    }

    /// Disentangled attention in f32; returns `[B, T, H]` in `xs`'s precision.
    fn attend(
        &self,
        xs: &Tensor,
        inputs: &AttentionInputs,
        n: usize,
        model: &DebertaV2Model,
    ) -> Result<Tensor, EmbedError> {
        let (batch, seq, hidden) = xs.size3()?;
        let heads = model.heads;
        let head_dim = hidden / heads;
        // [3, B, heads, T, head_dim] f32.
        let split = self
            .qkv
            .forward(xs)?
            .f_to_kind(Kind::Float)?
            .f_view([batch, seq, 3, heads, head_dim])?
            .f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (split.f_get(0)?, split.f_get(1)?, split.f_get(2)?);
        let mut scores = q.f_matmul(&k.f_transpose(-1, -2)?)?;
        if let (Some((rows, first, count)), Some(projected)) = (&inputs.rows, model.projected()?) {
            let Projected { key: pos_key, query: pos_query } = &projected[n];
            let shape = [batch, heads, seq, seq];
            if let Some(pos_key) = pos_key {
                // c2p[i, j] = qᵢ · Pk[δ(i, j)]
                let against = q.f_matmul(&pos_key.f_narrow(1, *first, *count)?.f_transpose(-1, -2)?)?;
                scores = scores.f_add(&against.f_gather(-1, &rows.f_expand(shape, false)?, false)?)?;
            }
            if let Some(pos_query) = pos_query {
                // p2c[i, j] = kⱼ · Pq[δ(i, j)]: gathered along the keys' rows, then
                // transposed back to [query, key].
                let against = k.f_matmul(&pos_query.f_narrow(1, *first, *count)?.f_transpose(-1, -2)?)?;
                let gathered = against.f_gather(-1, &rows.f_tr()?.f_expand(shape, false)?, false)?;
                scores = scores.f_add(&gathered.f_transpose(-1, -2)?)?;
            }
        }
        let probabilities = scores
            .f_mul_scalar(model.scale)?
            .f_masked_fill(&inputs.keep.f_logical_not()?, f64::from(f32::MIN))?
            .f_softmax(-1, Kind::Float)?;
        let context = probabilities.f_matmul(&v)?.f_transpose(1, 2)?.f_reshape([batch, seq, hidden])?;
        Ok(context.f_to_kind(xs.kind())?)
    }
}

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(DebertaV2Model::load(weights, self, config_path)?))
    }

    /// `DebertaV2ForSequenceClassification`: the first token's state →
    /// `pooler.dense` → `pooler_hidden_act` → `classifier`, both beside `deberta.*`.
    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let encoder = DebertaV2Model::load(weights, self, config_path)?;
        let h = self.hidden_size;
        let dense = Linear::load(&weights.pp_root("pooler").pp("dense"), h, h);
        let out = Linear::load(&weights.pp_root("classifier"), h, labels);
        let head = ClassificationHead::new(HeadPooling::First, Some((dense, self.pooler_hidden_act)), None, out)?;
        Ok(Classifier { encoder: Box::new(encoder), head })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(extra: serde_json::Value) -> Config {
        let mut base = json!({
            "model_type": "deberta-v2", "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 64,
            "relative_attention": true, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"],
            "share_att_key": true, "norm_rel_ebd": "layer_norm", "position_biased_input": false,
            "type_vocab_size": 0
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn refusal(extra: serde_json::Value) -> String {
        config(extra).validate(Path::new("config.json")).unwrap_err().to_string()
    }

    #[test]
    fn log_buckets_follow_the_formula() {
        // 16 buckets, max 512: mid 8; beyond ±8, 8 + ceil(ln(|d| / 8) / ln(511 / 8) · 7).
        // By hand: ln(9/8)/ln(63.875)·7 = 0.198 → 9; ln(2.5)/…·7 = 1.543 → 10;
        // ln(8)/…·7 = 3.502 → 12; 511 gives exactly 7 → 15; ln(64)/…·7 = 7.003 → 16.
        let cases = [(0, 0), (3, 3), (8, 8), (-8, -8), (9, 9), (20, 10), (64, 12), (511, 15), (512, 16), (-20, -10)];
        for (distance, bucket) in cases {
            assert_eq!(log_bucket(distance, 16, 512), bucket, "distance {distance}");
        }
        // The released models' 256 buckets over 512: mid 128; ln(200/128)/ln(511/128)·127
        // = 40.94 → 169; ln(300/128)/…·127 = 78.14 → 207.
        for (distance, bucket) in [(128, 128), (129, 129), (200, 169), (-200, -169), (300, 207), (511, 255)] {
            assert_eq!(log_bucket(distance, 256, 512), bucket, "distance {distance}");
        }
    }

    #[test]
    fn log_buckets_equal_the_same_arithmetic_on_tensors() {
        // transformers computes the buckets with libtorch's f32 log over a whole
        // tensor; ours is Rust's scalar f32 log. A one-ulp difference would show as a
        // distance in the wrong bucket.
        for (buckets, max_position) in [(16, 512), (256, 512), (32, 128), (256, 1024), (64, 512), (512, 2048)] {
            let distances: Vec<i64> = (-4096..=4096).collect();
            let d = Tensor::from_slice(&distances);
            let mid = buckets / 2;
            let magnitude = d.abs().to_kind(Kind::Float);
            let scale = Tensor::from_slice(&[((max_position - 1) as f64 / mid as f64) as f32]).log();
            let logs =
                (magnitude / mid as f64).log().divide(&scale).multiply_scalar((mid - 1) as f64).ceil() + mid as f64;
            let bucketed = logs.multiply(&d.sign().to_kind(Kind::Float)).to_kind(Kind::Int64);
            let expected = d.where_self(&d.abs().le(mid), &bucketed);
            let expected = Vec::<i64>::try_from(expected).unwrap();
            let ours: Vec<i64> = distances.iter().map(|&x| log_bucket(x, buckets, max_position)).collect();
            assert_eq!(ours, expected, "{buckets} buckets, max {max_position}");
        }
    }

    #[test]
    fn table_rows_are_clamped_distances_and_only_the_rows_in_use() {
        // Exact distances (no buckets), span 3: row clamp(i − j + 3, 0, 5).
        let exact = RelativePositions { span: 3, log_buckets: None };
        let (rows, first, count) = exact.rows(5).unwrap();
        assert_eq!((first, count), (0, 6));
        let rows = Vec::<Vec<i64>>::try_from(rows).unwrap();
        assert_eq!(rows[0], [3, 2, 1, 0, 0]);
        assert_eq!(rows[4], [5, 5, 5, 4, 3]);
        // Span 8 but three tokens: distances −2..=2 use rows 6..=10 only, counted from 6.
        let short = RelativePositions { span: 8, log_buckets: Some((16, 512)) };
        let (rows, first, count) = short.rows(3).unwrap();
        assert_eq!((first, count), (6, 5));
        assert_eq!(Vec::<Vec<i64>>::try_from(rows).unwrap(), [[2, 1, 0], [3, 2, 1], [4, 3, 2]]);
    }

    #[test]
    fn pos_att_type_reads_the_list_and_the_older_string() {
        assert_eq!(config(json!({"pos_att_type": "P2C | c2p"})).pos_att_type, ["p2c", "c2p"]);
        assert_eq!(config(json!({"pos_att_type": ["c2p"]})).pos_att_type, ["c2p"]);
        assert!(config(json!({"pos_att_type": null})).pos_att_type.is_empty());
    }

    #[test]
    fn values_the_model_cannot_use_are_refused_with_the_fix() {
        let ok = config(json!({})).validate(Path::new("config.json")).unwrap();
        assert_eq!(ok, (Some(RelativePositions { span: 16, log_buckets: Some((16, 64)) }), 8));
        for (extra, expected) in [
            (json!({"pos_att_type": ["p2p"]}), "pos_att_type has \"p2p\""),
            (json!({"norm_rel_ebd": "rms"}), "norm_rel_ebd has \"rms\""),
            (json!({"position_buckets": 64, "max_relative_positions": 30}), "position_buckets is 64"),
            (json!({"position_buckets": 1}), "position_buckets is 1"),
            (json!({"conv_kernel_size": 2}), "conv_kernel_size is 2"),
            (json!({"conv_kernel_size": 3, "conv_groups": 3}), "conv_groups is 3"),
            (json!({"pooler_hidden_size": 16}), "pooler_hidden_size is 16"),
            (json!({"attention_head_size": 8}), "attention_head_size is 8"),
            (json!({"hidden_size": 9}), "not a multiple of num_attention_heads"),
            (json!({"layer_norm_eps": 0.0}), "layer_norm_eps is 0"),
            (json!({"embedding_size": 0}), "embedding_size is 0"),
            (json!({"type_vocab_size": -1}), "type_vocab_size is -1"),
            (json!({"max_relative_positions": 1 << 22, "position_buckets": -1}), "relative position table"),
        ] {
            let err = refusal(extra.clone());
            assert!(err.contains(expected) && err.contains("config.json"), "{extra}: {err}");
        }
    }
}
