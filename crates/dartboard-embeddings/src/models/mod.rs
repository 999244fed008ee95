//! Architectures, one file each, and the registry that picks one from a model's
//! `config.json`.
//!
//! Adding an architecture is one file here plus one line in [`registry!`]: the
//! file mirrors the architecture's `config.json` as a serde `Config` beside the
//! model, builds the model from `layers/`, and implements [`Architecture`] for the
//! `Config`. The supported list and the "not supported" error come from the
//! registry. `docs/ARCHITECTURE.md` has the recipe.

pub mod bert;
pub mod deberta_v2;
pub mod distilbert;
pub mod gemma3;
pub mod modernbert;
pub mod mpnet;
pub mod qwen3;
pub mod t5;
pub mod xlm_roberta;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::encoder::Encoder;
use crate::error::EmbedError;
use crate::layers::ClassificationHead;
use crate::spec::{read_json, ModelHeader};
use crate::weights::Weights;

/// What every architecture's `Config` can build.
pub(crate) trait Architecture {
    /// The encoder, from `weights` (missing or misshapen tensors are collected
    /// there and reported together by [`Weights::build`]).
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError>;

    /// The encoder and its sequence-classification head with `labels` outputs, from
    /// a `…ForSequenceClassification` checkpoint (a cross-encoder).
    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let _ = (weights, labels);
        Err(EmbedError::NoClassificationHead { path: config_path.to_path_buf() })
    }
}

/// A cross-encoder's model: the encoder and the head on its token states.
pub(crate) struct Classifier {
    pub encoder: Box<dyn Encoder>,
    pub head: ClassificationHead,
}

/// The registry: one line per architecture, `Variant(module::Config) = ["model_type", aliases…]`.
/// It generates [`ModelConfig`], the `model_type`-tagged enum of every
/// architecture's config, and [`SUPPORTED`].
macro_rules! registry {
    ($($variant:ident($config:ty) = [$name:literal $(, $alias:literal)*];)*) => {
        /// A `config.json`, parsed as the architecture its `model_type` names.
        #[derive(Deserialize)]
        #[serde(tag = "model_type")]
        pub(crate) enum ModelConfig {
            $(
                #[serde(rename = $name $(, alias = $alias)*)]
                $variant($config),
            )*
        }

        /// `model_type` values this crate can load.
        pub const SUPPORTED: &[&str] = &[$($name, $($alias,)*)*];

        impl ModelConfig {
            fn architecture(&self) -> &dyn Architecture {
                match self {
                    $(ModelConfig::$variant(config) => config,)*
                }
            }
        }
    };
}

registry! {
    Bert(bert::Config) = ["bert"];
    XlmRoberta(xlm_roberta::Config) = ["xlm-roberta", "roberta"];
    MPNet(mpnet::Config) = ["mpnet"];
    DistilBert(distilbert::Config) = ["distilbert"];
    ModernBert(modernbert::Config) = ["modernbert"];
    DebertaV2(deberta_v2::Config) = ["deberta-v2"];
    T5(t5::Config) = ["t5"];
    Qwen3(qwen3::Config) = ["qwen3"];
    Gemma3Text(gemma3::Config) = ["gemma3_text"];
}

/// Architectures popular among embedding models that exist only as Python code in
/// the model's repository (`trust_remote_code`): nomic-embed (`nomic_bert`),
/// Alibaba's GTE v1.5 (`new`), jina-embeddings v2 (`jina_bert`). Compared by
/// [`key`].
const REMOTE_CODE: &[&str] = &["nomicbert", "new", "jinabert"];

/// A `model_type` or class name reduced to what identifies the architecture:
/// lowercase, without `-` and `_`, without a class suffix (`XLMRobertaModel`,
/// `xlm-roberta` and `xlm_roberta` all give `xlmroberta`).
fn key(name: &str) -> String {
    let mut key: String = name.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect();
    for suffix in ["forsequenceclassification", "encodermodel", "formaskedlm", "model"] {
        if let Some(stripped) = key.strip_suffix(suffix).filter(|s| !s.is_empty()) {
            key = stripped.to_owned();
            break;
        }
    }
    key
}

