//! Multi-head attention for every architecture: the mask is prepared once per
//! forward pass, and the kernel is picked from the sequence length and device.
//!
//! Why two kernels: libtorch's fused CPU attention
//! (`_scaled_dot_product_flash_attention_for_cpu`) works in blocks sized for long
//! sequences. On the short texts that dominate retrieval workloads (STS-B sentences
//! average 14 tokens) it spent about a quarter of sentence-transformers' bf16 time,
//! 0.6–0.9 ms per call where two batched matrix products and a softmax take
//! 0.2 ms. Past about 64 tokens the fused kernel wins again, and on CUDA it always
//! does. The unfused path computes in f32 whatever the model's precision: scores
//! rounded to bf16 before the softmax were ten times further from the exact result
//! than the fused kernel, which accumulates in f32 too.

use tch::{Device, Kind, Tensor};

use crate::EmbedError;

/// Longest sequence that uses the unfused kernel on the CPU. Measured on a 2-core
/// AVX-512 machine, batch 32, 12 heads of 32, f32: unfused 3.1 ms vs fused 3.9 ms
/// at 64 tokens, but 11.5 ms vs 7.5 ms at 96, once the `[B, heads, T, T]` scores
/// no longer fit in cache.
const UNFUSED_MAX_SEQ: i64 = 64;

/// The unfused kernel gives the softmax at least this many keys, padding with
/// masked zeros. libtorch's CPU softmax over a last dimension shorter than 16 takes
/// a slow path: 490 µs for `[32, 12, 14, 14]` against 48 µs at 16 keys.
const UNFUSED_MIN_KEYS: i64 = 16;

/// The keys each query may see, plus any additive bias, ready for one kernel.
pub(crate) enum AttentionMask {
    /// `scaled_dot_product_attention` with this mask (bool `[B,1,1,T]`, or additive
    /// in the compute precision).
    Fused(Tensor),
    /// Explicit `softmax(q kᵀ / √d + mask) v` in f32, with this additive f32 mask
    /// broadcastable to `[B, heads, T, K]`, where `K ≥ T` counts the keys after
    /// padding to [`UNFUSED_MIN_KEYS`].
    Unfused(Tensor),
}

impl AttentionMask {
    /// Padding only: `attention_mask` is the `[B, T]` 0/1 tensor from the tokenizer.
    pub(crate) fn padding(attention_mask: &Tensor) -> Result<Self, EmbedError> {
        Self::build(attention_mask, None, use_unfused(attention_mask))
    }

    /// Padding plus a per-head bias `[1, heads, T, T]` in the compute precision
    /// (MPNet's relative positions).
    pub(crate) fn padding_and_bias(attention_mask: &Tensor, bias: &Tensor) -> Result<Self, EmbedError> {
        Self::build(attention_mask, Some(bias), use_unfused(attention_mask))
    }

    fn build(attention_mask: &Tensor, bias: Option<&Tensor>, unfused: bool) -> Result<Self, EmbedError> {
        let (batch, seq) = attention_mask.size2()?;
        let keep = attention_mask.f_ne(0)?.f_view([batch, 1, 1, seq])?;
        let extra_keys = (UNFUSED_MIN_KEYS - seq).max(0);
        match (unfused, bias) {
            (true, None) => Ok(AttentionMask::Unfused(additive(&keep, extra_keys)?)),
            (true, Some(bias)) => {
                let bias = bias.f_to_kind(Kind::Float)?.f_constant_pad_nd([0, extra_keys])?;
                Ok(AttentionMask::Unfused(additive(&keep, extra_keys)?.f_add(&bias)?))
            }
            (false, None) => Ok(AttentionMask::Fused(keep)),
            (false, Some(bias)) => {
                let kind = bias.kind();
                let padding = keep.f_logical_not()?.f_to_kind(kind)?.f_mul_scalar(min_value(kind))?;
                Ok(AttentionMask::Fused(bias.f_add(&padding)?))
            }
        }
    }

    /// Attention over fused projections: `qkv` is `[B, T, 3·hidden]`, queries, keys
    /// and values side by side, split into `heads` heads. Returns `[B, T, hidden]`
    /// in the precision of `qkv`.
    pub(crate) fn attend(&self, qkv: &Tensor, heads: i64) -> Result<Tensor, EmbedError> {
        let (batch, seq, width) = qkv.size3()?;
        let (hidden, kind, device) = (width / 3, qkv.kind(), qkv.device());
        let head_dim = hidden / heads;
        // [3, B, heads, T, head_dim] as a view: no copy yet.
        let split = qkv.f_view([batch, seq, 3, heads, head_dim])?.f_permute([2, 0, 3, 1, 4])?;
        let context = match self {
            AttentionMask::Fused(mask) => {
                let (q, k, v) = (split.f_get(0)?, split.f_get(1)?, split.f_get(2)?);
                Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false)?
            }
            AttentionMask::Unfused(mask) => {
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
        };
        // Back to [B, T, hidden] in the model's precision, again in one pass.
        let mut out = Tensor::f_empty([batch, seq, heads, head_dim], (kind, device))?;
        out.f_copy_(&context.f_transpose(1, 2)?)?;
        Ok(out.f_view([batch, seq, hidden])?)
    }
}

