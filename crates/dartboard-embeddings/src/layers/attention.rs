//! Multi-head attention for every architecture: the mask is prepared once per
//! forward pass, and the kernel is picked from the device, the CPU and the
//! sequence length.
//!
//! What an architecture's attention may need, and how it reaches the kernels:
//! - padding: always, as the `[B, T]` mask from the tokenizer (left or right);
//! - an additive per-head bias shared by the batch (MPNet's and T5's relative
//!   positions): handed to every kernel as is;
//! - causal or sliding-window visibility ([`Visibility`]): turned into the same
//!   kind of additive bias, so our kernel stays the fast path;
//! - grouped-query heads (fewer key/value heads than query heads) and a scale
//!   other than `1/√d`: [`AttentionMask::attend_split`] repeats the key/value heads
//!   and scales the queries into one fused buffer for our kernel, or hands them to
//!   libtorch's fused kernel as they are (`enable_gqa`).
//!
//! Causal and windowed masks from [`SDPA_BAND_MIN_SEQ`] tokens on go to libtorch's
//! fused kernel even on AVX-512 CPUs (see there): it skips nothing for a band, but
//! on the real Qwen3 and ModernBERT shapes (heads of 64–128) it overtakes ours as
//! the sequence grows, where ours stays ahead on short padding-only batches.
//!
//! Biases that differ per text (DeBERTa's disentangled attention) do not fit this
//! shape; such an architecture computes its scores itself.
//!
//! Why three kernels: libtorch's fused CPU attention
//! (`_scaled_dot_product_flash_attention_for_cpu`) works in blocks sized for long
//! sequences. On the batches an embedding model sees (32 texts of 8–256 tokens,
//! heads of 32) it reached 20–110 GFLOP/s on the 2-core Zen 5 machine, where the
//! model's linear layers reach ~900, and at 128 tokens it took as long as the
//! layer's four matrix products. So on CPUs with AVX-512 attention runs in our own
//! kernel (`cpp/attention.cpp`), and elsewhere, up to 64 tokens, as explicit aten
//! operators; libtorch's fused kernel is left for CUDA, where it is fast, and for
//! long sequences on CPUs without AVX-512. Both of ours compute in f32 whatever the
//! model's precision: scores rounded to bf16 before the softmax were ten times
//! further from the exact result than the fused kernel, which accumulates in f32 too.

use tch::{Device, Kind, Tensor};

use crate::backend::kernels;
use crate::error::EmbedError;

/// Longest sequence that uses the explicit aten kernel on a CPU without AVX-512.
/// Measured on a 2-core AVX-512 machine, batch 32, 12 heads of 32, f32: explicit
/// 3.1 ms vs fused 3.9 ms at 64 tokens, but 11.5 ms vs 7.5 ms at 96, once the
/// `[B, heads, T, T]` scores no longer fit in cache.
const EXPLICIT_MAX_SEQ: i64 = 64;

/// From this many tokens on, a causal or sliding-window mask (without a per-head
/// bias) runs in libtorch's fused kernel rather than ours on AVX-512 CPUs.
/// Per-layer times on the real shapes on a 2-core Intel Xeon with AMX
/// (`layers/attention_timing.rs`; ours includes building its fused buffer), f32 /
/// bf16, ours → libtorch's: Qwen3-0.6B causal, 16 query heads sharing 8 key/value
/// heads of 128, batch 32: 12 tokens 1.32 / 1.00 → 1.45 / 1.75 ms, 16 tokens
/// 1.74 / 1.40 → 1.19 / 1.50 ms, 20 tokens 2.57 / 2.04 → 1.83 / 1.52 ms, 24 tokens
/// 2.99 / 2.43 → 2.28 / 2.18 ms; 128 tokens (batch 8) 12.7 / 11.4 → 6.4 / 2.6 ms.
/// ModernBERT's window of 64 keys each side, 12 heads of 64, 256 tokens (batch 8):
/// 14.4 / 12.7 → 10.0 / 5.5 ms. Padding-only masks stay on ours at every length
/// measured: ModernBERT-base at batch 32 × 24 tokens 1.28 / 0.80 ms against
/// 1.64 / 1.15 (on the AMD machine of the MiniLM table ours was 4× faster at 128).
const SDPA_BAND_MIN_SEQ: i64 = 16;

/// The explicit kernel gives the softmax at least this many keys, padding with
/// masked zeros. libtorch's CPU softmax over a last dimension shorter than 16 takes
/// a slow path: 490 µs for `[32, 12, 14, 14]` against 48 µs at 16 keys.
const EXPLICIT_MIN_KEYS: i64 = 16;

