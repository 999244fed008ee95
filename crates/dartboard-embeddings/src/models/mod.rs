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

/// Tiny models written in the test itself: `config.json` plus weights of the shapes
/// it describes, in any of the checkpoint layouts `Weights` reads.
#[cfg(test)]
mod model_files {
    use std::path::Path;

    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use crate::weights::test_files::{write_index, write_safetensors, write_torch_zip, View};

    pub fn bert_config(model_type: &str) -> Value {
        json!({
            "model_type": model_type, "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 16, "type_vocab_size": 2, "pad_token_id": 1,
            "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1
        })
    }

    pub fn mpnet_config() -> Value {
        json!({
            "model_type": "mpnet", "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 16, "layer_norm_eps": 1e-5, "relative_attention_num_buckets": 32
        })
    }

    /// Named random tensors with the shapes `config` describes.
    pub fn tensors(config: &Value) -> Vec<(String, Tensor)> {
        let n = |k: &str| config[k].as_i64().unwrap();
        let (h, i) = (n("hidden_size"), n("intermediate_size"));
        let mpnet = config["model_type"] == "mpnet";
        let mut shapes: Vec<(String, Vec<i64>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![n("vocab_size"), h]),
            ("embeddings.position_embeddings.weight".into(), vec![n("max_position_embeddings"), h]),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        if mpnet {
            let heads = n("num_attention_heads");
            shapes.push(("encoder.relative_attention_bias.weight".into(), vec![32, heads]));
        } else {
            shapes.push(("embeddings.token_type_embeddings.weight".into(), vec![n("type_vocab_size"), h]));
        }
        let linear = |name: String, out: i64, inp: i64| {
            vec![(format!("{name}.weight"), vec![out, inp]), (format!("{name}.bias"), vec![out])]
        };
        let norm = |name: String| vec![(format!("{name}.weight"), vec![h]), (format!("{name}.bias"), vec![h])];
        for l in 0..n("num_hidden_layers") {
            let p = format!("encoder.layer.{l}");
            if mpnet {
                for x in ["q", "k", "v", "o"] {
                    shapes.extend(linear(format!("{p}.attention.attn.{x}"), h, h));
                }
                shapes.extend(norm(format!("{p}.attention.LayerNorm")));
            } else {
                for x in ["query", "key", "value"] {
                    shapes.extend(linear(format!("{p}.attention.self.{x}"), h, h));
                }
                shapes.extend(linear(format!("{p}.attention.output.dense"), h, h));
                shapes.extend(norm(format!("{p}.attention.output.LayerNorm")));
            }
            shapes.extend(linear(format!("{p}.intermediate.dense"), i, h));
            shapes.extend(linear(format!("{p}.output.dense"), h, i));
            shapes.extend(norm(format!("{p}.output.LayerNorm")));
        }
        tch::manual_seed(11);
        shapes.into_iter().map(|(name, shape)| (name, Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.5)).collect()
    }

    /// How the weights are stored.
    #[derive(Debug, Clone, Copy)]
    pub enum Layout {
        Safetensors,
        ShardedSafetensors,
        TorchZip,
        ShardedTorchZip,
    }

    /// Writes `config` and `weights` into `dir` in `layout`.
    pub fn write_model(dir: &Path, config: &Value, weights: &[(String, Tensor)], layout: Layout) {
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let named: Vec<(&str, Tensor)> = weights.iter().map(|(n, t)| (n.as_str(), t.copy())).collect();
        let views = |part: &[(&str, Tensor)]| part.iter().map(|(n, t)| View::of(n, t)).collect::<Vec<_>>();
        let half = named.len() / 2;
        let (first, second) = named.split_at(half);
        fn names<'a>(part: &[(&'a str, Tensor)]) -> Vec<&'a str> {
            part.iter().map(|(n, _)| *n).collect()
        }
        match layout {
            Layout::Safetensors => write_safetensors(&dir.join("model.safetensors"), &named),
            Layout::TorchZip => write_torch_zip(&dir.join("pytorch_model.bin"), &views(&named)),
            Layout::ShardedSafetensors => {
                let files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
                write_safetensors(&dir.join(files[0]), first);
                write_safetensors(&dir.join(files[1]), second);
                write_index(
                    &dir.join("model.safetensors.index.json"),
                    &[(files[0], &names(first)), (files[1], &names(second))],
                );
            }
            Layout::ShardedTorchZip => {
                let files = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"];
                write_torch_zip(&dir.join(files[0]), &views(first));
                write_torch_zip(&dir.join(files[1]), &views(second));
                write_index(
                    &dir.join("pytorch_model.bin.index.json"),
                    &[(files[0], &names(first)), (files[1], &names(second))],
                );
            }
        }
    }
}

