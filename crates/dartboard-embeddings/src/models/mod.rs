//! Architectures, one file each, chosen once from `config.json`.

mod attention;
pub mod bert;
pub mod mpnet;
pub mod xlm_roberta;

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::onednn::{self, Epilogue};
use crate::pipeline::read_json;
use crate::weights::{Scope, Weights};
use crate::{kernels, EmbedError, Encoder};

pub(crate) use attention::AttentionMask;

/// `model_type` values this crate can load.
pub const SUPPORTED: &[&str] = &["bert", "mpnet", "xlm-roberta", "roberta"];

/// Architectures popular among embedding models that exist only as Python code in
/// the model's repository (`trust_remote_code`): nomic-embed (`nomic_bert`),
/// Alibaba's GTE v1.5 (`new`), jina-embeddings v2 (`jina_bert`).
const REMOTE_CODE: &[&str] = &["nomic-bert", "nomicbertmodel", "new", "newmodel", "jina-bert", "jinabertmodel"];

/// Reads `config.json`, picks the architecture and loads its weights.
pub fn load_encoder(dir: &Path, kind: Kind, device: Device) -> Result<Box<dyn Encoder>, EmbedError> {
    let config_path = dir.join("config.json");
    let header: Header = read_json(&config_path)?;
    let Some(model_type) =
        header.model_type.or_else(|| header.architectures.and_then(|a| a.into_iter().next())).filter(|t| !t.is_empty())
    else {
        return Err(EmbedError::MissingModelType { path: config_path, supported: SUPPORTED });
    };
    // Every architecture: the checkpoint's headers are checked against the shapes the
    // model asks for before anything is read (see `Weights::build`).
    let weights = || Weights::load(dir, kind, device);
    let encoder: Box<dyn Encoder> = match model_type.to_ascii_lowercase().replace('_', "-").as_str() {
        "bert" | "bertmodel" => {
            let config: bert::Config = read_json(&config_path)?;
            Box::new(weights()?.build(|w| bert::BertModel::load(w, &config, &config_path))?)
        }
        "xlm-roberta" | "roberta" | "xlmrobertamodel" | "robertamodel" => {
            let config: bert::Config = read_json(&config_path)?;
            Box::new(weights()?.build(|w| xlm_roberta::load(w, &config, &config_path))?)
        }
        "mpnet" | "mpnetmodel" => {
            let config: mpnet::Config = read_json(&config_path)?;
            Box::new(weights()?.build(|w| mpnet::MPNetModel::load(w, &config, &config_path))?)
        }
        other if REMOTE_CODE.contains(&other) || header.auto_map.is_some() => {
            return Err(EmbedError::RemoteCodeArchitecture {
                path: config_path,
                found: model_type,
                supported: SUPPORTED,
            })
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
/// not a panic or an out-of-memory. `hidden_and_heads` is `(hidden_size,
/// num_attention_heads)`, which must also divide evenly into heads. Sizes that are
/// plausible but disagree with the checkpoint are caught by `Weights::build`.
pub(crate) fn check_sizes(
    config_path: &Path,
    sizes: &[(&str, i64)],
    layers: usize,
    (hidden, heads): (i64, i64),
) -> Result<(), EmbedError> {
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
    if heads < 1 || hidden % heads != 0 {
        return Err(EmbedError::InvalidFile {
            path: config_path.to_path_buf(),
            reason: format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}; each head must get an equal share"
            ),
        });
    }
    Ok(())
}

/// Rejects a LayerNorm epsilon that is not a positive finite number: with 0 or a
/// negative one, `1 / sqrt(variance + eps)` turns constant rows into inf or NaN,
/// and the model would return vectors of NaN without any error.
pub(crate) fn check_eps(config_path: &Path, name: &str, eps: f64) -> Result<(), EmbedError> {
    if eps > 0.0 && eps.is_finite() {
        return Ok(());
    }
    Err(EmbedError::InvalidFile {
        path: config_path.to_path_buf(),
        reason: format!("{name} is {eps}; it must be a positive finite number (released models use 1e-12 or 1e-5)"),
    })
}

/// Fails with [`EmbedError::InputOutOfRange`] when any id in `checks` (`(what,
/// ids, config key, limit)`) is negative or not below its limit, where libtorch's
/// embedding lookup would throw an index error. One device round trip whatever the
/// number of checks, and only when one fails a second to say which id.
pub(crate) fn check_ids(config_path: &Path, checks: &[(&str, &Tensor, &str, i64)]) -> Result<(), EmbedError> {
    let mut any_bad: Option<Tensor> = None;
    for (_, ids, _, limit) in checks {
        let bad = ids.f_lt(0)?.f_logical_or(&ids.f_ge(*limit)?)?.f_any()?;
        any_bad = Some(match any_bad {
            Some(acc) => acc.f_logical_or(&bad)?,
            None => bad,
        });
    }
    if any_bad.map(|b| b.f_int64_value(&[])).transpose()?.unwrap_or(0) == 0 {
        return Ok(());
    }
    for (what, ids, key, limit) in checks {
        if ids.numel() == 0 {
            continue;
        }
        let (low, high) = (ids.f_min()?.f_int64_value(&[])?, ids.f_max()?.f_int64_value(&[])?);
        if low < 0 || high >= *limit {
            let value = if low < 0 { low } else { high };
            return Err(EmbedError::InputOutOfRange {
                config: config_path.to_path_buf(),
                tokenizer: config_path.with_file_name("tokenizer.json"),
                detail: format!("{what} {value} is not between 0 and {key} - 1 = {}", limit - 1),
                fix:
                    "use the tokenizer that came with these weights (or the config.json that came with this tokenizer)",
            });
        }
    }
    Ok(())
}

/// Fails when a sequence of `len` tokens needs more positions than the table has.
pub(crate) fn check_positions(config_path: &Path, len: i64, max_positions: i64) -> Result<(), EmbedError> {
    if len <= max_positions {
        return Ok(());
    }
    Err(EmbedError::InputOutOfRange {
        config: config_path.to_path_buf(),
        tokenizer: config_path.with_file_name("tokenizer.json"),
        detail: format!("a sequence of {len} tokens needs more than the {max_positions} positions"),
        fix: "lower max_seq_length (sentence_bert_config.json) or the tokenizer's model_max_length to at most that",
    })
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
    /// Present when the model's architecture is Python code in its repository.
    auto_map: Option<serde_json::Value>,
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
        self.forward_then(xs, Epilogue::None)
    }

    /// `activation(x Wᵀ + b)`, in one kernel where the CPU allows.
    pub fn forward_activated(&self, xs: &Tensor, activation: Activation) -> Result<Tensor, EmbedError> {
        self.forward_then(xs, Epilogue::Activation(activation))
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
/// [`crate::onednn`] for why) and `aten::linear` elsewhere.
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
        Epilogue::Activation(activation) => activation.forward(&ys),
        Epilogue::Add(residual) => Ok(ys.f_add(residual)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        let diff = a.f_sub(b).unwrap().abs().max().double_value(&[]);
        diff / b.abs().max().double_value(&[])
    }

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
    fn sizes_that_cannot_split_into_heads_are_refused() {
        let path = Path::new("config.json");
        let sizes = [("hidden_size", 384)];
        assert!(check_sizes(path, &sizes, 6, (384, 12)).is_ok());
        let err = check_sizes(path, &sizes, 6, (384, 5)).unwrap_err().to_string();
        assert!(err.contains("not a multiple of num_attention_heads 5"), "{err}");
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
