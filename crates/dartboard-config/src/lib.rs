//! Configuration for dartboard-rs: which embedding model to load, where, and how.
//!
//! This crate knows nothing about tensors or the network; it only decides *what* the
//! user asked for. Values come from four layers, highest first:
//!
//! 1. explicit values ([`Overrides`], e.g. CLI flags),
//! 2. the environment (`EMBEDDING_MODEL` or its alias `EMBEDDING_MODEL_NAME`,
//!    `EMBEDDING_DEVICE`, `EMBEDDING_DIM`, `EMBEDDING_DTYPE`, `EMBEDDING_BATCH_SIZE`,
//!    `SENTENCE_TRANSFORMERS_HOME`),
//! 3. a TOML file (`DARTBOARD_CONFIG=path`, else `dartboard.toml` in the working
//!    directory if present),
//! 4. defaults (`all-MiniLM-L6-v2`, `cpu`, `f32`, batch size 32).
//!
//! Brief overview:
//! - [`EmbeddingConfig`] is the resolved, validated result; [`EmbeddingConfig::load`]
//!   builds it from the process environment, [`EmbeddingConfig::load_from`] from an
//!   explicit [`Env`] (what tests use).
//! - [`DeviceSpec`] and [`DType`] parse the user-facing spellings (`cuda:1`, `bf16`).
//! - [`known_dim`] is the table of dimensions for the documented models; the loaded
//!   model's own dimension is always the truth, see [`EmbeddingConfig::check_dim`].
//!
//! ```
//! use dartboard_config::{EmbeddingConfig, Env, Overrides, DeviceSpec};
//!
//! let env = Env::from_pairs([("EMBEDDING_DEVICE", "cuda:1")]);
//! let cfg = EmbeddingConfig::load_from(&Overrides::default(), &env).unwrap();
//! assert_eq!(cfg.model, "all-MiniLM-L6-v2");
//! assert_eq!(cfg.device, DeviceSpec::Cuda(1));
//! assert_eq!(cfg.expected_dim(), Some(384));
//! ```
#![deny(missing_docs)]

mod env;
mod error;
mod known;
mod values;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use env::Env;
pub use error::ConfigError;
pub use known::{canonical_repo_id, known_dim, KNOWN_MODELS};
pub use values::{DType, DeviceSpec};

/// The model used when nothing else is configured.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";
/// Batch size used by sentence-transformers' `encode` when none is given.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Name of the configuration file looked up in the working directory.
pub const CONFIG_FILE_NAME: &str = "dartboard.toml";

/// The resolved configuration of the embedding model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// Model reference: a short name (`all-MiniLM-L6-v2`), `org/name`, optionally
    /// `@revision`, or a local directory.
    pub model: String,
    /// Where the model runs.
    pub device: DeviceSpec,
    /// The dimension the user asked for, if any. `None` means "whatever the model has".
    pub embedding_dim: Option<usize>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Compute precision of the model weights.
    pub dtype: DType,
    /// Root of the model cache (Hugging Face hub layout).
    pub cache_dir: PathBuf,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
}

/// Explicit values that beat every other layer (typically command-line flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// See [`EmbeddingConfig::model`].
    pub model: Option<String>,
    /// See [`EmbeddingConfig::device`].
    pub device: Option<DeviceSpec>,
    /// See [`EmbeddingConfig::embedding_dim`].
    pub embedding_dim: Option<usize>,
    /// See [`EmbeddingConfig::batch_size`].
    pub batch_size: Option<usize>,
    /// See [`EmbeddingConfig::dtype`].
    pub dtype: Option<DType>,
    /// See [`EmbeddingConfig::cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// What the layers deserialize into; keys are the config-file keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    model: String,
    device: DeviceSpec,
    embedding_dim: Option<usize>,
    batch_size: usize,
    dtype: DType,
    cache_dir: Option<PathBuf>,
}

impl EmbeddingConfig {
    /// Loads the configuration from the process environment and working directory.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(overrides, &Env::from_process()?)
    }

    /// Loads the configuration from an explicit environment.
    pub fn load_from(overrides: &Overrides, env: &Env) -> Result<Self, ConfigError> {
        let config_file = env.config_file()?;
        let mut builder = config::Config::builder()
            .set_default("model", DEFAULT_MODEL)
            .and_then(|b| b.set_default("device", "cpu"))
            .and_then(|b| b.set_default("batch_size", DEFAULT_BATCH_SIZE as u64))
            .and_then(|b| b.set_default("dtype", "f32"))
            .map_err(ConfigError::internal)?;
        if let Some(path) = &config_file {
            let text = dartboard_fs::read_to_string_capped(path, dartboard_fs::limits::SETTINGS)
                .map_err(|source| ConfigError::Unreadable { path: path.clone(), source })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        // Environment first, explicit values second: a later override of the same
        // key replaces the earlier one, which is exactly the precedence we want.
        for layer in [env.layer(overrides)?, overrides.clone()] {
            builder = layer.apply(builder).map_err(ConfigError::internal)?;
        }
        let raw: Raw = builder.build().and_then(|c| c.try_deserialize()).map_err(|source| ConfigError::File {
            path: config_file.clone().unwrap_or_else(|| PathBuf::from("<defaults>")),
            source: Box::new(source),
        })?;

        let model = raw.model.trim().to_owned();
        if model.is_empty() {
            return Err(ConfigError::invalid("model", "", "a model name, org/name or directory"));
        }
        if raw.batch_size == 0 {
            return Err(ConfigError::invalid("batch_size", "0", "a positive integer"));
        }
        if raw.embedding_dim == Some(0) {
            return Err(ConfigError::invalid("embedding_dim", "0", "a positive integer"));
        }
        let cache_dir = match raw.cache_dir {
            Some(dir) => dir,
            None => env.default_cache_dir()?,
        };
        Ok(EmbeddingConfig {
            model,
            device: raw.device,
            embedding_dim: raw.embedding_dim,
            batch_size: raw.batch_size,
            dtype: raw.dtype,
            cache_dir,
            config_file,
        })
    }

    /// The dimension known before loading: the configured one, else the table's.
    pub fn expected_dim(&self) -> Option<usize> {
        self.embedding_dim.or_else(|| known_dim(&self.model))
    }

    /// Checks a configured dimension against the loaded model's real one.
    pub fn check_dim(&self, actual: usize) -> Result<(), ConfigError> {
        match self.embedding_dim {
            Some(configured) if configured != actual => {
                Err(ConfigError::DimMismatch { model: self.model.clone(), configured, actual })
            }
            _ => Ok(()),
        }
    }

    /// The cache root as a path.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }
}

impl Overrides {
    fn apply(
        self,
        mut b: config::ConfigBuilder<config::builder::DefaultState>,
    ) -> Result<config::ConfigBuilder<config::builder::DefaultState>, config::ConfigError> {
        b = b.set_override_option("model", self.model)?;
        b = b.set_override_option("device", self.device.map(|d| d.to_string()))?;
        b = b.set_override_option("embedding_dim", self.embedding_dim.map(|d| d as u64))?;
        b = b.set_override_option("batch_size", self.batch_size.map(|d| d as u64))?;
        b = b.set_override_option("dtype", self.dtype.map(|d| d.to_string()))?;
        b.set_override_option("cache_dir", self.cache_dir.map(|p| p.to_string_lossy().into_owned()))
    }
}

#[cfg(test)]
mod tests;