/// Reads `config.json` and parses it as the architecture it names.
pub(crate) fn read_config(config_path: &Path) -> Result<ModelConfig, EmbedError> {
    // Read once: the header picks the architecture, the whole object becomes its config.
    let mut raw: serde_json::Value = read_json(config_path)?;
    let header = ModelHeader::deserialize(&raw).map_err(|e| EmbedError::InvalidFile {
        path: config_path.to_path_buf(),
        reason: format!("not the expected JSON ({e})"),
    })?;
    let Some(model_type) =
        header.model_type.or_else(|| header.architectures.and_then(|a| a.into_iter().next())).filter(|t| !t.is_empty())
    else {
        return Err(EmbedError::MissingModelType { path: config_path.to_path_buf(), supported: SUPPORTED });
    };
    let wanted = key(&model_type);
    let Some(&canonical) = SUPPORTED.iter().find(|name| key(name) == wanted) else {
        let remote = REMOTE_CODE.contains(&wanted.as_str()) || header.auto_map.is_some();
        return Err(if remote {
            EmbedError::RemoteCodeArchitecture {
                path: config_path.to_path_buf(),
                found: model_type,
                supported: SUPPORTED,
            }
        } else {
            EmbedError::UnsupportedArchitecture {
                path: config_path.to_path_buf(),
                found: model_type,
                supported: SUPPORTED,
            }
        });
    };
    if let Some(object) = raw.as_object_mut() {
        object.insert("model_type".to_owned(), serde_json::Value::String(canonical.to_owned()));
    }
    serde_json::from_value(raw).map_err(|e| EmbedError::InvalidFile {
        path: config_path.to_path_buf(),
        reason: format!("not a valid {canonical} config ({e})"),
    })
}

/// Reads `config.json`, picks the architecture and loads its weights.
pub fn load_encoder(dir: &Path, kind: Kind, device: Device) -> Result<Box<dyn Encoder>, EmbedError> {
    let config_path = dir.join("config.json");
    let config = read_config(&config_path)?;
    // Every architecture: the checkpoint's headers are checked against the shapes the
    // model asks for before anything is read (see `Weights::build`).
    Weights::load(dir, kind, device)?.build(|w| config.architecture().encoder(w, &config_path))
}

/// Like [`load_encoder`], with the sequence-classification head of a
/// cross-encoder checkpoint (`labels` outputs).
pub(crate) fn load_classifier(dir: &Path, kind: Kind, device: Device, labels: i64) -> Result<Classifier, EmbedError> {
    let config_path = dir.join("config.json");
    let config = read_config(&config_path)?;
    Weights::load(dir, kind, device)?.build(|w| config.architecture().classifier(w, &config_path, labels))
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
fn check_ids(config_path: &Path, checks: &[(&str, &Tensor, &str, i64)]) -> Result<(), EmbedError> {
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

/// The checks every encoder runs on its input before any lookup: the sequence fits
/// the position table, token ids fit `vocab_size`, and token type ids fit
/// `type_vocab_size` where the architecture reads them (`limits.type_vocab_size`).
pub(crate) fn check_input(
    config_path: &Path,
    input: &crate::encoder::EncoderInput,
    limits: crate::encoder::EncoderLimits,
) -> Result<(), EmbedError> {
    let (_, seq) = input.input_ids.size2()?;
    check_positions(config_path, seq, i64::try_from(limits.max_positions).unwrap_or(i64::MAX))?;
    let mut checks = vec![("token id", &input.input_ids, "vocab_size", limits.vocab_size)];
    if let Some(types) = limits.type_vocab_size {
        checks.push(("token type id", &input.token_type_ids, "type_vocab_size", types));
    }
    check_ids(config_path, &checks)
}

/// Fails when a sequence of `len` tokens needs more positions than the table has.
fn check_positions(config_path: &Path, len: i64, max_positions: i64) -> Result<(), EmbedError> {
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

#[cfg(test)]
mod check_tests {
    use super::*;

    #[test]
    fn sizes_that_cannot_split_into_heads_are_refused() {
        let path = Path::new("config.json");
        let sizes = [("hidden_size", 384)];
        assert!(check_sizes(path, &sizes, 6, (384, 12)).is_ok());
        let err = check_sizes(path, &sizes, 6, (384, 5)).unwrap_err().to_string();
        assert!(err.contains("not a multiple of num_attention_heads 5"), "{err}");
    }

    #[test]
    fn names_reduce_to_one_key() {
        for name in ["xlm-roberta", "xlm_roberta", "XLMRobertaModel", "XLMRobertaForSequenceClassification"] {
            assert_eq!(key(name), "xlmroberta", "{name}");
        }
        assert_eq!(key("T5EncoderModel"), "t5");
        assert_eq!(key("model"), "model", "a bare suffix is a name");
        assert_eq!(key("nomic_bert"), "nomicbert");
    }
}
