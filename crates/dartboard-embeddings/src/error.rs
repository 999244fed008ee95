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
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
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
