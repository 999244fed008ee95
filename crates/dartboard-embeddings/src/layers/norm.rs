//! Normalization layers: LayerNorm with or without bias, and RMSNorm in its plain
//! (T5, Qwen3) and Gemma (`1 + w`) forms.

use tch::{Kind, Tensor};

use crate::backend::kernels;
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

/// Root-mean-square normalization: `x / sqrt(mean(x²) + eps) · w`, computed in f32
/// whatever the model's precision and rounded once, as transformers does for T5,
/// Qwen3 and Gemma (the mean of squares is where bf16 would lose most).
pub struct RmsNorm {
    /// Stored as the factor that multiplies: `w`, or `1 + w` for Gemma.
    scale: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Reads `weight` `[size]` from `w`; the output is `normalized · weight`.
    pub fn load(w: &Scope<'_>, size: i64, eps: f64) -> Result<Self, EmbedError> {
        Ok(RmsNorm { scale: w.get("weight", &[size]).f_to_kind(Kind::Float)?, eps })
    }

    /// Gemma's form: the checkpoint stores `w` and the output is
    /// `normalized · (1 + w)`, so a zero-initialized weight is the identity.
    pub fn load_gemma(w: &Scope<'_>, size: i64, eps: f64) -> Result<Self, EmbedError> {
        Ok(RmsNorm { scale: w.get("weight", &[size]).f_to_kind(Kind::Float)?.f_add_scalar(1.0)?, eps })
    }

    /// Normalizes over the last dimension; returns `xs`'s precision.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        let x = xs.f_to_kind(Kind::Float)?;
        let variance = x.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?;
        let normalized = x.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        Ok(normalized.f_mul(&self.scale)?.f_to_kind(xs.kind())?)
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
        let options = (Kind::Float, Device::Cpu);
        let xs = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0]).view([2, 4]);
        let w = Tensor::from_slice(&[0.5f32, 1.0, 2.0, -1.0]);
        let plain = RmsNorm { scale: w.copy(), eps: 1e-6 };
        let gemma = RmsNorm { scale: w.f_add_scalar(1.0).unwrap(), eps: 1e-6 };
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
        let _ = options;
    }
}
