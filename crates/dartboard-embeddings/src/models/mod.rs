//! Architectures, one file each, chosen once from `config.json`.

mod attention;
pub mod bert;
pub mod mpnet;
pub mod xlm_roberta;

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::pipeline::read_json;
use crate::weights::{Scope, Weights};
use crate::{EmbedError, Encoder};

pub(crate) use attention::AttentionMask;

/// `model_type` values this crate can load.
pub const SUPPORTED: &[&str] = &["bert", "mpnet", "xlm-roberta", "roberta"];

type BuildFn<'a> = dyn Fn(&mut Weights) -> Result<Box<dyn Encoder>, EmbedError> + 'a;

/// Reads `config.json`, picks the architecture and loads its weights.
pub fn load_encoder(dir: &Path, kind: Kind, device: Device) -> Result<Box<dyn Encoder>, EmbedError> {
    let config_path = dir.join("config.json");
    let header: Header = read_json(&config_path)?;
    let model_type =
        header.model_type.or_else(|| header.architectures.and_then(|a| a.into_iter().next())).unwrap_or_default();
    // Every architecture: load the checkpoint, build the model from it, and refuse
    // it if any tensor the model asked for was missing or misshapen.
    let build = |f: &BuildFn<'_>| {
        let mut weights = Weights::load(dir, kind, device)?;
        let model = f(&mut weights)?;
        weights.finish()?;
        Ok::<_, EmbedError>(model)
    };
    let encoder = match model_type.to_ascii_lowercase().replace('_', "-").as_str() {
        "bert" | "bertmodel" => {
            let config: bert::Config = read_json(&config_path)?;
            build(&|w| Ok(Box::new(bert::BertModel::load(w, &config, &config_path)?)))?
        }
        "xlm-roberta" | "roberta" | "xlmrobertamodel" | "robertamodel" => {
            let config: bert::Config = read_json(&config_path)?;
            build(&|w| Ok(Box::new(xlm_roberta::load(w, &config, &config_path)?)))?
        }
        "mpnet" | "mpnetmodel" => {
            let config: mpnet::Config = read_json(&config_path)?;
            build(&|w| Ok(Box::new(mpnet::MPNetModel::load(w, &config, &config_path)?)))?
        }
        _ => {
            return Err(EmbedError::UnsupportedArchitecture {
                path: config_path,
                found: model_type,
                supported: SUPPORTED,
            })
        }
    };
    Ok(encoder)
}

/// Rejects sizes a model could not have before any tensor is allocated from them:
/// a negative width or a billion layers in a hostile config.json must be an error,
/// not a panic or an out-of-memory.
pub(crate) fn check_sizes(config_path: &Path, sizes: &[(&str, i64)], layers: usize) -> Result<(), EmbedError> {
    const MAX_LAYERS: usize = 256;
    const MAX_SIZE: i64 = 1 << 24;
    if let Some((name, value)) = sizes.iter().find(|(_, v)| !(1..=MAX_SIZE).contains(v)) {
        return Err(EmbedError::InvalidFile {
            path: config_path.to_path_buf(),
            reason: format!("{name} is {value}; it must be between 1 and {MAX_SIZE}"),
        });
    }
    if layers == 0 || layers > MAX_LAYERS {
        return Err(EmbedError::InvalidFile {
            path: config_path.to_path_buf(),
            reason: format!("num_hidden_layers is {layers}; it must be between 1 and {MAX_LAYERS}"),
        });
    }
    Ok(())
}

/// fairseq's `make_positions`: real tokens are numbered from `pad + 1`, padding
/// keeps `pad` (transformers' `create_position_ids_from_input_ids`).
pub(crate) fn positions_after_padding(input_ids: &Tensor, pad: i64) -> Result<Tensor, EmbedError> {
    let mask = input_ids.f_ne(pad)?.f_to_kind(Kind::Int64)?;
    Ok(mask.f_cumsum(1, Kind::Int64)?.f_mul(&mask)?.f_add_scalar(pad)?)
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
        linear(xs, &self.weight, self.bias.as_ref())
    }

    /// One layer computing all of `layers` side by side (outputs concatenated).
    pub fn fuse(layers: &[Linear]) -> Linear {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.bias.as_ref()).collect();
        Linear { weight: Tensor::cat(&weights, 0), bias: biases.map(|b| Tensor::cat(&b, 0)) }
    }
}

/// `x Wᵀ + b` over the last dimension of `xs`, through the fastest CPU kernel
/// libtorch has for the precision.
///
/// libtorch sends f32 `linear` to MKL, and MKL runs its AVX2 code on AMD CPUs: on
/// the Zen 5 machine this project is measured on, 200–217 GFLOP/s for the model's
/// shapes. oneDNN, also inside libtorch, uses AVX-512 there and runs the same
/// products at 410–470 GFLOP/s. tch exposes no oneDNN matrix product for ordinary
/// tensors, but it does expose `mkldnn_convolution`, and a 1×1 convolution over a
/// channels-last `[1, in, rows, 1]` view of `xs` is exactly this product (same
/// f32 arithmetic, summed in a different order: results agree to ~1e-6 relative).
/// bf16 and f16 already reach oneDNN through `linear`, and CUDA has cuBLAS.
pub fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, EmbedError> {
    let (out_dim, in_dim) = weight.size2()?;
    let mut shape = xs.size();
    let rows = shape.iter().rev().skip(1).product::<i64>();
    if xs.kind() != Kind::Float || xs.device() != Device::Cpu || rows == 0 || shape.last() != Some(&in_dim) {
        return Ok(xs.f_linear(weight, bias)?);
    }
    let xs = xs.f_contiguous()?;
    let image = xs.f_as_strided([1, in_dim, rows, 1], [rows * in_dim, 1, in_dim, in_dim], None)?;
    let kernel = weight.f_view([out_dim, in_dim, 1, 1])?;
    let out = image.f_mkldnn_convolution(&kernel, bias, [0, 0], [1, 1], [1, 1], 1)?;
    *shape.last_mut().expect("checked above") = out_dim;
    Ok(out.f_permute([0, 2, 3, 1])?.f_reshape(shape)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        let diff = a.f_sub(b).unwrap().abs().max().double_value(&[]);
        diff / b.abs().max().double_value(&[])
    }

    #[test]
    fn onednn_linear_matches_libtorch_linear() {
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
    fn other_precisions_use_libtorch_linear() {
        let options = (Kind::BFloat16, Device::Cpu);
        let (xs, weight) = (Tensor::ones([2, 8], options), Tensor::ones([3, 8], options));
        let out = linear(&xs, &weight, None).unwrap();
        assert_eq!(out.kind(), Kind::BFloat16);
        assert_eq!(Vec::<f32>::try_from(out.to_kind(Kind::Float).view(-1)).unwrap(), vec![8.0; 6]);
    }
}
