use std::path::PathBuf;

/// Everything that can go wrong finding or storing model files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The reference is neither a directory nor a valid Hub name.
    #[error("invalid model reference {reference:?}: {reason}")]
    InvalidReference {
        /// What the user gave.
        reference: String,
        /// Why it was rejected, and what is accepted.
        reason: String,
    },
    /// A path-like reference that does not exist.
    #[error("model directory {} does not exist: check the path, or give a Hub name such as all-MiniLM-L6-v2", path.display())]
    NoSuchDirectory {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// The model directory lacks files a sentence-transformers model needs.
    #[error("{} is not a complete model: missing {}; a model directory needs config.json, tokenizer.json and model.safetensors (or pytorch_model.bin)", dir.display(), missing.join(", "))]
    MissingFiles {
        /// The directory that was checked.
        dir: PathBuf,
        /// The files that are not there.
        missing: Vec<String>,
    },
    /// The model is not in the cache.
    #[error("model {repo_id} (revision {revision}) is not in the cache at {}: run `cargo xtask setup` for the default model, copy a Hugging Face cache there, or pass a local model directory", root.display())]
    NotCached {
        /// The Hub repo id.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The cache root that was searched.
        root: PathBuf,
    },
    /// A file's content does not match the hash it must have.
    #[error("{} has {algorithm} {actual}, expected {expected}: the file is corrupt or not the one asked for", path.display())]
    HashMismatch {
        /// The file that was checked.
        path: PathBuf,
        /// `sha256` or `git-sha1`.
        algorithm: &'static str,
        /// The hash it must have.
        expected: String,
        /// The hash it has.
        actual: String,
    },
    /// An I/O error on a named path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `creating`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |source| HubError::Io { action, path, source }
    }
}