/// Which kernel computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// libtorch's `scaled_dot_product_attention`.
    Fused,
    /// `softmax(q kᵀ / √d + mask) v` as aten operators, in f32.
    Explicit,
    /// Ours, `cpp/attention.cpp`: the same in f32, one text (or group of its heads)
    /// at a time.
    Cpu,
}

impl Kernel {
    fn for_mask(attention_mask: &Tensor) -> Kernel {
        let seq = attention_mask.size().last().copied().unwrap_or(0);
        match attention_mask.device() {
            Device::Cpu if kernels::available() => Kernel::Cpu,
            Device::Cpu if seq <= EXPLICIT_MAX_SEQ => Kernel::Explicit,
            _ => Kernel::Fused,
        }
    }
}

/// The keys each query may see, plus any additive bias, ready for one kernel.
pub(crate) enum AttentionMask {
    /// `scaled_dot_product_attention` with this mask (bool `[B,1,1,T]`, or additive
    /// in the compute precision).
    Fused(Tensor),
    /// Explicit `softmax(q kᵀ / √d + mask) v` in f32, with this additive f32 mask
    /// broadcastable to `[B, heads, T, K]`, where `K ≥ T` counts the keys after
    /// padding to [`EXPLICIT_MIN_KEYS`].
    Explicit(Tensor),
    /// Our CPU kernel, with an additive f32 bias per key (`[B, T]`: 0, or the
    /// lowest f32 for padding) and optionally per head (`[heads, T, T]`, f32) or
    /// shared by every head (`[T, T]`).
    Cpu { keys: Tensor, heads: Option<Tensor> },
}

/// Which keys each query may see besides padding: `before` keys before it and
/// `after` keys after it (`None`: unlimited). Bidirectional encoders see
/// everything; a causal decoder (Qwen3) sees nothing after; a sliding window
/// (ModernBERT's and Gemma's local layers) sees a band around the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Visibility {
    /// Keys before the query that remain visible (`None`: all).
    pub before: Option<i64>,
    /// Keys after the query that remain visible (`None`: all).
    pub after: Option<i64>,
}

impl Visibility {
    /// Every key (padding aside).
    pub const ALL: Visibility = Visibility { before: None, after: None };
    /// The query and the keys before it.
    pub const CAUSAL: Visibility = Visibility { before: None, after: Some(0) };

    /// `radius` keys on each side of the query.
    pub fn window(radius: i64) -> Visibility {
        Visibility { before: Some(radius), after: Some(radius) }
    }

    /// `[seq, seq]` f32: 0 where query `q` may see key `k`, the lowest f32 where it
    /// may not; `None` when every pair is visible at this length.
    fn bias(self, seq: i64, device: Device) -> Result<Option<Tensor>, EmbedError> {
        let limited = |limit: Option<i64>| limit.is_some_and(|n| n < seq - 1);
        if !limited(self.before) && !limited(self.after) {
            return Ok(None);
        }
        let positions = Tensor::f_arange(seq, (Kind::Int64, device))?;
        let ahead = positions.f_unsqueeze(0)?.f_sub(&positions.f_unsqueeze(1)?)?; // k - q
        let mut hidden = ahead.f_zeros_like()?.f_to_kind(Kind::Bool)?;
        if let Some(after) = self.after {
            hidden = hidden.f_logical_or(&ahead.f_gt(after)?)?;
        }
        if let Some(before) = self.before {
            hidden = hidden.f_logical_or(&ahead.f_lt(-before)?)?;
        }
        let zeros = Tensor::f_zeros([seq, seq], (Kind::Float, device))?;
        Ok(Some(zeros.f_masked_fill(&hidden, min_value(Kind::Float))?))
    }
}

impl AttentionMask {
    /// Padding only: `attention_mask` is the `[B, T]` 0/1 tensor from the tokenizer.
    pub(crate) fn padding(attention_mask: &Tensor) -> Result<Self, EmbedError> {
        Self::build(attention_mask, None, Kernel::for_mask(attention_mask))
    }

    /// Padding, `visibility`, and optionally a per-head bias `[1, heads, T, T]` (or
    /// `[heads, T, T]`) in any precision, for `heads` heads. Visibility becomes an
    /// additive bias too, so every kernel, ours included, takes it.
    pub(crate) fn new(
        attention_mask: &Tensor,
        visibility: Visibility,
        heads: i64,
        bias: Option<&Tensor>,
    ) -> Result<Self, EmbedError> {
        Self::new_on(attention_mask, visibility, heads, bias, None)
    }