#[cfg(test)]
mod validation_tests {
    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use super::model_files::{bert_config, mpnet_config, tensors, write_model, Layout};
    use super::*;
    use crate::EncoderInput;

    /// Loads a model whose config is `config` with the weights of `weights_of`.
    fn load_with(config: &Value, weights_of: &Value) -> Result<Box<dyn Encoder>, EmbedError> {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), config, &tensors(weights_of), Layout::Safetensors);
        load_encoder(dir.path(), Kind::Float, Device::Cpu)
    }

    fn with(mut config: Value, key: &str, value: Value) -> Value {
        config[key] = value;
        config
    }

    fn error(result: Result<Box<dyn Encoder>, EmbedError>) -> String {
        result.err().expect("loading must fail").to_string()
    }

    fn input(ids: &[i64], types: &[i64]) -> EncoderInput {
        let n = ids.len() as i64;
        EncoderInput {
            input_ids: Tensor::from_slice(ids).view([1, n]),
            attention_mask: Tensor::ones([1, n], (Kind::Int64, Device::Cpu)),
            token_type_ids: Tensor::from_slice(types).view([1, n]),
        }
    }

    #[test]
    fn config_sizes_the_weights_do_not_have_are_refused_before_any_allocation() {
        let base = bert_config("bert");
        // 2^48 floats for the word embeddings alone: libtorch cannot allocate that.
        let huge = with(
            with(with(base.clone(), "vocab_size", json!(1 << 24)), "hidden_size", json!(1 << 24)),
            "num_attention_heads",
            json!(1),
        );
        let err = error(load_with(&huge, &base));
        assert!(
            err.contains("embeddings.word_embeddings.weight: expected [16777216, 16777216], found [20, 8]"),
            "{err}"
        );
        // Sizes a model could have, that these weights do not: up to 2 TB of stand-ins before.
        for (key, value, expected) in [
            (
                "intermediate_size",
                json!(16_000_000),
                "encoder.layer.0.intermediate.dense.weight: expected [16000000, 8], found [16, 8]",
            ),
            (
                "vocab_size",
                json!(16_000_000),
                "embeddings.word_embeddings.weight: expected [16000000, 8], found [20, 8]",
            ),
            (
                "max_position_embeddings",
                json!(16_000_000),
                "embeddings.position_embeddings.weight: expected [16000000, 8], found [16, 8]",
            ),
        ] {
            let err = error(load_with(&with(base.clone(), key, value), &base));
            assert!(err.contains(expected) && err.contains("model.safetensors"), "{key}: {err}");
        }
        let deep = with(with(base.clone(), "num_hidden_layers", json!(256)), "intermediate_size", json!(1 << 20));
        let err = error(load_with(&deep, &base));
        assert!(
            err.contains("missing tensors (")
                && err.contains("encoder.layer.2.attention.self.query.weight (expected [8, 8])"),
            "{err}"
        );
    }

    #[test]
    fn every_checkpoint_layout_gives_the_same_model() {
        for config in [bert_config("bert"), bert_config("xlm-roberta"), mpnet_config()] {
            let weights = tensors(&config);
            let ids = [0i64, 5, 7, 19, 3];
            let mut outputs = Vec::new();
            for layout in [Layout::Safetensors, Layout::ShardedSafetensors, Layout::TorchZip, Layout::ShardedTorchZip] {
                let dir = tempfile::tempdir().unwrap();
                write_model(dir.path(), &config, &weights, layout);
                let encoder = load_encoder(dir.path(), Kind::Float, Device::Cpu)
                    .unwrap_or_else(|e| panic!("{} {layout:?}: {e}", config["model_type"]));
                outputs.push(encoder.forward(&input(&ids, &[0; 5])).unwrap());
            }
            assert_eq!(outputs[0].size(), [1, 5, 8]);
            for (layout, output) in outputs.iter().enumerate() {
                assert!(output.f_equal(&outputs[0]).unwrap(), "{} layout {layout}", config["model_type"]);
            }
        }
    }

    #[test]
    fn layer_norm_eps_must_be_a_positive_finite_number() {
        for config in [bert_config("bert"), bert_config("roberta"), mpnet_config()] {
            for eps in [json!(-1), json!(0), json!(0.0)] {
                let err = error(load_with(&with(config.clone(), "layer_norm_eps", eps.clone()), &config));
                assert!(err.contains("config.json is invalid: layer_norm_eps is"), "{eps}: {err}");
                assert!(err.contains("it must be a positive finite number"), "{err}");
            }
        }
    }

    #[test]
    fn other_config_values_outside_what_the_model_can_use_are_refused() {
        let mpnet = mpnet_config();
        let err = error(load_with(&with(mpnet.clone(), "relative_attention_num_buckets", json!(16)), &mpnet));
        assert!(err.contains("relative_attention_num_buckets is 16; it must be at least 32"), "{err}");
        let roberta = bert_config("xlm-roberta");
        let err = error(load_with(&with(roberta.clone(), "pad_token_id", json!(-1)), &roberta));
        assert!(err.contains("pad_token_id is -1; it must be 0 or more"), "{err}");
        let bert = bert_config("bert");
        let err = error(load_with(&with(bert.clone(), "num_attention_heads", json!(3)), &bert));
        assert!(err.contains("hidden_size 8 is not a multiple of num_attention_heads 3"), "{err}");
        let err = error(load_with(&with(bert.clone(), "type_vocab_size", json!(0)), &bert));
        assert!(err.contains("type_vocab_size is 0; it must be between 1 and"), "{err}");
    }

    #[test]
    fn limits_come_from_the_config() {
        let limits = |config: Value| load_with(&config, &config).unwrap().limits();
        let bert = limits(bert_config("bert"));
        assert_eq!(bert, crate::encoder::EncoderLimits { vocab_size: 20, type_vocab_size: Some(2), max_positions: 16 });
        // Positions after the padding id 1: 16 - 2 usable.
        assert_eq!(limits(bert_config("xlm-roberta")).max_positions, 14);
        let mpnet = limits(mpnet_config());
        assert_eq!((mpnet.type_vocab_size, mpnet.max_positions), (None, 14));
    }

    #[test]
    fn ids_outside_the_embedding_tables_are_errors_naming_config_and_tokenizer() {
        for config in [bert_config("bert"), bert_config("xlm-roberta"), mpnet_config()] {
            let encoder = load_with(&config, &config).unwrap();
            let max = encoder.limits().max_positions;
            assert!(encoder.forward(&input(&vec![2; max], &vec![0; max])).is_ok());
            let mut cases = vec![
                (input(&[2, 20, 3], &[0; 3]), "token id 20 is not between 0 and vocab_size - 1 = 19"),
                (input(&[2, -1, 3], &[0; 3]), "token id -1 is not between 0"),
                (input(&vec![2; max + 1], &vec![0; max + 1]), "needs more than the"),
            ];
            if config["model_type"] != "mpnet" {
                cases.push((
                    input(&[2, 3, 4], &[0, 1, 2]),
                    "token type id 2 is not between 0 and type_vocab_size - 1 = 1",
                ));
            }
            for (input, expected) in cases {
                let err = encoder.forward(&input).unwrap_err().to_string();
                assert!(err.contains(expected), "{}: {err}", config["model_type"]);
                assert!(err.contains("config.json") && err.contains("tokenizer.json"), "{err}");
                assert!(!err.contains("index out of range") && !err.contains("libtorch"), "{err}");
            }
        }
    }

    #[test]
    fn configs_without_a_type_or_of_remote_code_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = bert_config("bert");
        config.as_object_mut().unwrap().remove("model_type");
        write_model(dir.path(), &config, &tensors(&bert_config("bert")), Layout::Safetensors);
        let err = error(load_encoder(dir.path(), Kind::Float, Device::Cpu));
        assert!(err.contains("config.json has no model_type"), "{err}");
        assert!(err.contains("bert, mpnet, xlm-roberta, roberta") && !err.contains("\"\""), "{err}");
        for (key, value) in [("model_type", "nomic_bert"), ("model_type", "new"), ("model_type", "jina_bert")] {
            std::fs::write(dir.path().join("config.json"), json!({ key: value }).to_string()).unwrap();
            let err = error(load_encoder(dir.path(), Kind::Float, Device::Cpu));
            assert!(err.contains(&format!("{value:?} model")) && err.contains("trust_remote_code"), "{err}");
            assert!(err.contains("out of scope"), "{err}");
        }
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
        let err = error(load_encoder(dir.path(), Kind::Float, Device::Cpu));
        assert!(err.contains("\"t5\" model, which is not supported"), "{err}");
    }
}
