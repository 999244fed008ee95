//! What a Dartboard service needs from the embedding layer: tracing set up once, and
//! one embedding model per process, built lazily on first use and shared by every
//! thread (the "dependencies" of the Python service this replaces).
//!
//! Brief overview:
//! - [`init_tracing`] installs a `tracing-subscriber` formatter filtered by `RUST_LOG`
//!   (default `info`).
//! - [`embedding_config`] and [`embedding_model`] return process-wide instances. The
//!   model is built on first call and logs
//!   `Initializing embedding model: NAME (dim=N, device=D)`; a failed build is not
//!   cached, so a later call (say, after the model was copied in) tries again.
//! - [`EmbeddingModel`] is the shareable handle: `Sync`, so `&'static` references
//!   can go to any thread.
//! - [`config_summary`] is the service's `get_config()`.
//!
//! ```no_run
//! dartboard_api::init_tracing();
//! let model = dartboard_api::embedding_model()?;
//! let vector = model.encode_one("How does Dartboard improve RAG systems?")?;
//! assert_eq!(vector.len(), model.embedding_dim());
//! # Ok::<(), dartboard_api::ApiError>(())
//! ```
#![deny(missing_docs)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use dartboard_config::{ConfigError, EmbeddingConfig, Overrides};
use dartboard_embeddings::{EmbedError, Embeddings, SentenceEmbedder};
use serde::Serialize;

pub use dartboard_config as config;
pub use dartboard_embeddings as embeddings;

/// Why the shared configuration or model could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] EmbedError),
}

/// Installs the global tracing subscriber (stderr, `RUST_LOG` filter, default
/// `info`). Calling it again is harmless.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The process-wide configuration, read from the environment on first call.
pub fn embedding_config() -> Result<&'static EmbeddingConfig, ApiError> {
    static CONFIG: OnceLock<EmbeddingConfig> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config);
    }
    let config = EmbeddingConfig::load(&Overrides::default())?;
    Ok(CONFIG.get_or_init(|| config))
}

/// The process-wide model, built from [`embedding_config`] on first call.
pub fn embedding_model() -> Result<&'static EmbeddingModel, ApiError> {
    static MODEL: OnceLock<EmbeddingModel> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    if let Some(model) = MODEL.get() {
        return Ok(model);
    }
    // One builder at a time: a second caller waits and then finds the model,
    // instead of loading a second copy of the weights.
    let _building = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(model) = MODEL.get() {
        return Ok(model);
    }
    dartboard_embeddings::retain_freed_memory();
    let model = EmbeddingModel::new(embedding_config()?)?;
    Ok(MODEL.get_or_init(|| model))
}

/// A loaded model that any number of threads can share.
///
/// libtorch tensors are `Send` but not `Sync`, so calls are serialised by a mutex;
/// each call still uses all of libtorch's intra-op threads.
pub struct EmbeddingModel {
    inner: Mutex<SentenceEmbedder>,
    name: String,
    revision: Option<String>,
    dim: usize,
    device: String,
}

impl EmbeddingModel {
    /// Loads the model `config` describes, logging the standard initialization line.
    pub fn new(config: &EmbeddingConfig) -> Result<Self, ApiError> {
        let expected = config.expected_dim().map_or_else(|| "auto".to_owned(), |d| d.to_string());
        tracing::info!("Initializing embedding model: {} (dim={expected}, device={})", config.model, config.device);
        let started = Instant::now();
        let embedder = SentenceEmbedder::from_config(config)?;
        tracing::info!(
            model = %config.model,
            dim = embedder.embedding_dim(),
            device = %embedder.device_name(),
            dtype = %embedder.dtype(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedding model ready"
        );
        Ok(EmbeddingModel {
            name: config.model.clone(),
            revision: embedder.files().revision().map(str::to_owned),
            dim: embedder.embedding_dim(),
            device: embedder.device_name(),
            inner: Mutex::new(embedder),
        })
    }

    /// The model reference it was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The commit the model's files come from, for models from the cache.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    /// The embedding dimension.
    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    /// The device it runs on (`cpu`, `cuda:0`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Embeds texts; row `i` belongs to `texts[i]`.
    pub fn encode(&self, texts: &[&str]) -> Result<Embeddings, ApiError> {
        Ok(self.lock().encode(texts)?)
    }

    /// Embeds texts with a prompt.
    pub fn encode_with(
        &self,
        texts: &[&str],
        prompt: dartboard_embeddings::Prompt<'_>,
    ) -> Result<Embeddings, ApiError> {
        Ok(self.lock().encode_with(texts, prompt)?)
    }

    /// Embeds one text.
    pub fn encode_one(&self, text: &str) -> Result<Vec<f32>, ApiError> {
        Ok(self.lock().encode_one(text)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SentenceEmbedder> {
        // A panic in another caller cannot leave the model half-updated: encoding
        // never mutates it. Keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The service's view of its configuration (the Python service's `get_config()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigSummary {
    /// The configured model reference.
    pub embedding_model: String,
    /// The configured or documented dimension, if known without loading.
    pub embedding_dim: Option<usize>,
    /// The configured device.
    pub device: String,
    /// The compute precision.
    pub dtype: String,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Where models are cached.
    pub cache_dir: PathBuf,
}

impl ConfigSummary {
    /// Summarises a configuration.
    pub fn of(config: &EmbeddingConfig) -> Self {
        ConfigSummary {
            embedding_model: config.model.clone(),
            embedding_dim: config.expected_dim(),
            device: config.device.to_string(),
            dtype: config.dtype.to_string(),
            batch_size: config.batch_size,
            cache_dir: config.cache_dir.clone(),
        }
    }
}

/// Summary of the process-wide configuration.
pub fn config_summary() -> Result<ConfigSummary, ApiError> {
    Ok(ConfigSummary::of(embedding_config()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sync<T: Sync + Send>() {}

    #[test]
    fn model_handle_is_shareable() {
        assert_sync::<EmbeddingModel>();
    }

    #[test]
    fn summary_reports_configured_values() {
        let env =
            dartboard_config::Env::from_pairs([("EMBEDDING_MODEL", "all-mpnet-base-v2"), ("EMBEDDING_DEVICE", "cuda")]);
        let config = EmbeddingConfig::load_from(&Overrides::default(), &env).unwrap();
        let summary = ConfigSummary::of(&config);
        assert_eq!(summary.embedding_model, "all-mpnet-base-v2");
        assert_eq!(summary.embedding_dim, Some(768));
        assert_eq!(summary.device, "cuda:0");
        assert_eq!(summary.dtype, "f32");
    }
}