    /// [`AttentionMask::new`] on the kernel `forced` (`None`: the usual choice),
    /// so that measurements and tests can run each route on any shape.
    pub(super) fn new_on(
        attention_mask: &Tensor,
        visibility: Visibility,
        heads: i64,
        bias: Option<&Tensor>,
        forced: Option<Kernel>,
    ) -> Result<Self, EmbedError> {
        let (_, seq) = attention_mask.size2()?;
        let Some(band) = visibility.bias(seq, attention_mask.device())? else {
            let kernel = forced.unwrap_or_else(|| Kernel::for_mask(attention_mask));
            return Self::build(attention_mask, bias, kernel);
        };
        let combined = match bias {
            // Hidden pairs stay at the lowest f32 rather than overflowing to -inf.
            Some(bias) => {
                let bias = bias.f_to_kind(Kind::Float)?.f_reshape([heads, seq, seq])?;
                bias.f_add(&band)?.f_clamp_min(min_value(Kind::Float))?
            }
            // One `[T, T]` band for every head: every kernel broadcasts it, ours
            // included, so a long sequence does not pay heads × T² floats.
            None => band.f_unsqueeze(0)?,
        };
        let combined = combined.f_unsqueeze(0)?;
        let kernel = forced.unwrap_or_else(|| match Kernel::for_mask(attention_mask) {
            Kernel::Cpu if bias.is_none() && seq >= SDPA_BAND_MIN_SEQ => Kernel::Fused,
            kernel => kernel,
        });
        // The fused kernel adds the bias in the compute precision; ours and the
        // explicit one in f32.
        Self::build(attention_mask, Some(&combined), kernel)
    }

    /// Padding plus a per-head bias `[1, heads, T, T]` in the compute precision
    /// (MPNet's relative positions).
    pub(crate) fn padding_and_bias(attention_mask: &Tensor, bias: &Tensor) -> Result<Self, EmbedError> {
        Self::build(attention_mask, Some(bias), Kernel::for_mask(attention_mask))
    }

    fn build(attention_mask: &Tensor, bias: Option<&Tensor>, kernel: Kernel) -> Result<Self, EmbedError> {
        let (batch, seq) = attention_mask.size2()?;
        let keep = attention_mask.f_ne(0)?.f_view([batch, 1, 1, seq])?;
        let extra_keys = (EXPLICIT_MIN_KEYS - seq).max(0);
        match (kernel, bias) {
            (Kernel::Cpu, _) => Ok(AttentionMask::Cpu {
                keys: additive(&keep, 0)?.f_view([batch, seq])?,
                heads: bias.map(|b| b.f_to_kind(Kind::Float)?.f_contiguous()).transpose()?,
            }),
            (Kernel::Explicit, None) => Ok(AttentionMask::Explicit(additive(&keep, extra_keys)?)),
            (Kernel::Explicit, Some(bias)) => {
                let bias = bias.f_to_kind(Kind::Float)?.f_constant_pad_nd([0, extra_keys])?;
                Ok(AttentionMask::Explicit(additive(&keep, extra_keys)?.f_add(&bias)?))
            }
            (Kernel::Fused, None) => Ok(AttentionMask::Fused(keep)),
            (Kernel::Fused, Some(bias)) => {
                let kind = bias.kind();
                let padding = keep.f_logical_not()?.f_to_kind(kind)?.f_mul_scalar(min_value(kind))?;
                Ok(AttentionMask::Fused(bias.f_add(&padding)?))
            }
        }
    }

