//! What a Dartboard service needs from the embedding layer: tracing set up once, and
//! one embedding model per process, built lazily on first use and shared by every
//! thread and task (the "dependencies" of the Python service this replaces).
//!
//! Brief overview:
//! - [`init_tracing`] installs a `tracing-subscriber` formatter filtered by `RUST_LOG`
//!   (default `info`).
//! - [`embedding_config`] and [`embedding_model`] return process-wide instances. The
//!   model is built on first call and logs
//!   `Initializing embedding model: NAME (dim=N, device=D)`; a failed build is not
//!   cached, so a later call (say, after the model was copied in) tries again.
//! - [`EmbeddingModel`] is a cheap-to-clone, `Send + Sync` handle to one model
//!   worker thread that owns the model (libtorch tensors are `Send`, not `Sync`).
//!   Callers tokenize on their own thread; the worker takes every request queued
//!   while it was busy as its next batch, up to [`BatchOptions::max_batch_tokens`]
//!   tokens (as text-embeddings-inference does), and runs it in shared forward
//!   passes. Each caller's rows are bit for bit what
//!   [`SentenceEmbedder::encode_with`](dartboard_embeddings::SentenceEmbedder::encode_with)
//!   gives its texts alone: results do not depend on how texts are grouped.
//! - [`RerankModel`] is the same for a cross-encoder, on its own worker, returning
//!   activated scores and the logits before the activation.
//! - [`config_summary`] is the service's `get_config()`.
//!
//! Calls come in two forms: blocking ([`EmbeddingModel::embed`], `encode*`,
//! [`RerankModel::rerank`], [`RerankModel::score`]), which wait on the calling
//! thread, and async ([`EmbeddingModel::embed_async`],
//! [`RerankModel::score_async`]), which tokenize on tokio's blocking pool and
//! await a oneshot channel, so they never block a runtime thread. Errors that are
//! the queue's: [`ApiError::Busy`] at once when [`BatchOptions::max_queued`]
//! requests already wait (retry later; nothing waits unboundedly);
//! [`ApiError::TooLong`] for a text over the model's limit when the request sets
//! `truncate: false` (naming the text, its tokens and the limit); and
//! [`ApiError::Stopped`] once the worker has ended (after `shutdown`, or a panic
//! in the model), also for requests that were still queued. The caller's current
//! `tracing` span goes with each request: the worker's `model_batch` span for it is
//! that span's child.
//!
//! ```no_run
//! use dartboard_api::{EmbedRequest, PromptChoice};
//!
//! dartboard_api::init_tracing();
//! let model = dartboard_api::embedding_model()?;
//! let vector = model.encode_one("How does Dartboard improve RAG systems?")?;
//! assert_eq!(vector.len(), model.embedding_dim());
//!
//! // A request as a server builds it: refused rather than truncated when too long.
//! let request = EmbedRequest {
//!     texts: vec!["What is Dartboard?".into(), "A retrieval method.".into()],
//!     prompt: PromptChoice::Default,
//!     truncate: false,
//! };
//! let response = model.embed(request)?;
//! assert_eq!(response.embeddings.len(), 2);
//! assert_eq!(response.token_counts.len(), 2);
//!
//! // Clones share the worker; other threads (or async tasks) can use them.
//! let shared = model.clone();
//! std::thread::spawn(move || shared.encode(&["from another thread"])).join().unwrap()?;
//! # Ok::<(), dartboard_api::ApiError>(())
//! ```
#![deny(missing_docs)]

mod embed;
mod rerank;
mod worker;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use dartboard_config::{ConfigError, EmbeddingConfig, Overrides};
use dartboard_embeddings::EmbedError;
use serde::Serialize;

pub use dartboard_config as config;
pub use dartboard_embeddings as embeddings;
pub use embed::{EmbedRequest, EmbedResponse, EmbeddingModel, ModelInfo, PromptChoice};
pub use rerank::{RerankModel, RerankResponse};
pub use worker::{BatchEvent, BatchObserver, BatchOptions};

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
    /// The model's queue is full; nothing was queued.
    #[error("the model's request queue is full ({queued} requests waiting); retry later, or raise max_queued")]
    Busy {
        /// Requests waiting when this one was refused.
        queued: usize,
    },
    /// A text is over the model's token limit and the request asked not to truncate.
    #[error("text {index} has {tokens} tokens, over the model's limit of {max}; shorten it, or allow truncation")]
    TooLong {
        /// The text's index in the request.
        index: usize,
        /// Its tokens without truncation (special tokens and prompt included).
        tokens: usize,
        /// The model's limit.
        max: usize,
    },
    /// The model's worker thread has ended (shut down, or a panic in the model);
    /// no request can be served by this handle any more.
    #[error("the model worker has stopped and serves no more requests; load the model again (restart the service)")]
    Stopped,
    /// The worker thread could not be started.
    #[error("cannot start the model worker thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
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
