//! Normalization layers: LayerNorm with or without bias, and RMSNorm in its plain
//! (T5, Qwen3) and Gemma (`1 + w`) forms, alone or per head followed by RoPE.

use tch::{Kind, Tensor};

use super::Rope;
use crate::backend::kernels::{self, RmsForm};
use crate::error::EmbedError;
use crate::weights::Scope;

/// Layer normalization over the last dimension.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    size: i64,
}

impl LayerNorm {
    /// Reads `weight` and `bias` `[size]` from `w`.
    pub fn load(w: &Scope<'_>, size: i64, eps: f64) -> Self {
        LayerNorm { weight: w.get("weight", &[size]), bias: w.get("bias", &[size]), eps, size }
    }

    /// Reads `weight` `[size]` only (ModernBERT's `norm_bias: false`). The bias is
    /// a zero tensor rather than absent so that our kernel, which always adds one,
    /// stays the fast path; adding zero changes no value.
    pub fn load_no_bias(w: &Scope<'_>, size: i64, eps: f64) -> Self {
        let weight = w.get("weight", &[size]);
        let bias = weight.zeros_like();
        LayerNorm { weight, bias, eps, size }
    }

    /// The same layer with its tensors in `kind` (heads that compute in f32).
    pub fn to_kind(&self, kind: Kind) -> Result<LayerNorm, EmbedError> {
        Ok(LayerNorm {
            weight: self.weight.f_to_kind(kind)?,
            bias: self.bias.f_to_kind(kind)?,
            eps: self.eps,
            size: self.size,
        })
    }