    /// Attention over separate projections: `q` is `[B, T, heads·d]`, `k` and `v`
    /// `[B, T, kv_heads·d]` with `heads` a multiple of `kv_heads` (grouped-query
    /// attention: each key/value head serves `heads / kv_heads` query heads).
    /// Scores are scaled by `scale` (`None`: `1/√d`). Returns `[B, T, heads·d]`.
    pub(crate) fn attend_split(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: i64,
        kv_heads: i64,
        scale: Option<f64>,
    ) -> Result<Tensor, EmbedError> {
        let (batch, seq, width) = q.size3()?;
        let head_dim = width / heads;
        match self {
            // On the CPU libtorch's kernel takes the heads as strided views and
            // shares each key/value head itself: nothing is copied on the way in.
            // CUDA keeps repeated heads (below): which of its fused kernels take
            // `enable_gqa` with a mask has not been measured here.
            AttentionMask::Fused(mask) if q.device() == Device::Cpu => {
                let heads_first = |x: &Tensor, n: i64| -> Result<Tensor, EmbedError> {
                    Ok(x.f_reshape([batch, seq, n, head_dim])?.f_transpose(1, 2)?)
                };
                let (q, k, v) = (heads_first(q, heads)?, heads_first(k, kv_heads)?, heads_first(v, kv_heads)?);
                let mask = fused_mask(mask, q.kind())?;
                let context = Tensor::f_scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    Some(&mask),
                    0.0,
                    false,
                    scale,
                    kv_heads != heads,
                )?;
                let mut out = Tensor::f_empty([batch, seq, heads, head_dim], (q.kind(), q.device()))?;
                out.f_copy_(&context.f_transpose(1, 2)?)?;
                return Ok(out.f_view([batch, seq, width])?);
            }
            _ => {}
        }
        let q = match scale {
            // The kernels divide by √d; fold the difference into the queries.
            Some(scale) => q.f_mul_scalar(scale * (head_dim as f64).sqrt())?,
            None => q.shallow_clone(),
        };
        // One buffer [B, T, 3·width] written once: queries, then each key/value
        // head repeated for its group by a broadcasting copy (repeating and
        // concatenating separately made three passes where this makes one; at
        // Qwen3's shape that was 0.8 ms of a 1.7 ms attention call).
        let group = heads / kv_heads;
        let qkv = Tensor::f_empty([batch, seq, 3 * width], (q.kind(), q.device()))?;
        qkv.f_narrow(2, 0, width)?.f_copy_(&q)?;
        for (slot, x) in [(1, k), (2, v)] {
            let mut dst = qkv.f_narrow(2, slot * width, width)?.f_view([batch, seq, kv_heads, group, head_dim])?;
            dst.f_copy_(&x.f_reshape([batch, seq, kv_heads, 1, head_dim])?)?;
        }
        self.attend(&qkv, heads)
    }

    /// Attention over fused projections: `qkv` is `[B, T, 3·hidden]`, queries, keys
    /// and values side by side, split into `heads` heads. Returns `[B, T, hidden]`
    /// in the precision of `qkv`.
    pub(crate) fn attend(&self, qkv: &Tensor, heads: i64) -> Result<Tensor, EmbedError> {
        if let AttentionMask::Cpu { keys, heads: head_bias } = self {
            return kernels::attention(qkv, keys, head_bias.as_ref(), heads);
        }
        let (batch, seq, width) = qkv.size3()?;
        let (hidden, kind, device) = (width / 3, qkv.kind(), qkv.device());
        let head_dim = hidden / heads;
        // [3, B, heads, T, head_dim] as a view: no copy yet.
        let split = qkv.f_view([batch, seq, 3, heads, head_dim])?.f_permute([2, 0, 3, 1, 4])?;
        let context = match self {
            AttentionMask::Fused(mask) => {
                let (q, k, v) = (split.f_get(0)?, split.f_get(1)?, split.f_get(2)?);
                let mask = fused_mask(mask, kind)?;
                Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None, false)?
            }
            AttentionMask::Explicit(mask) => {
                // One pass converts to f32 and lays each head out contiguously, so
                // neither product below has to copy its operands again. Padding keys
                // past `seq` are zeros, which the mask then hides.
                let keys = *mask.size().last().unwrap_or(&seq);
                let packed = if keys > seq {
                    Tensor::f_zeros([3, batch, heads, keys, head_dim], (Kind::Float, device))?
                } else {
                    Tensor::f_empty([3, batch, heads, keys, head_dim], (Kind::Float, device))?
                };
                packed.f_narrow(3, 0, seq)?.f_copy_(&split)?;
                let (q, k, v) = (packed.f_get(0)?.f_narrow(2, 0, seq)?, packed.f_get(1)?, packed.f_get(2)?);
                let mut scores = q.f_matmul(&k.f_transpose(-1, -2)?)?.f_mul_scalar(1.0 / (head_dim as f64).sqrt())?;
                scores.f_add_(mask)?.f_softmax(-1, Kind::Float)?.f_matmul(&v)?
            }
            AttentionMask::Cpu { .. } => unreachable!("handled above"),
        };
        // Back to [B, T, hidden] in the model's precision, again in one pass.
        let mut out = Tensor::f_empty([batch, seq, heads, head_dim], (kind, device))?;
        out.f_copy_(&context.f_transpose(1, 2)?)?;
        Ok(out.f_view([batch, seq, hidden])?)
    }
}

/// The fused kernel's mask in the compute precision `kind`: a bool mask as is, an
/// additive one converted, clamped first because the lowest f32 is -inf in f16.
fn fused_mask(mask: &Tensor, kind: Kind) -> Result<Tensor, EmbedError> {
    if mask.kind() == Kind::Bool || mask.kind() == kind {
        return Ok(mask.shallow_clone());
    }
    Ok(mask.f_clamp_min(min_value(kind))?.f_to_kind(kind)?)
}

/// `0` where a key may be seen, the most negative f32 where it is padding (finite,
/// as in transformers, so a text with no tokens at all averages its padding
/// instead of producing NaN), and `-inf` on the `extra` keys appended after the
/// last, which must never take weight, not even in that case.
fn additive(keep: &Tensor, extra: i64) -> Result<Tensor, EmbedError> {
    let zeros = Tensor::f_zeros(keep.size(), (Kind::Float, keep.device()))?;
    let mask = zeros.f_masked_fill(&keep.f_logical_not()?, min_value(Kind::Float))?;
    Ok(mask.f_pad([0, extra], "constant", f64::NEG_INFINITY)?)
}

