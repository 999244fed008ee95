//! Activation functions, as transformers names them in a config's `hidden_act`,
//! alone or gating a second projection (SwiGLU, GeGLU).

use serde::Deserialize;
use tch::Tensor;

use crate::backend::kernels::{self, Gate};
use crate::backend::onednn::Pointwise;
use crate::error::EmbedError;

/// Activation functions as transformers names them in `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// Exact GELU (erf).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU, tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
    /// SiLU / swish.
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    /// tanh, as classification heads (BERT's pooler, RoBERTa's head) use it.
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        Ok(match self {
            Activation::Gelu => xs.f_gelu("none")?,
            Activation::GeluTanh => xs.f_gelu("tanh")?,
            Activation::Relu => xs.f_relu()?,
            Activation::Silu => xs.f_silu()?,
            Activation::Tanh => xs.f_tanh()?,
        })
    }

    /// A gated unit over a fused projection `both` `[..., 2n]`: the activation of
    /// the first half times the second, `[..., n]` (Qwen3's SwiGLU, Gemma's GeGLU:
    /// `act(gate(x)) · up(x)`). In the model's precision the activation is rounded
    /// before the product, as transformers computes it. One pass of our kernel on
    /// AVX-512 CPUs for SiLU and GELU-tanh, else aten's operators.
    pub fn forward_gated(self, both: &Tensor) -> Result<Tensor, EmbedError> {
        let gate = match self {
            Activation::Silu => Some(Gate::Silu),
            Activation::GeluTanh => Some(Gate::GeluTanh),
            Activation::Gelu | Activation::Relu | Activation::Tanh => None,
        };
        let width = both.size().last().copied().unwrap_or(0);
        if width % 2 != 0 {
            return Err(EmbedError::Torch(tch::TchError::Torch(format!(
                "a gated activation needs the gate and up projections side by side (an even width), not {width} values"
            ))));
        }
        match gate {
            Some(gate) if kernels::supports_elementwise(both) => kernels::gated(both, gate),
            _ => self.forward_gated_aten(both),
        }
    }

    fn forward_gated_aten(self, both: &Tensor) -> Result<Tensor, EmbedError> {
        let half = both.size().last().copied().unwrap_or(0) / 2;
        let (gate, up) = (both.f_narrow(-1, 0, half)?, both.f_narrow(-1, half, half)?);
        Ok(self.forward(&gate)?.f_mul(&up)?)
    }

    /// The same function fused into a oneDNN linear layer, where oneDNN has it.
    pub(crate) fn fusable(self) -> Option<Pointwise> {
        match self {
            Activation::Gelu => Some(Pointwise::Gelu),
            Activation::GeluTanh => Some(Pointwise::GeluTanh),
            Activation::Relu => Some(Pointwise::Relu),
            Activation::Silu => Some(Pointwise::Silu),
            Activation::Tanh => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn gated_kernel_matches_aten_in_every_precision() {
        if !kernels::available() {
            eprintln!("skipping: this CPU lacks AVX-512, so gated activations are aten's");
            return;
        }
        tch::manual_seed(11);
        for activation in [Activation::Silu, Activation::GeluTanh] {
            for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
                // (values that differ, values) over every width of this case.
                let (mut differ, mut total) = (0i64, 0i64);
                // Widths below, at and between multiples of 16, and Qwen3-0.6B's.
                for inner in [1i64, 5, 16, 37, 3072] {
                    // Projection outputs, spread wide enough to reach both tails.
                    let both = (Tensor::randn([3, 5, 2 * inner], (Kind::Float, Device::Cpu)) * 4.0).to_kind(kind);
                    let ours = activation.forward_gated(&both).unwrap();
                    let theirs = activation.forward_gated_aten(&both).unwrap();
                    assert_eq!((ours.size(), ours.kind()), (theirs.size(), theirs.kind()));
                    let (ours, theirs) = (ours.to_kind(Kind::Double), theirs.to_kind(Kind::Double));
                    let gap = (&ours - &theirs).abs();
                    let case = format!("{activation:?} {kind:?} n={inner}");
                    // Both compute in f32 with exponentials within about an ulp.
                    // aten's GELU-tanh takes 1 + tanh(z), which loses relative
                    // precision (not absolute: ~1e-7 · |g|) where tanh(z) → -1, so
                    // part of the bound is relative to the gate's size; the rest is
                    // 1e-6 of the value in f32, and in bf16 and f16 the same roundings
                    // as aten's, so equal but where the last f32 bit of an
                    // exponential tips one (two roundings: one unit of each).
                    let gate = both.narrow(-1, 0, inner).to_kind(Kind::Double).abs();
                    let up = both.narrow(-1, inner, inner).to_kind(Kind::Double).abs();
                    let relative = match kind {
                        Kind::Float => 1e-6,
                        Kind::BFloat16 => 2.0 * 2f64.powi(-7),
                        _ => 2.0 * 2f64.powi(-10),
                    };
                    let bound = theirs.abs() * relative + gate * up * 1e-7;
                    let excess = (&gap - bound).max().double_value(&[]);
                    assert!(excess <= 0.0, "{case}: beyond tolerance by {excess}");
                    differ += gap.gt(0.0).sum(Kind::Int64).int64_value(&[]);
                    total += gap.numel() as i64;
                }
                if kind != Kind::Float {
                    let share = differ as f64 / total as f64;
                    assert!(share < 0.01, "{activation:?} {kind:?}: {share} of values differ");
                }
            }
        }
    }

    #[test]
    fn gated_units_follow_their_formula_on_every_path() {
        // Values by hand: silu(g) = g / (1 + e^-g); gelu_tanh(g) = 0.5 g (1 + tanh(√(2/π)(g + 0.044715 g³))).
        let gates = [-3.0f64, -0.5, 0.0, 0.25, 2.0];
        let ups = [2.0f64, -1.0, 5.0, 4.0, 0.5];
        let silu = |g: f64| g / (1.0 + (-g).exp());
        let gelu = |g: f64| 0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g.powi(3))).tanh());
        let row: Vec<f64> = gates.iter().chain(ups.iter()).copied().collect();
        for kind in [Kind::Float, Kind::Double] {
            // f64 is not a kernel precision: it takes aten's path.
            let both = Tensor::from_slice(&row).to_kind(kind).view([1, 10]);
            for (activation, f) in [(Activation::Silu, &silu as &dyn Fn(f64) -> f64), (Activation::GeluTanh, &gelu)] {
                let out = activation.forward_gated(&both).unwrap();
                assert_eq!((out.size(), out.kind()), (vec![1, 5], kind));
                for (i, (g, u)) in gates.iter().zip(ups).enumerate() {
                    let expected = f(*g) * u;
                    let got = out.double_value(&[0, i as i64]);
                    assert!((got - expected).abs() <= 1e-6 * expected.abs().max(1.0), "{activation:?} {kind:?} {i}");
                }
            }
        }
        // A width that does not split in two is refused, naming it.
        let odd = Tensor::zeros([2, 7], (Kind::Float, Device::Cpu));
        let err = Activation::Silu.forward_gated(&odd).unwrap_err().to_string();
        assert!(err.contains("not 7 values"), "{err}");
    }
}