    /// Applies the layer: our kernel on AVX-512 CPUs, else aten's.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        if kernels::supports(xs) {
            return kernels::layer_norm(xs, &self.weight, &self.bias, self.eps);
        }
        self.forward_aten(xs)
    }

    fn forward_aten(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        Ok(xs.f_layer_norm([self.size], Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}

/// Root-mean-square normalization: `x / sqrt(mean(x²) + eps) · w`, the mean of
/// squares and the division in f32 whatever the model's precision (where bf16
/// would lose most), rounded where transformers rounds: Qwen3 and T5 round the
/// normalized values to the model's precision before the product by the weight,
/// Gemma multiplies in f32 and rounds once. Matching those roundings keeps a bf16
/// model's states equal to transformers' rather than merely close.
pub struct RmsNorm {
    /// f32: `w`, or `1 + w` for Gemma (computed in f32, as Gemma does).
    scale: Tensor,
    eps: f64,
    form: RmsForm,
}

impl RmsNorm {
    /// Reads `weight` `[size]` from `w`; the output is `normalized · weight`.
    pub fn load(w: &Scope<'_>, size: i64, eps: f64) -> Result<Self, EmbedError> {
        Ok(RmsNorm { scale: w.get("weight", &[size]).f_to_kind(Kind::Float)?, eps, form: RmsForm::Plain })
    }

    /// Gemma's form: the checkpoint stores `w` and the output is
    /// `normalized · (1 + w)`, so a zero-initialized weight is the identity.
    pub fn load_gemma(w: &Scope<'_>, size: i64, eps: f64) -> Result<Self, EmbedError> {
        let scale = w.get("weight", &[size]).f_to_kind(Kind::Float)?.f_add_scalar(1.0)?;
        Ok(RmsNorm { scale, eps, form: RmsForm::Gemma })
    }

    /// Normalizes over the last dimension; returns `xs`'s precision. Our kernel on
    /// AVX-512 CPUs, else aten's operators.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        if kernels::supports_elementwise(xs) {
            return kernels::rms_norm(xs, &self.scale, self.eps, self.form);
        }
        self.forward_aten(xs)
    }

    fn forward_aten(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        let kind = xs.kind();
        let x = xs.f_to_kind(Kind::Float)?;
        let variance = x.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?;
        let normalized = x.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        let scaled = match self.form {
            // Rounded to the model's precision first; a product of two values of
            // that precision is the f32 product rounded, as aten computes it.
            RmsForm::Plain => normalized.f_to_kind(kind)?.f_to_kind(Kind::Float)?.f_mul(&self.scale)?,
            RmsForm::Gemma => normalized.f_mul(&self.scale)?,
        };
        Ok(scaled.f_to_kind(kind)?)
    }

    /// Qwen3's query or key path: `heads` heads of this norm's width taken from
    /// value `offset` on of each token of `qkv` `[B, T, width]`, each normalized,
    /// then rotated by RoPE with `cos` and `sin` `[T, head_dim]` in `qkv`'s
    /// precision (as transformers rounds the tables), every product of the
    /// rotation rounded to that precision as transformers' bf16 tensors are.
    /// Returns `[B, T, heads·head_dim]`; one pass of our kernel on AVX-512 CPUs.
    pub fn forward_heads_rotated(
        &self,
        qkv: &Tensor,
        (offset, heads): (i64, i64),
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor, EmbedError> {
        if kernels::supports_elementwise(qkv) && cos.kind() == qkv.kind() && sin.kind() == qkv.kind() {
            return kernels::rms_norm_rope(qkv, &self.scale, (cos, sin), (offset, heads), self.eps, self.form);
        }
        self.forward_heads_rotated_aten(qkv, (offset, heads), cos, sin)
    }

    fn forward_heads_rotated_aten(
        &self,
        qkv: &Tensor,
        (offset, heads): (i64, i64),
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor, EmbedError> {
        let (batch, seq, _) = qkv.size3()?;
        let d = self.scale.size1()?;
        let x = qkv.f_narrow(-1, offset, heads * d)?.f_reshape([batch, seq, heads, d])?;
        let normed = self.forward_aten(&x)?;
        // [T, d] → [T, 1, d] against [B, T, heads, d]; in the model's precision,
        // so each product and the sum round as transformers' do.
        let (cos, sin) = (cos.f_to_kind(qkv.kind())?.f_unsqueeze(1)?, sin.f_to_kind(qkv.kind())?.f_unsqueeze(1)?);
        Ok(Rope::rotate(&normed, &cos, &sin)?.f_reshape([batch, seq, heads * d])?)
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    #[test]
    fn layer_norm_kernel_matches_aten() {
        if !kernels::available() {
            eprintln!("skipping: this CPU lacks AVX-512, so LayerNorm is aten's");
            return;
        }
        tch::manual_seed(5);
        // (precision, one unit in the last place relative to the value)
        for (kind, ulp) in
            [(Kind::Float, 2f64.powi(-23)), (Kind::BFloat16, 2f64.powi(-7)), (Kind::Half, 2f64.powi(-10))]
        {
            for size in [5i64, 16, 384, 1000] {
                let options = (Kind::Float, Device::Cpu);
                let norm = LayerNorm {
                    weight: Tensor::randn([size], options).to_kind(kind),
                    bias: Tensor::randn([size], options).to_kind(kind),
                    eps: 1e-12,
                    size,
                };
                // An offset mean and a spread, as hidden states have.
                let xs = (Tensor::randn([3, 7, size], options) * 4.0 + 3.0).to_kind(kind);
                let ours = norm.forward(&xs).unwrap();
                let theirs = norm.forward_aten(&xs).unwrap();
                assert_eq!((ours.size(), ours.kind()), (theirs.size(), theirs.kind()));
                let (ours, theirs) = (ours.to_kind(Kind::Double), theirs.to_kind(Kind::Double));
                let gap = (&ours - &theirs).abs();
                // Both compute in f32 and round once: a few ulp apart in f32 (the
                // order of the sums differs), at most one in bf16 and f16, and equal
                // almost everywhere there.
                let ulps = if kind == Kind::Float { 64.0 } else { 1.0 };
                let excess = (&gap - theirs.abs() * ulp * ulps).max().double_value(&[]);
                assert!(excess <= 1e-6, "{kind:?} n={size}: beyond tolerance by {excess}");
                if kind != Kind::Float {
                    let share = gap.gt(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / gap.numel() as f64;
                    assert!(share < 0.05, "{kind:?} n={size}: {share} of values differ");
                }
            }
        }
    }

    #[test]
    fn rms_norm_matches_its_formula_in_both_forms() {
        let xs = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0]).view([2, 4]);
        let w = Tensor::from_slice(&[0.5f32, 1.0, 2.0, -1.0]);
        let plain = RmsNorm { scale: w.copy(), eps: 1e-6, form: RmsForm::Plain };
        let gemma = RmsNorm { scale: w.f_add_scalar(1.0).unwrap(), eps: 1e-6, form: RmsForm::Gemma };
        // Row 0: mean of squares (1 + 4 + 9 + 16) / 4 = 7.5.
        let r = (7.5f64 + 1e-6).sqrt();
        let expected = [1.0 / r * 0.5, -2.0 / r, 3.0 / r * 2.0, -(4.0 / r)];
        let out = plain.forward(&xs).unwrap();
        for (i, e) in expected.iter().enumerate() {
            assert!((out.double_value(&[0, i as i64]) - e).abs() < 1e-6, "{i}");
        }
        let out = gemma.forward(&xs).unwrap();
        let expected_gemma = [1.0 / r * 1.5, -2.0 / r * 2.0, 3.0 / r * 3.0, 4.0 / r * 0.0];
        for (i, e) in expected_gemma.iter().enumerate() {
            assert!((out.double_value(&[0, i as i64]) - e).abs() < 1e-6, "{i}");
        }
        // Row 1: mean of squares 0.25; bf16 in, bf16 out.
        let out = plain.forward(&xs.to_kind(Kind::BFloat16)).unwrap();
        assert_eq!(out.kind(), Kind::BFloat16);
        assert!((out.double_value(&[1, 3]) - -(1.0 / (0.25f64 + 1e-6).sqrt())).abs() < 2e-2);
    }

    /// A norm of `size` with random weights in `form` (the scale f32, holding
    /// values of `kind`, as a checkpoint in `kind` gives them).
    fn random_rms(size: i64, form: RmsForm, kind: Kind) -> RmsNorm {
        let weight = (Tensor::randn([size], (Kind::Float, Device::Cpu)) * 0.5 + 1.0).to_kind(kind);
        let scale = match form {
            RmsForm::Plain => weight.to_kind(Kind::Float),
            RmsForm::Gemma => weight.to_kind(Kind::Float) + 1.0,
        };
        RmsNorm { scale, eps: 1e-6, form }
    }

    /// Asserts `ours` is `theirs` up to summation order: within 1e-6 relative in
    /// f32; in bf16 and f16 equal but where a last f32 bit tips a rounding (then
    /// one unit apart), for under 1% of values. Relative to each value, or with
    /// `per_row`, to the largest of its row: a rotation's sum of two products can
    /// cancel, leaving a value much smaller than the unit its terms were rounded to.
    fn assert_same_rounding(ours: &Tensor, theirs: &Tensor, kind: Kind, per_row: bool, case: &str) {
        assert_eq!((ours.size(), ours.kind()), (theirs.size(), theirs.kind()), "{case}");
        let (ours, theirs) = (ours.to_kind(Kind::Double), theirs.to_kind(Kind::Double));
        let gap = (&ours - &theirs).abs();
        let relative = match kind {
            Kind::Float => 1e-6,
            Kind::BFloat16 => 2f64.powi(-7),
            _ => 2f64.powi(-10),
        };
        let size = if per_row { theirs.abs().amax([-1i64].as_slice(), true) } else { theirs.abs() };
        let excess = (&gap - size * relative).max().double_value(&[]);
        assert!(excess <= 1e-12, "{case}: beyond tolerance by {excess}");
        if kind != Kind::Float {
            let share = gap.gt(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / gap.numel() as f64;
            assert!(share < 0.01, "{case}: {share} of values differ");
        }
    }

    #[test]
    fn rms_norm_kernel_rounds_as_transformers_does() {
        if !kernels::available() {
            eprintln!("skipping: this CPU lacks AVX-512, so RMSNorm is aten's");
            return;
        }
        tch::manual_seed(7);
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            for form in [RmsForm::Plain, RmsForm::Gemma] {
                // Below, at and between multiples of 16; a head; Qwen3-0.6B's width.
                for size in [5i64, 16, 37, 128, 1024] {
                    let norm = random_rms(size, form, kind);
                    let xs = (Tensor::randn([3, 7, size], (Kind::Float, Device::Cpu)) * 3.0 + 0.5).to_kind(kind);
                    let case = format!("{kind:?} {form:?} n={size}");
                    let theirs = norm.forward_aten(&xs).unwrap();
                    assert_same_rounding(&norm.forward(&xs).unwrap(), &theirs, kind, false, &case);
                    // A strided view (a head of a fused projection) goes the same way.
                    let wide = Tensor::cat(&[&xs, &xs], -1);
                    let view = wide.narrow(-1, size, size);
                    assert_same_rounding(&norm.forward(&view).unwrap(), &theirs, kind, false, &case);
                }
            }
        }
    }

    #[test]
    fn rms_norm_fallback_is_transformers_formula() {
        // transformers, literally, on tensors of the model's precision:
        // Qwen3RMSNorm: weight * (x.float() * rsqrt(mean(x²) + eps)).to(dtype);
        // Gemma3RMSNorm: (x.float() * rsqrt(...) * (1 + weight.float())).type_as(x).
        tch::manual_seed(8);
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            let size = 37;
            let weight = (Tensor::randn([size], (Kind::Float, Device::Cpu)) * 0.5).to_kind(kind);
            let xs = (Tensor::randn([4, size], (Kind::Float, Device::Cpu)) * 3.0).to_kind(kind);
            let x = xs.to_kind(Kind::Float);
            let normalized = &x * (x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float) + 1e-6).rsqrt();
            let qwen = &weight * normalized.to_kind(kind);
            let gemma = (&normalized * (weight.to_kind(Kind::Float) + 1.0)).to_kind(kind);
            let plain = RmsNorm { scale: weight.to_kind(Kind::Float), eps: 1e-6, form: RmsForm::Plain };
            let gemma_norm = RmsNorm { scale: weight.to_kind(Kind::Float) + 1.0, eps: 1e-6, form: RmsForm::Gemma };
            assert!(plain.forward_aten(&xs).unwrap().equal(&qwen), "{kind:?} plain");
            assert!(gemma_norm.forward_aten(&xs).unwrap().equal(&gemma), "{kind:?} gemma");
            // f64 is not a kernel precision: `forward` takes the same aten path.
            let x64 = xs.to_kind(Kind::Double);
            assert!(plain.forward(&x64).unwrap().equal(&plain.forward_aten(&x64).unwrap()), "{kind:?} f64");
        }
    }

    #[test]
    fn rotated_head_norm_kernel_matches_norm_then_rope() {
        if !kernels::available() {
            eprintln!("skipping: this CPU lacks AVX-512, so the per-head norms are aten's");
            return;
        }
        tch::manual_seed(9);
        let (batch, seq, heads, kv_heads) = (2i64, 6i64, 4i64, 2i64);
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            // Heads of 8 and 40 (halves of 4 and 20: tails), and Qwen3's 128.
            for d in [8i64, 40, 128] {
                let width = (heads + 2 * kv_heads) * d;
                let qkv = (Tensor::randn([batch, seq, width], (Kind::Float, Device::Cpu)) * 2.0 + 0.3).to_kind(kind);
                let (cos, sin) = Rope::new(d, 1_000_000.0, 1.0, Device::Cpu).unwrap().tables(seq, kind).unwrap();
                for form in [RmsForm::Plain, RmsForm::Gemma] {
                    let norm = random_rms(d, form, kind);
                    for (offset, n) in [(0, heads), (heads * d, kv_heads)] {
                        let ours = norm.forward_heads_rotated(&qkv, (offset, n), &cos, &sin).unwrap();
                        let theirs = norm.forward_heads_rotated_aten(&qkv, (offset, n), &cos, &sin).unwrap();
                        assert_eq!(ours.size(), [batch, seq, n * d]);
                        let case = format!("{kind:?} {form:?} d={d} offset={offset}");
                        // Compared head by head.
                        let heads_of = |x: &Tensor| x.view([batch, seq, n, d]);
                        assert_same_rounding(&heads_of(&ours), &heads_of(&theirs), kind, true, &case);
                    }
                }
            }
        }
    }

    #[test]
    fn rotated_head_norm_fallback_is_norm_then_rotate() {
        // Tables in another precision than the input take aten's path, which must be
        // each head normalized, then `x·cos + rotate_half(x)·sin`.
        tch::manual_seed(10);
        let (d, seq) = (8i64, 3i64);
        let qkv = Tensor::randn([1, seq, 3 * d], (Kind::Double, Device::Cpu));
        let (cos, sin) = Rope::new(d, 10_000.0, 1.0, Device::Cpu).unwrap().tables(seq, Kind::Double).unwrap();
        let norm = RmsNorm { scale: Tensor::randn([d], (Kind::Float, Device::Cpu)), eps: 1e-6, form: RmsForm::Plain };
        let out = norm.forward_heads_rotated(&qkv, (d, 2), &cos, &sin).unwrap();
        for head in 0..2 {
            let x = qkv.narrow(-1, d + head * d, d);
            let normed = norm.forward_aten(&x).unwrap();
            let expected = Rope::rotate(&normed, &cos, &sin).unwrap();
            let got = out.narrow(-1, head * d, d);
            assert!(got.allclose(&expected, 1e-12, 1e-12, false), "head {head}");
        }
    }
}
