//! Architectures, one file each, chosen once from `config.json`.

pub mod bert;

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::pipeline::read_json;
use crate::weights::{Scope, Weights};
use crate::{EmbedError, Encoder};

/// `model_type` values this crate can load.
pub const SUPPORTED: &[&str] = &["bert"];

/// Reads `config.json`, picks the architecture and loads its weights.
pub fn load_encoder(dir: &Path, kind: Kind, device: Device) -> Result<Box<dyn Encoder>, EmbedError> {
    let config_path = dir.join("config.json");
    let header: Header = read_json(&config_path)?;
    let model_type =
        header.model_type.or_else(|| header.architectures.and_then(|a| a.into_iter().next())).unwrap_or_default();
    match model_type.to_ascii_lowercase().as_str() {
        "bert" | "bertmodel" => {
            let config: bert::Config = read_json(&config_path)?;
            let mut weights = Weights::load(dir, kind, device)?;
            let model = bert::BertModel::load(&mut weights, &config, &config_path)?;
            weights.finish()?;
            Ok(Box::new(model))
        }
        _ => Err(EmbedError::UnsupportedArchitecture { path: config_path, found: model_type, supported: SUPPORTED }),
    }
}

#[derive(Deserialize)]
struct Header {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
}

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
}

impl Activation {
    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        Ok(match self {
            Activation::Gelu => xs.f_gelu("none")?,
            Activation::GeluTanh => xs.f_gelu("tanh")?,
            Activation::Relu => xs.f_relu()?,
            Activation::Silu => xs.f_silu()?,
        })
    }
}

/// `y = x Wᵀ + b`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `weight` `[out, in]` and `bias` `[out]` from `w`.
    pub fn load(w: &Scope<'_>, in_dim: i64, out_dim: i64) -> Self {
        Linear { weight: w.get("weight", &[out_dim, in_dim]), bias: Some(w.get("bias", &[out_dim])) }
    }

    /// Applies the layer.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        Ok(xs.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

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

    /// Applies the layer.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EmbedError> {
        Ok(xs.f_layer_norm([self.size], Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}
