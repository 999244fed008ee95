use std::path::PathBuf;

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value (from a flag, an environment variable or the file) does not parse.
    #[error("invalid value {value:?} for {key}: expected {expected}")]
    InvalidValue {
        /// The flag, environment variable or file key.
        key: String,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// `DARTBOARD_CONFIG` names a file that does not exist.
    #[error("config file {} (from DARTBOARD_CONFIG) does not exist: create it or unset DARTBOARD_CONFIG", path.display())]
    ConfigFileMissing {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// The config file (or the merged layers) could not be deserialized.
    #[error("cannot read configuration from {}", path.display())]
    File {
        /// The config file, or `<defaults>` when no file was involved.
        path: PathBuf,
        /// What the `config` crate reported.
        #[source]
        source: Box<config::ConfigError>,
    },
    /// The config file exists but is not a readable regular file of a sane size (a
    /// FIFO or `/dev/zero` would hang the reader or fill memory).
    #[error("cannot use config file {}", path.display())]
    Unreadable {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: dartboard_fs::FsError,
    },
    /// No home directory and no cache variable: there is nowhere to keep models.
    #[error("cannot find a cache directory for models: set SENTENCE_TRANSFORMERS_HOME")]
    NoCacheDir,
    /// The configured dimension disagrees with the loaded model.
    #[error(
        "the configured embedding dimension (EMBEDDING_DIM or embedding_dim) is {configured}, but model {model} \
         produces {actual}-dimensional embeddings: set EMBEDDING_DIM={actual} or unset it"
    )]
    DimMismatch {
        /// The model that was loaded.
        model: String,
        /// The dimension from the configuration.
        configured: usize,
        /// The model's real output dimension.
        actual: usize,
    },
    /// A bug in how this crate drives the `config` crate.
    #[error("internal configuration error: {0}")]
    Internal(Box<config::ConfigError>),
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, value: &str, expected: &str) -> Self {
        ConfigError::InvalidValue { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
    }

    pub(crate) fn internal(e: config::ConfigError) -> Self {
        ConfigError::Internal(Box::new(e))
    }
}
