//! Position information, in each form an architecture may use: absolute ids
//! counted from each text's first token (BERT, DistilBERT), fairseq ids numbered after the padding id (RoBERTa, MPNet), relative
//! buckets (T5, MPNet), and rotary embeddings (ModernBERT, Qwen3, Gemma3).
//! DeBERTa's disentangled positions live with DeBERTa, their only user.

use tch::{Device, Kind, Tensor};

use crate::error::EmbedError;

/// `0, 1, 2, …` counted from each text's first real token, for `[B, T]`
/// attention masks: `0, 1, …` in a right-padded batch, and the same
/// ids for a text padded on the left, so that a text's embedding never depends on
/// how its batch was padded. (Padding positions get ids too, which nothing reads.)
pub fn from_first_token(attention_mask: &Tensor) -> Result<Tensor, EmbedError> {
    let counted = attention_mask.f_ne(0)?.f_to_kind(Kind::Int64)?.f_cumsum(1, Kind::Int64)?;
    Ok(counted.f_sub_scalar(1)?.f_clamp_min(0)?)
}

/// fairseq's `make_positions`: real tokens are numbered from `pad + 1`, padding
/// keeps `pad` (transformers' `create_position_ids_from_input_ids`). Padding is
/// recognised by the attention mask as well as by its id, so that a left-padded
/// text gets the positions it has alone even when the tokenizer pads with another
/// id than the model's `pad` (MPNet numbers after id 1 whatever the tokenizer).
pub fn after_padding(input_ids: &Tensor, attention_mask: &Tensor, pad: i64) -> Result<Tensor, EmbedError> {
    let real = input_ids.f_ne(pad)?.f_logical_and(&attention_mask.f_ne(0)?)?.f_to_kind(Kind::Int64)?;
    Ok(real.f_cumsum(1, Kind::Int64)?.f_mul(&real)?.f_add_scalar(pad)?)
}

/// `[seq, seq]` relative distances `key - query`, on the CPU.
pub fn relative_distances(seq: i64) -> Result<Tensor, EmbedError> {
    let positions = Tensor::f_arange(seq, (Kind::Int64, Device::Cpu))?;
    Ok(positions.f_unsqueeze(0)?.f_sub(&positions.f_unsqueeze(1)?)?)
}

/// T5's bidirectional bucketing of relative distances (`key - query`), as T5 and
/// MPNet use it: half of `buckets` per direction, exact below a quarter of
/// `buckets`, logarithmic up to `max_distance`, the last bucket beyond.
///
/// Compute it on the CPU: a GPU `log` rounding one ulp lower at an exact power of
/// two would pick the bucket below the one transformers picks.
pub fn relative_bucket(relative: &Tensor, buckets: i64, max_distance: i64) -> Result<Tensor, EmbedError> {
    let half = buckets / 2;
    let direction = relative.f_gt(0)?.f_to_kind(Kind::Int64)?.f_mul_scalar(half)?;
    let n = relative.f_abs()?;
    let max_exact = half / 2;
    let is_small = n.f_lt(max_exact)?;
    let scale = (half - max_exact) as f64 / (max_distance as f64 / max_exact as f64).ln();
    let large = n
        .f_to_kind(Kind::Float)?
        .f_div_scalar(max_exact as f64)?
        .f_log()?
        .f_mul_scalar(scale)?
        .f_to_kind(Kind::Int64)?
        .f_add_scalar(max_exact)?
        .f_clamp_max(half - 1)?;
    Ok(direction.f_add(&n.f_where_self(&is_small, &large)?)?)
}

/// Rotary position embeddings (Su et al. 2021, arXiv:2104.09864) in the
/// "rotate half" layout transformers uses: dimension `i` of a head pairs with
/// `i + head_dim / 2`.
#[derive(Debug)]
pub struct Rope {
    /// `[head_dim / 2]` f32 inverse frequencies, `1 / theta^(2i / head_dim)`,
    /// already divided by a linear scaling factor.
    inv_freq: Tensor,
}

