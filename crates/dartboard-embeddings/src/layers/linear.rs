//! Linear layers, with or without bias. On the CPU they run libtorch's oneDNN
//! kernel with the activation or residual add fused into the product (see
//! `backend/onednn.rs` for why and the measurements); elsewhere `aten::linear`.

use tch::{Kind, Tensor};

use super::Activation;
use crate::backend::onednn::{self, Epilogue, Pointwise};
use crate::error::EmbedError;
use crate::weights::Scope;

/// `y = x Wᵀ + b`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `weight` `[out, in]` and `bias` `[out]` from `w`.
    pub fn load(w: &Scope<'_>, in_dim: i64, out_dim: i64) -> Self {
        Self::load_with_bias(w, in_dim, out_dim, true)
    }

    /// Reads `weight` `[out, in]` only: layers of models trained without biases
    /// (ModernBERT, Qwen3, Gemma, T5).
    pub fn load_no_bias(w: &Scope<'_>, in_dim: i64, out_dim: i64) -> Self {
        Self::load_with_bias(w, in_dim, out_dim, false)
    }

    /// Reads `weight` `[out, in]`, and `bias` `[out]` when `bias` is true (configs
    /// that say so with a flag such as `attention_bias`).
    pub fn load_with_bias(w: &Scope<'_>, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        Linear { weight: w.get("weight", &[out_dim, in_dim]), bias: bias.then(|| w.get("bias", &[out_dim])) }
    }

    /// A layer from tensors already in hand.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// The same layer with its tensors in `kind` (heads that compute in f32).
    pub fn to_kind(&self, kind: Kind) -> Result<Linear, EmbedError> {
        Ok(Linear {
            weight: self.weight.f_to_kind(kind)?,
            bias: self.bias.as_ref().map(|b| b.f_to_kind(kind)).transpose()?,
        })
    }

    /// Applies the layer.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        self.forward_then(xs, Epilogue::None)
    }

    /// `activation(x Wᵀ + b)`, in one kernel where the CPU allows.
    pub fn forward_activated(&self, xs: &Tensor, activation: Activation) -> Result<Tensor, EmbedError> {
        match activation.fusable() {
            Some(pointwise) => self.forward_then(xs, Epilogue::Pointwise(pointwise)),
            None => activation.forward(&self.forward(xs)?),
        }
    }

    /// `x Wᵀ + b + residual`, in one kernel where the CPU allows. `residual` must
    /// have the output's shape: it is not broadcast.
    pub fn forward_plus(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor, EmbedError> {
        self.forward_then(xs, Epilogue::Add(residual))
    }

    fn forward_then(&self, xs: &Tensor, epilogue: Epilogue<'_>) -> Result<Tensor, EmbedError> {
        if let Epilogue::Add(residual) = epilogue {
            // oneDNN would broadcast a mismatched residual silently; say so instead.
            let mut expected = xs.size();
            if let Some(last) = expected.last_mut() {
                *last = self.weight.size()[0];
            }
            if residual.size() != expected {
                return Err(EmbedError::Torch(tch::TchError::Shape(format!(
                    "residual of shape {:?} added to a linear output of shape {expected:?}",
                    residual.size()
                ))));
            }
        }
        linear_then(xs, &self.weight, self.bias.as_ref(), epilogue)
    }

    /// One layer computing all of `layers` side by side (outputs concatenated).
    pub fn fuse(layers: &[Linear]) -> Result<Linear, EmbedError> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.bias.as_ref()).collect();
        Ok(Linear { weight: Tensor::f_cat(&weights, 0)?, bias: biases.map(|b| Tensor::f_cat(&b, 0)).transpose()? })
    }
}

/// `x Wᵀ + b` over the last dimension of `xs`, through oneDNN on the CPU (see
/// `backend::onednn` for why) and `aten::linear` elsewhere.
pub fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, EmbedError> {
    linear_then(xs, weight, bias, Epilogue::None)
}