fn use_unfused(attention_mask: &Tensor) -> bool {
    attention_mask.device() == Device::Cpu && attention_mask.size().last().is_some_and(|&t| t <= UNFUSED_MAX_SEQ)
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

    /// Both kernels on the same inputs: 3 texts of 5, 3 and 1 tokens, 2 heads of 4.
    fn both(kind: Kind, with_bias: bool) -> (Tensor, Tensor) {
        tch::manual_seed(7);
        let (b, h, t, d) = (3, 2, 5, 4);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0]).view([b, t]);
        let qkv = Tensor::randn([b, t, 3 * h * d], (Kind::Float, Device::Cpu)).to_kind(kind);
        let bias = Tensor::randn([1, h, t, t], (Kind::Float, Device::Cpu)).to_kind(kind);
        let bias = with_bias.then_some(&bias);
        let run = |unfused| {
            let m = AttentionMask::build(&mask, bias, unfused).unwrap();
            assert_eq!(matches!(m, AttentionMask::Unfused(_)), unfused);
            m.attend(&qkv, h).unwrap()
        };
        (run(false), run(true))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        a.to_kind(Kind::Float).f_sub(&b.to_kind(Kind::Float)).unwrap().abs().max().double_value(&[])
    }

    #[test]
    fn kernels_agree_in_f32() {
        for with_bias in [false, true] {
            let (fused, unfused) = both(Kind::Float, with_bias);
            assert_eq!(unfused.size(), fused.size());
            assert_eq!(unfused.kind(), Kind::Float);
            assert!(max_diff(&fused, &unfused) < 1e-5, "bias {with_bias}: {}", max_diff(&fused, &unfused));
        }
    }

    #[test]
    fn kernels_agree_in_bf16_to_its_rounding() {
        for with_bias in [false, true] {
            let (fused, unfused) = both(Kind::BFloat16, with_bias);
            assert_eq!(unfused.kind(), Kind::BFloat16);
            // Both accumulate in f32 and round once to bf16 (8 significant bits).
            assert!(max_diff(&fused, &unfused) < 2e-2, "bias {with_bias}: {}", max_diff(&fused, &unfused));
        }
    }

    #[test]
    fn padding_keys_are_ignored() {
        // The third text has one real token: its output must be that token's value,
        // whatever the padding positions hold.
        let (fused, unfused) = both(Kind::Float, false);
        for out in [fused, unfused] {
            let row = out.get(2); // [T, hidden]
            let first = row.get(0).unsqueeze(0).expand_as(&row);
            assert!(max_diff(&row, &first) < 1e-6);
        }
    }

    #[test]
    fn a_text_without_tokens_averages_its_padding_not_the_extra_keys() {
        // transformers' additive mask gives an all-padding row uniform weights over
        // its real positions; the keys added to reach 16 must not dilute that.
        let (b, h, t, d) = (1, 1, 3, 2);
        let mask = AttentionMask::build(&Tensor::zeros([b, t], (Kind::Int64, Device::Cpu)), None, true).unwrap();
        let qkv = Tensor::randn([b, t, 3 * h * d], (Kind::Float, Device::Cpu));
        let out = mask.attend(&qkv, h).unwrap(); // [1, 3, 2]
        let values = qkv.narrow(2, 2 * h * d, h * d); // [1, 3, 2]
        let mean = values.mean_dim(1, true, Kind::Float).expand_as(&out);
        assert!(max_diff(&out, &mean) < 1e-6, "{}", max_diff(&out, &mean));
    }

    #[test]
    fn short_cpu_sequences_take_the_unfused_kernel() {
        let short = Tensor::ones([2, UNFUSED_MAX_SEQ], (Kind::Int64, Device::Cpu));
        let long = Tensor::ones([2, UNFUSED_MAX_SEQ + 1], (Kind::Int64, Device::Cpu));
        assert!(matches!(AttentionMask::padding(&short).unwrap(), AttentionMask::Unfused(_)));
        assert!(matches!(AttentionMask::padding(&long).unwrap(), AttentionMask::Fused(_)));
    }
}