/// The most negative finite value, as transformers uses for masked positions.
fn min_value(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.3895313892515355e38,
        _ => f32::MIN as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Kernel; 3] = [Kernel::Fused, Kernel::Explicit, Kernel::Cpu];

    /// The kernels this machine can run: ours needs AVX-512.
    fn runnable() -> Vec<Kernel> {
        if !kernels::available() {
            eprintln!("skipping the CPU attention kernel: this CPU lacks AVX-512");
        }
        ALL.into_iter().filter(|&k| k != Kernel::Cpu || kernels::available()).collect()
    }

    /// `heads` heads of `dim` over texts with the given token counts, padded to the
    /// longest; queries, keys and values random, padding positions included.
    struct Case {
        mask: Tensor,
        qkv: Tensor,
        bias: Tensor,
        heads: i64,
    }

    fn case(lengths: &[i64], heads: i64, dim: i64, kind: Kind) -> Case {
        tch::manual_seed(7);
        let seq = *lengths.iter().max().unwrap();
        let rows: Vec<i64> = lengths.iter().flat_map(|&n| (0..seq).map(move |t| i64::from(t < n))).collect();
        let mask = Tensor::from_slice(&rows).view([lengths.len() as i64, seq]);
        let qkv = Tensor::randn([lengths.len() as i64, seq, 3 * heads * dim], (Kind::Float, Device::Cpu));
        let bias = Tensor::randn([1, heads, seq, seq], (Kind::Float, Device::Cpu)).to_kind(kind);
        Case { mask, qkv: qkv.to_kind(kind), bias, heads }
    }

    fn run(c: &Case, kernel: Kernel, with_bias: bool) -> Tensor {
        let m = AttentionMask::build(&c.mask, with_bias.then_some(&c.bias), kernel).unwrap();
        let out = m.attend(&c.qkv, c.heads).unwrap();
        assert_eq!(out.size(), [c.qkv.size()[0], c.qkv.size()[1], c.qkv.size()[2] / 3]);
        assert_eq!(out.kind(), c.qkv.kind());
        out
    }

    /// softmax(q kᵀ / √d + mask + bias) v in f64, written out in full.
    fn reference(c: &Case, with_bias: bool) -> Tensor {
        let (b, t, w) = c.qkv.size3().unwrap();
        let d = w / 3 / c.heads;
        let x = c.qkv.to_kind(Kind::Double).view([b, t, 3, c.heads, d]).permute([2, 0, 3, 1, 4]);
        let scores = x.get(0).matmul(&x.get(1).transpose(-1, -2)) / (d as f64).sqrt();
        let padding = c.mask.eq(0).view([b, 1, 1, t]).to_kind(Kind::Double) * f64::from(f32::MIN);
        let mut scores = scores + padding;
        if with_bias {
            scores += c.bias.to_kind(Kind::Double);
        }
        scores.softmax(-1, Kind::Double).matmul(&x.get(2)).transpose(1, 2).reshape([b, t, w / 3])
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        a.to_kind(Kind::Double).f_sub(&b.to_kind(Kind::Double)).unwrap().abs().max().double_value(&[])
    }

    /// Token counts and head shapes that reach the CPU kernel's branches: one key
    /// vector and several key tiles, query tails of 1–3, head dims below, at and
    /// above 16, not a multiple of 16, value products of 1–8 vectors, and above 128
    /// (done in slices). With two threads (the CI machine), small batches split
    /// their heads into groups, and the batch of one with 5 heads also gets a
    /// group past the last head, which must do nothing.
    const SHAPES: [(&[i64], i64, i64); 8] = [
        (&[5, 3, 1], 2, 4),
        (&[1], 1, 16),
        (&[17, 9], 3, 20),
        (&[70, 64, 33], 2, 32),
        (&[13], 12, 48),
        (&[130, 7], 1, 64),
        (&[9], 5, 112),
        (&[6, 2], 1, 144),
    ];

    #[test]
    fn kernels_match_the_exact_result_in_f32() {
        for (lengths, heads, dim) in SHAPES {
            let c = case(lengths, heads, dim, Kind::Float);
            for with_bias in [false, true] {
                let exact = reference(&c, with_bias);
                for kernel in runnable() {
                    let diff = max_diff(&run(&c, kernel, with_bias), &exact);
                    assert!(diff < 1e-5, "{kernel:?} {lengths:?}×{heads}×{dim} bias {with_bias}: {diff}");
                }
            }
        }
    }

    #[test]
    fn kernels_agree_in_half_precision_to_its_rounding() {
        // bf16 keeps 8 significant bits, f16 11. Ours and the explicit kernel both
        // compute in f32 and round once, so they differ by at most one unit in the
        // last place; the fused kernel also rounds its probabilities.
        for (kind, ulp) in [(Kind::BFloat16, 2f64.powi(-7)), (Kind::Half, 2f64.powi(-10))] {
            for (lengths, heads, dim) in SHAPES {
                let c = case(lengths, heads, dim, kind);
                for with_bias in [false, true] {
                    let explicit = run(&c, Kernel::Explicit, with_bias).to_kind(Kind::Double);
                    let exact = reference(&c, with_bias);
                    for kernel in runnable() {
                        let out = run(&c, kernel, with_bias).to_kind(Kind::Double);
                        let diff = max_diff(&out, &exact);
                        assert!(diff < 2e-2, "{kernel:?} {kind:?} {lengths:?} bias {with_bias}: {diff} from exact");
                        if kernel == Kernel::Cpu {
                            // Within one ulp everywhere, and equal almost everywhere:
                            // the f32 results differ only in their last bits, so the
                            // same rounding (to nearest even) must give the same value
                            // except at rare ties; truncating would differ at half.
                            let gap = (&out - &explicit).abs();
                            let excess = (&gap - explicit.abs() * ulp).max().double_value(&[]);
                            assert!(
                                excess <= 1e-6,
                                "{kind:?} {lengths:?} bias {with_bias}: beyond one ulp by {excess}"
                            );
                            let differing = gap.gt(0.0).sum(Kind::Int64).int64_value(&[]) as f64;
                            let share = differing / gap.numel() as f64;
                            assert!(share < 0.02, "{kind:?} {lengths:?} bias {with_bias}: {share} of values differ");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn padding_anywhere_is_masked() {
        // Tokenizers pad on the right, but a mask with holes (left padding, or a
        // caller's own mask) must hide exactly the positions it marks.
        let c = case(&[6, 6, 6], 2, 32, Kind::Float);
        let rows = [[0i64, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1], [1, 0, 1, 1, 0, 0]];
        let c = Case { mask: Tensor::from_slice(rows.as_flattened()).view([3, 6]), ..c };
        for with_bias in [false, true] {
            let exact = reference(&c, with_bias);
            for kernel in runnable() {
                let diff = max_diff(&run(&c, kernel, with_bias), &exact);
                assert!(diff < 1e-5, "{kernel:?} bias {with_bias}: {diff}");
            }
        }
    }

    #[test]
    fn padding_keys_are_ignored() {
        // The third text has one real token: its output must be that token's value,
        // whatever the padding positions hold.
        let c = case(&[5, 3, 1], 2, 4, Kind::Float);
        for kernel in runnable() {
            let row = run(&c, kernel, false).get(2); // [T, hidden]
            let first = row.get(0).unsqueeze(0).expand_as(&row);
            assert!(max_diff(&row, &first) < 1e-6, "{kernel:?}");
        }
    }

    #[test]
    fn a_nan_key_poisons_its_text_as_in_aten() {
        // A NaN (say from an f16 overflow upstream) must show, not vanish.
        let c = case(&[20, 20], 1, 16, Kind::Float);
        let _ = c.qkv.get(0).get(17).get(16 + 3).fill_(f64::NAN); // text 0, key 17
        for kernel in runnable() {
            let out = run(&c, kernel, false);
            let nan_rows = |text: i64| out.get(text).isnan().any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
            assert_eq!((nan_rows(0), nan_rows(1)), (20, 0), "{kernel:?}");
        }
    }

    #[test]
    fn a_window_hides_the_keys_beyond_its_radius_in_every_kernel() {
        // Radius 2 over texts of 9 and 4 tokens: the second text's padding rows
        // reach past every real token's window, where the lowest f32 of padding
        // and of the band add up to -inf; each row still has a finite entry (its
        // own position), so no kernel may return NaN, and every kernel must match
        // the exact result (ModernBERT's local layers, Gemma's sliding ones).
        let c = case(&[9, 4], 2, 16, Kind::Float);
        let band = Visibility::window(2).bias(9, Device::Cpu).unwrap().expect("9 tokens exceed a radius of 2");
        assert_eq!(Visibility::window(8).bias(9, Device::Cpu).unwrap().map(|b| b.size()), None);
        let bias = band.unsqueeze(0).expand([c.heads, 9, 9], false).unsqueeze(0).contiguous();
        let c = Case { bias, ..c };
        let exact = reference(&c, true);
        // Real tokens' rows; what padding rows hold never reaches an output (the
        // CPU kernel skips trailing padding keys, so its padding rows average other keys).
        let real = |t: &Tensor| Tensor::cat(&[t.get(0), t.get(1).narrow(0, 0, 4)], 0);
        for kernel in runnable() {
            let out = run(&c, kernel, true);
            assert!(out.isfinite().all().int64_value(&[]) == 1, "{kernel:?}: non-finite output");
            let diff = max_diff(&real(&out), &real(&exact));
            assert!(diff < 1e-5, "{kernel:?}: {diff}");
        }
        // The band really hides something: without it the first text differs.
        let unbanded = run(&c, Kernel::Explicit, false);
        assert!(max_diff(&unbanded.get(0), &exact.get(0)) > 1e-3);
    }

    #[test]
    fn a_band_shared_by_every_head_equals_it_expanded_per_head() {
        // `AttentionMask::new` hands a pure causal or window band to the kernels
        // as one [T, T] tensor; each must read it as the same band for every head.
        let c = case(&[11, 6, 9], 3, 16, Kind::Float);
        for visibility in [Visibility::window(2), Visibility::CAUSAL, Visibility { before: Some(1), after: Some(4) }] {
            let band = visibility.bias(11, Device::Cpu).unwrap().expect("11 tokens exceed the band");
            let expanded = band.unsqueeze(0).expand([3, 11, 11], false).unsqueeze(0).contiguous();
            // `c`'s own tensors: a second `case(..)` would draw from the global
            // generator, which tests running in parallel also draw from.
            let with_band =
                Case { mask: c.mask.shallow_clone(), qkv: c.qkv.shallow_clone(), bias: expanded, heads: c.heads };
            let exact = reference(&with_band, true);
            // Real tokens' rows only: padding rows never reach an output, and our
            // kernel skips trailing padding keys there.
            let real = |t: &Tensor| t.to_kind(Kind::Double) * c.mask.unsqueeze(-1).to_kind(Kind::Double);
            for kernel in runnable() {
                let shared = AttentionMask::build(&c.mask, Some(&band.view([1, 1, 11, 11])), kernel).unwrap();
                let out = shared.attend(&c.qkv, c.heads).unwrap();
                let diff = max_diff(&real(&out), &real(&exact));
                assert!(diff < 1e-5, "{kernel:?} {visibility:?}: {diff}");
            }
            let via_new = AttentionMask::new(&c.mask, visibility, 3, None).unwrap().attend(&c.qkv, c.heads).unwrap();
            assert!(max_diff(&real(&via_new), &real(&exact)) < 1e-5, "{visibility:?} through new");
        }
    }

    /// softmax(scale · q kᵀ + padding + band) v in f64 for grouped-query heads:
    /// `q` `[B, T, heads·d]`, `k` and `v` `[B, T, kv_heads·d]`.
    fn reference_split(mask: &Tensor, qkv: [&Tensor; 3], (heads, kv): (i64, i64), scale: f64, band: &Tensor) -> Tensor {
        let [q, k, v] = qkv;
        let (b, t, w) = q.size3().unwrap();
        let d = w / heads;
        let split = |x: &Tensor, n: i64| {
            let x = x.to_kind(Kind::Double).view([b, t, n, 1, d]).expand([b, t, n, heads / n, d], false);
            x.reshape([b, t, heads, d]).transpose(1, 2)
        };
        let (q, k, v) = (split(q, heads), split(k, kv), split(v, kv));
        let padding = mask.eq(0).view([b, 1, 1, t]).to_kind(Kind::Double) * f64::from(f32::MIN);
        let scores = q.matmul(&k.transpose(-1, -2)) * scale + padding + band.to_kind(Kind::Double);
        scores.softmax(-1, Kind::Double).matmul(&v).transpose(1, 2).reshape([b, t, w])
    }

    #[test]
    fn grouped_query_heads_with_a_band_match_the_exact_result_on_every_route() {
        // Qwen3's and Gemma's attention: 4 query heads sharing 2 key/value heads,
        // a causal band or a window, left padding, a custom scale, on both sides
        // of SDPA_BAND_MIN_SEQ, through every kernel (libtorch's takes the
        // grouped heads as they are, ours and the explicit one repeated).
        for seq in [SDPA_BAND_MIN_SEQ - 5, SDPA_BAND_MIN_SEQ + 3] {
            for visibility in [Visibility::CAUSAL, Visibility::window(3)] {
                let (b, heads, kv, d) = (3, 4, 2, 16);
                let lengths = [seq, seq - 4, 2];
                let rows: Vec<i64> =
                    lengths.iter().flat_map(|&n| (0..seq).map(move |p| i64::from(p >= seq - n))).collect();
                let mask = Tensor::from_slice(&rows).view([b, seq]);
                // Deterministic values, not the global generator that tests
                // running in parallel reseed.
                let values = |width: i64, phase: f64| {
                    let n = b * seq * width;
                    (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.7113 + phase).sin().view([b, seq, width]) * 2.0
                };
                let (q, k, v) = (values(heads * d, 0.0), values(kv * d, 1.3), values(kv * d, 2.9));
                let band = visibility.bias(seq, Device::Cpu).unwrap().expect("the band hides keys");
                let exact = reference_split(&mask, [&q, &k, &v], (heads, kv), 0.3, &band);
                let real = |t: &Tensor| t.to_kind(Kind::Double) * mask.unsqueeze(-1).to_kind(Kind::Double);
                let mut kernels: Vec<Option<Kernel>> = runnable().into_iter().map(Some).collect();
                kernels.push(None); // whichever `new` picks
                for kernel in kernels {
                    let m = AttentionMask::new_on(&mask, visibility, heads, None, kernel).unwrap();
                    let out = m.attend_split(&q, &k, &v, heads, kv, Some(0.3)).unwrap();
                    assert_eq!(out.size(), [b, seq, heads * d]);
                    assert!(out.isfinite().all().int64_value(&[]) == 1, "{kernel:?} {visibility:?} {seq}: non-finite");
                    let diff = max_diff(&real(&out), &real(&exact));
                    assert!(diff < 1e-5, "{kernel:?} {visibility:?} {seq}: {diff}");
                }
            }
        }
    }

    #[test]
    fn bands_from_sdpa_band_min_seq_tokens_go_to_libtorchs_kernel() {
        let mask = |seq: i64| Tensor::ones([2, seq], (Kind::Int64, Device::Cpu));
        let route = |seq: i64, visibility: Visibility, bias: Option<&Tensor>| match AttentionMask::new(
            &mask(seq),
            visibility,
            2,
            bias,
        )
        .unwrap()
        {
            AttentionMask::Cpu { .. } => Kernel::Cpu,
            AttentionMask::Explicit(_) => Kernel::Explicit,
            AttentionMask::Fused(_) => Kernel::Fused,
        };
        let (short, long) = (SDPA_BAND_MIN_SEQ - 1, SDPA_BAND_MIN_SEQ);
        let per_head = Tensor::zeros([1, 2, long, long], (Kind::Float, Device::Cpu));
        if kernels::available() {
            assert_eq!(route(short, Visibility::CAUSAL, None), Kernel::Cpu);
            assert_eq!(route(long, Visibility::CAUSAL, None), Kernel::Fused);
            assert_eq!(route(long, Visibility::window(2), None), Kernel::Fused);
            // Without a band, or with a per-head bias, ours at every length.
            assert_eq!(route(long, Visibility::ALL, None), Kernel::Cpu);
            assert_eq!(route(long, Visibility::window(long), None), Kernel::Cpu);
            assert_eq!(route(long, Visibility::CAUSAL, Some(&per_head)), Kernel::Cpu);
        } else {
            assert_eq!(route(long, Visibility::CAUSAL, None), Kernel::Explicit);
        }
    }

    #[test]
    fn a_text_without_tokens_averages_its_padding() {
        // transformers' additive mask gives an all-padding row uniform weights over
        // its positions; neither the explicit kernel's extra keys nor the CPU
        // kernel's skipping of trailing padding may change that.
        let (b, h, t, d) = (1, 1, 3, 2);
        let qkv = Tensor::randn([b, t, 3 * h * d], (Kind::Float, Device::Cpu));
        let values = qkv.narrow(2, 2 * h * d, h * d); // [1, 3, 2]
        for kernel in runnable().into_iter().filter(|&k| k != Kernel::Fused) {
            let mask = AttentionMask::build(&Tensor::zeros([b, t], (Kind::Int64, Device::Cpu)), None, kernel).unwrap();
            let out = mask.attend(&qkv, h).unwrap(); // [1, 3, 2]
            let mean = values.mean_dim(1, true, Kind::Float).expand_as(&out);
            assert!(max_diff(&out, &mean) < 1e-6, "{kernel:?}: {}", max_diff(&out, &mean));
        }
    }

    #[test]
    fn the_kernel_follows_the_cpu_and_the_length() {
        let short = Tensor::ones([2, EXPLICIT_MAX_SEQ], (Kind::Int64, Device::Cpu));
        let long = Tensor::ones([2, EXPLICIT_MAX_SEQ + 1], (Kind::Int64, Device::Cpu));
        let (short, long) = (Kernel::for_mask(&short), Kernel::for_mask(&long));
        if kernels::available() {
            assert_eq!((short, long), (Kernel::Cpu, Kernel::Cpu));
        } else {
            assert_eq!((short, long), (Kernel::Explicit, Kernel::Fused));
        }
    }
}