/// [`linear`] followed by `epilogue`: fused into the product by oneDNN, or as
/// separate aten operators where oneDNN does not run.
fn linear_then(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue<'_>,
) -> Result<Tensor, EmbedError> {
    if onednn::supports(xs) {
        return onednn::linear(xs, weight, bias, epilogue);
    }
    let ys = xs.f_linear(weight, bias)?;
    match epilogue {
        Epilogue::None => Ok(ys),
        Epilogue::Pointwise(pointwise) => Ok(match pointwise {
            Pointwise::Gelu => ys.f_gelu("none")?,
            Pointwise::GeluTanh => ys.f_gelu("tanh")?,
            Pointwise::Relu => ys.f_relu()?,
            Pointwise::Silu => ys.f_silu()?,
        }),
        Epilogue::Add(residual) => Ok(ys.f_add(residual)?),
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        let diff = a.f_sub(b).unwrap().abs().max().double_value(&[]);
        diff / b.abs().max().double_value(&[])
    }

    #[test]
    fn onednn_linear_matches_aten_linear() {
        tch::manual_seed(3);
        let options = (Kind::Float, Device::Cpu);
        let (weight, bias) = (Tensor::randn([24, 40], options), Tensor::randn([24], options));
        for shape in [vec![5, 40], vec![3, 7, 40], vec![1, 1, 40]] {
            let xs = Tensor::randn(shape.as_slice(), options);
            for b in [Some(&bias), None] {
                let ours = linear(&xs, &weight, b).unwrap();
                let theirs = xs.linear(&weight, b);
                assert_eq!(ours.size(), theirs.size());
                assert!(close(&ours, &theirs) < 1e-5, "{shape:?}: {}", close(&ours, &theirs));
            }
        }
        // A transposed (non-contiguous) input is made contiguous first, not misread.
        let xs = Tensor::randn([40, 6], options).tr();
        assert!(close(&linear(&xs, &weight, Some(&bias)).unwrap(), &xs.linear(&weight, Some(&bias))) < 1e-5);
    }

    #[test]
    fn fused_epilogues_match_separate_ops() {
        tch::manual_seed(4);
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            let options = (kind, Device::Cpu);
            let layer = Linear { weight: Tensor::randn([24, 40], options), bias: Some(Tensor::randn([24], options)) };
            let xs = Tensor::randn([3, 5, 40], options);
            let residual = Tensor::randn([3, 5, 24], options);
            let plain = xs
                .to_kind(Kind::Float)
                .linear(&layer.weight.to_kind(Kind::Float), layer.bias.as_ref().map(|b| b.to_kind(Kind::Float)));
            // bf16 and f16 outputs are rounded to 8 or 11 significant bits.
            let tolerance = if kind == Kind::Float { 1e-5 } else { 1e-2 };
            for activation in [Activation::Gelu, Activation::GeluTanh, Activation::Relu, Activation::Silu] {
                let ours = layer.forward_activated(&xs, activation).unwrap();
                assert_eq!(ours.kind(), kind);
                let expected = activation.forward(&plain).unwrap();
                assert!(close(&ours.to_kind(Kind::Float), &expected) < tolerance, "{kind:?} {activation:?}");
            }
            let ours = layer.forward_plus(&xs, &residual).unwrap();
            assert!(
                close(&ours.to_kind(Kind::Float), &plain.f_add(&residual.to_kind(Kind::Float)).unwrap()) < tolerance,
                "{kind:?} add"
            );
        }
    }

    #[test]
    fn cpu_f32_takes_onednn_and_f16_does_not() {
        // bf16 depends on the CPU (AVX-512 or AVX-NE-CONVERT); either answer is
        // right there, and `fused_epilogues_match_separate_ops` checks both routes.
        assert!(onednn::supports(&Tensor::ones([2, 8], (Kind::Float, Device::Cpu))));
        assert!(!onednn::supports(&Tensor::ones([2, 8], (Kind::Half, Device::Cpu))));
    }

    #[test]
    fn a_residual_of_the_wrong_shape_is_an_error_not_a_silent_broadcast() {
        let options = (Kind::Float, Device::Cpu);
        let layer = Linear { weight: Tensor::ones([24, 40], options), bias: None };
        let xs = Tensor::ones([3, 40], options);
        for wrong in [[3, 12], [3, 48], [1, 24]] {
            assert!(layer.forward_plus(&xs, &Tensor::ones(wrong, options)).is_err(), "{wrong:?}");
        }
        let sum = layer.forward_plus(&xs, &Tensor::ones([3, 24], options)).unwrap();
        assert_eq!(sum.size(), [3, 24]);
        assert_eq!(sum.double_value(&[2, 23]), 41.0);
    }
}
