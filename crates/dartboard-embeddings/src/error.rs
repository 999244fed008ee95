use std::path::PathBuf;

use dartboard_config::ConfigError;
use dartboard_hub::HubError;

/// Everything that can go wrong loading a model or encoding texts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The model could not be found.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The configuration is invalid or disagrees with the model.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A model file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (printed by the error chain, not repeated here).
        #[source]
        source: std::io::Error,
    },
    /// A model file exists but its content is not what it must be.
    #[error("{} is invalid: {reason}. Fix the file or get a fresh copy of the model", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `config.json` names an architecture this crate does not implement.
    #[error("{} describes a {found:?} model, which is not supported; supported model types: {}", path.display(), supported.join(", "))]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// `model_type` (or the first of `architectures`).
        found: String,
        /// What is supported.
        supported: &'static [&'static str],
    },
    /// `config.json` names neither a `model_type` nor `architectures`.
    #[error("{} has no model_type (and no architectures), so the model's architecture is unknown; add the \"model_type\" of the checkpoint it came with (supported model types: {})", path.display(), supported.join(", "))]
    MissingModelType {
        /// The config file.
        path: PathBuf,
        /// What is supported.
        supported: &'static [&'static str],
    },
    /// `config.json` names an architecture that only runs with the model's own
    /// Python code (transformers' `trust_remote_code`).
    #[error("{} describes a {found:?} model, whose architecture exists only as the model's own Python code (trust_remote_code); running such code is out of scope for dartboard-rs. Use a model of a supported type: {}", path.display(), supported.join(", "))]
    RemoteCodeArchitecture {
        /// The config file.
        path: PathBuf,
        /// `model_type` (or the first of `architectures`).
        found: String,
        /// What is supported.
        supported: &'static [&'static str],
    },
    /// A cross-encoder was asked of an architecture without a classification head here.
    #[error("{} describes a model that dartboard-rs can embed with but has no sequence-classification head for, so it cannot run as a cross-encoder; docs/configuring-embedding-models.md lists the architectures that can", path.display())]
    NoClassificationHead {
        /// The model's config.json.
        path: PathBuf,
    },

    /// A token id, token type id or position lies outside the model's embedding
    /// tables: the tokenizer does not belong with `config.json`.
    #[error("{detail}, which {} does not allow; the input came from {}, which does not fit that config.json: {fix}", config.display(), tokenizer.display())]
    InputOutOfRange {
        /// The model's config.json.
        config: PathBuf,
        /// The tokenizer that produced the input.
        tokenizer: PathBuf,
        /// What is out of range (`token id 30600 is not below vocab_size 30522`).
        detail: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// `modules.json` lists a module this crate does not implement.
    #[error("{} lists module {found:?}, which is not supported; supported modules: {}", path.display(), supported.join(", "))]
    UnsupportedModule {
        /// modules.json.
        path: PathBuf,
        /// The module's type.
        found: String,
        /// What is supported.
        supported: &'static [&'static str],
    },
    /// The weights do not fit the architecture described by `config.json`.
    #[error("weights in {} do not fit the model described by config.json: {}", path.display(), describe_misfit(missing, mismatched))]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// Tensors the model needs that the file lacks.
        missing: Vec<String>,
        /// Tensors whose shape differs (`name: expected [..], found [..]`).
        mismatched: Vec<String>,
    },
    /// The architecture cannot compute in the precision asked for.
    #[error("{} describes a {architecture} model, which cannot run in {precision}: {reason}; use {fix} instead (--dtype, EMBEDDING_DTYPE, or dtype in dartboard.toml)", path.display())]
    UnsupportedPrecision {
        /// The config file.
        path: PathBuf,
        /// The architecture, in words.
        architecture: &'static str,
        /// The precision asked for.
        precision: &'static str,
        /// What goes wrong in it.
        reason: &'static str,
        /// The precisions to use instead.
        fix: &'static str,
    },
    /// The requested device cannot be used.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        /// The device as the user spelled it.
        device: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// A prompt name the model does not define.
    #[error("the model has no prompt named {name:?}; its prompts are: {}", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    UnknownPrompt {
        /// The name asked for.
        name: String,
        /// The names the model defines.
        available: Vec<String>,
    },
    /// A model file cannot be read safely: missing, not a regular file (a FIFO, a
    /// device such as `/dev/zero`), or larger than a file of its kind can be.
    #[error(transparent)]
    File(#[from] dartboard_fs::FsError),
    /// The model produced NaN or infinity for a text; such a vector is never returned.
    #[error("model {model} produced a non-finite embedding (NaN or infinity) for text {index}; the model's weights or the compute precision cannot represent it (try dtype f32, or check the weights)")]
    NonFinite {
        /// The model (repo id or directory).
        model: String,
        /// The text's index in the input.
        index: usize,
    },
    /// One text is longer than [`crate::MAX_TEXT_BYTES`].
    #[error("text {index} is {bytes} bytes, more than the {max} bytes one text may have; only the first tokens of a text are used anyway, so shorten or split it")]
    TextTooLarge {
        /// The text's index in the input.
        index: usize,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// One call holds more text than [`crate::MAX_REQUEST_BYTES`].
    #[error("{texts} texts of {bytes} bytes in all are more than the {max} bytes one call may carry; send them in smaller groups")]
    RequestTooLarge {
        /// How many texts.
        texts: usize,
        /// Their total length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `truncate_dim` is 0 or more than the embeddings' dimension.
    #[error("cannot truncate {dim}-dimensional embeddings to {requested} dimensions; use a value from 1 to {dim} (the model's embedding dimension), for a Matryoshka model one of the sizes it was trained for")]
    TruncateDim {
        /// The dimension asked for.
        requested: usize,
        /// The embeddings' dimension.
        dim: usize,
    },
    /// Embeddings cannot be quantized as asked (no ranges to be had, or ranges that do
    /// not fit).
    #[error("cannot quantize embeddings to {precision}: {reason}")]
    Quantization {
        /// The precision asked for.
        precision: crate::pipeline::quantize::Precision,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The tokenizer failed on an input.
    #[error("tokenizer error: {0}")]
    Tokenize(String),
    /// libtorch reported an error while running the model.
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
}

fn describe_misfit(missing: &[String], mismatched: &[String]) -> String {
    const SHOWN: usize = 8;
    let list = |label: &str, items: &[String]| {
        let more = if items.len() > SHOWN { ", ..." } else { "" };
        format!("{label} ({}): {}{more}", items.len(), items[..items.len().min(SHOWN)].join(", "))
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(list("missing tensors", missing));
    }
    if !mismatched.is_empty() {
        parts.push(list("wrong shapes", mismatched));
    }
    parts.push("check that config.json belongs to these weights".to_owned());
    parts.join("; ")
}

#[cfg(test)]
mod io_message_tests {
    use super::*;

    /// The CLI prints the chain (`{:#}`): the OS text must come from the source only.
    #[test]
    fn io_errors_print_the_os_text_once() {
        let err = EmbedError::Io {
            path: "/models/x/config.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let chain = anyhow_like(&err);
        assert_eq!(chain.matches("permission denied").count(), 1, "{chain}");
        assert!(chain.contains("/models/x/config.json"), "{chain}");
    }

    /// `{:#}` of anyhow, without depending on anyhow: the message and its sources.
    fn anyhow_like(err: &dyn std::error::Error) -> String {
        let mut out = err.to_string();
        let mut source = err.source();
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }
}