impl Rope {
    /// Frequencies for heads of `head_dim` with base `theta`; `linear_factor`
    /// divides positions (`rope_scaling: {"rope_type": "linear", "factor": f}`),
    /// 1.0 for none.
    pub fn new(head_dim: i64, theta: f64, linear_factor: f64, device: Device) -> Result<Self, EmbedError> {
        // As transformers computes it: integer exponents, then f32.
        let exponents = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Int64, Device::Cpu))?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(head_dim as f64)?;
        let inv_freq = Tensor::f_full([1], theta, (Kind::Float, Device::Cpu))?
            .f_pow(&exponents)?
            .f_reciprocal()?
            .f_div_scalar(linear_factor)?;
        Ok(Rope { inv_freq: inv_freq.f_to_device(device)? })
    }

    /// `(cos, sin)`, each `[seq, head_dim]` in `kind`, for positions `0..seq`
    /// (a left-padded batch keeps these positions: rotations only ever compare
    /// two positions, so a shift of every position changes no score).
    pub fn tables(&self, seq: i64, kind: Kind) -> Result<(Tensor, Tensor), EmbedError> {
        let positions = Tensor::f_arange(seq, (Kind::Float, self.inv_freq.device()))?;
        let freqs = positions.f_outer(&self.inv_freq)?;
        let angles = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        Ok((angles.f_cos()?.f_to_kind(kind)?, angles.f_sin()?.f_to_kind(kind)?))
    }

    /// `x·cos + rotate_half(x)·sin`, where `cos` and `sin` broadcast against `x`
    /// (whose last dimension is one head).
    pub fn rotate(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, EmbedError> {
        let half = xs.size().last().copied().unwrap_or(0) / 2;
        let (first, second) = (xs.f_narrow(-1, 0, half)?, xs.f_narrow(-1, half, half)?);
        let rotated = Tensor::f_cat(&[&second.f_neg()?, &first], -1)?;
        Ok(xs.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_the_first_real_token() {
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 0, 1, 1]).view([2, 4]);
        let ids = Vec::<i64>::try_from(from_first_token(&mask).unwrap().view(-1)).unwrap();
        // Right-padded: 0 1 2 then padding; left-padded: padding then 0 1.
        assert_eq!(ids, [0, 1, 2, 2, 0, 0, 0, 1]);
        let right = Tensor::from_slice(&[1i64, 1, 1, 1]).view([1, 4]);
        assert_eq!(Vec::<i64>::try_from(from_first_token(&right).unwrap().view(-1)).unwrap(), [0, 1, 2, 3]);
    }

    #[test]
    fn buckets_follow_t5s_formula() {
        // 32 buckets, max distance 128: 16 per direction, exact below 8, then
        // 8 + floor(ln(n / 8) / ln(16) · 8), at most 15; keys after the query
        // (positive distances) take the upper half.
        let distances = Tensor::from_slice(&[0i64, 1, 7, 8, 12, 16, 127, 128, 1000, -1, -8, -16, -1000]);
        let expected = [0i64, 17, 23, 24, 25, 26, 31, 31, 31, 1, 8, 10, 15];
        let ours = relative_bucket(&distances, 32, 128).unwrap();
        let by_hand: Vec<i64> = [0i64, 1, 7, 8, 12, 16, 127, 128, 1000, -1, -8, -16, -1000]
            .iter()
            .map(|&d: &i64| {
                let n = d.abs();
                let bucket = if n < 8 { n } else { (8 + ((n as f64 / 8.0).ln() / 16f64.ln() * 8.0) as i64).min(15) };
                bucket + if d > 0 { 16 } else { 0 }
            })
            .collect();
        assert_eq!(by_hand, expected);
        assert_eq!(Vec::<i64>::try_from(ours).unwrap(), expected);
    }

    #[test]
    fn rotation_depends_only_on_the_distance_between_positions() {
        tch::manual_seed(3);
        let rope = Rope::new(8, 10_000.0, 1.0, Device::Cpu).unwrap();
        let (cos, sin) = rope.tables(12, Kind::Double).unwrap();
        let q = Tensor::randn([8], (Kind::Double, Device::Cpu));
        let k = Tensor::randn([8], (Kind::Double, Device::Cpu));
        let at = |x: &Tensor, p: i64| Rope::rotate(x, &cos.get(p), &sin.get(p)).unwrap();
        let score = |i: i64, j: i64| at(&q, i).dot(&at(&k, j)).double_value(&[]);
        assert!((score(3, 1) - score(10, 8)).abs() < 1e-5, "angles are f32, as in transformers");
        assert!((score(3, 1) - score(3, 2)).abs() > 1e-6, "different distances give different scores");
        // Position 0 is the identity; a rotation keeps the norm.
        assert!(at(&q, 0).allclose(&q, 1e-12, 1e-12, false));
        assert!((at(&q, 7).norm().double_value(&[]) - q.norm().double_value(&[])).abs() < 1e-6);
        // The first frequency pair of position 1 is rotated by exactly 1 radian.
        let e0 = Tensor::zeros([8], (Kind::Double, Device::Cpu)).index_fill(0, &Tensor::from_slice(&[0i64]), 1.0);
        let r = at(&e0, 1);
        assert!((r.double_value(&[0]) - 1f64.cos()).abs() < 1e-6 && (r.double_value(&[4]) - 1f64.sin()).abs() < 1e-6);
    }
}
