//! Activation functions, as transformers names them in a config's `hidden_act`.

use serde::Deserialize;
use tch::Tensor;

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
