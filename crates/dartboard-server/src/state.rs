//! What every handler shares: the limits, the API key's digest, the metrics, the
//! admission semaphore, and the models once they are loaded.
//!
//! The models arrive after the port is bound (loading can take minutes when it
//! downloads), so they sit in a `OnceLock`: until it is set, `/health` answers 503
//! and the model routes answer 503 in their API's shape.

use std::sync::{Arc, OnceLock};

use dartboard_api::{EmbeddingModel, RerankModel};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Api, HttpError};
use crate::metrics::Metrics;
use crate::ServeError;

/// The server's limits and access control (the `dartboard serve` flags).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Requests handled at once; one more is answered 429 at once.
    pub max_concurrent_requests: usize,
    /// Most inputs one request may carry; more is 413.
    pub max_client_batch_size: usize,
    /// Largest request body in bytes; larger is 413.
    pub payload_limit: usize,
    /// The token budget of one forward pass (reported by `/info`; the model handle
    /// enforces it).
    pub max_batch_tokens: usize,
    /// When set, every route but `/health` and `/metrics` needs `Authorization: Bearer KEY`.
    pub api_key: Option<ApiKey>,
}

impl Default for ServerOptions {
    /// text-embeddings-inference's defaults.
    fn default() -> Self {
        ServerOptions {
            max_concurrent_requests: 512,
            max_client_batch_size: 32,
            payload_limit: 2_000_000,
            max_batch_tokens: 16384,
            api_key: None,
        }
    }
}

/// An API key, kept only as its SHA-256 digest: the key itself cannot end up in a
/// log or a debug print, and comparing two digests of fixed length in constant time
/// says nothing about the key's length or its prefix.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    /// A key; empty (or blank) keys are refused, since they would let anyone in by
    /// sending an empty bearer token.
    pub fn new(key: &str) -> Result<Self, ServeError> {
        if key.trim().is_empty() {
            return Err(ServeError::EmptyApiKey);
        }
        Ok(ApiKey { digest: Sha256::digest(key.as_bytes()).into() })
    }

    /// Whether `candidate` is the key (in constant time).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        self.digest.ct_eq(&digest).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The loaded models: the embedding model, and a cross-encoder if `/rerank` is served.
pub struct Models {
    /// Serves `/v1/embeddings` and `/embed`.
    pub embedder: EmbeddingModel,
    /// Serves `/rerank`, when loaded.
    pub reranker: Option<RerankModel>,
}

/// The state every handler shares (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    options: ServerOptions,
    models: OnceLock<Models>,
    limiter: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl AppState {
    /// State with no models yet: the server answers 503 until [`AppState::install`].
    pub fn new(options: ServerOptions) -> Self {
        let limiter = Arc::new(Semaphore::new(options.max_concurrent_requests));
        AppState {
            inner: Arc::new(Inner { options, models: OnceLock::new(), limiter, metrics: Arc::new(Metrics::new()) }),
        }
    }

    /// Makes the models available and starts recording the embedding model's batches.
    /// A second call is ignored (the first models stay).
    pub fn install(&self, models: Models) {
        let metrics = Arc::clone(&self.inner.metrics);
        models.embedder.on_batch(Arc::new(move |event| metrics.observe_batch(event)));
        let _ = self.inner.models.set(models);
    }

    /// The models, or 503 (in `api`'s shape) while they load.
    pub fn models(&self, api: Api) -> Result<&Models, HttpError> {
        self.inner
            .models
            .get()
            .ok_or_else(|| HttpError::unhealthy(api, "the model is still loading; retry when GET /health answers 200"))
    }

    /// Whether the models are loaded.
    pub fn is_ready(&self) -> bool {
        self.inner.models.get().is_some()
    }

    /// The limits.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A slot for one request, or 429 at once when all are taken: a client is told to
    /// back off instead of waiting behind a queue of unknown length.
    pub fn admit(&self, api: Api) -> Result<OwnedSemaphorePermit, HttpError> {
        Arc::clone(&self.inner.limiter).try_acquire_owned().map_err(|_| {
            HttpError::overloaded(
                api,
                format!(
                    "the server is handling its maximum of {} requests at once (--max-concurrent-requests); retry later",
                    self.inner.options.max_concurrent_requests
                ),
            )
        })
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.inner.options.max_concurrent_requests - self.inner.limiter.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_matches_only_itself_and_never_prints() {
        let key = ApiKey::new("s3cret-key").unwrap();
        assert!(key.matches(b"s3cret-key"));
        assert!(!key.matches(b"s3cret-kez"));
        assert!(!key.matches(b"s3cret-key "));
        assert!(!key.matches(b""));
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(matches!(ApiKey::new("  "), Err(ServeError::EmptyApiKey)));
    }

    #[test]
    fn admission_refuses_past_the_limit_and_frees_on_drop() {
        let state = AppState::new(ServerOptions { max_concurrent_requests: 1, ..ServerOptions::default() });
        let first = state.admit(Api::Tei).unwrap();
        assert_eq!(state.in_flight(), 1);
        let refused = state.admit(Api::OpenAi).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        drop(first);
        assert!(state.admit(Api::Tei).is_ok());
    }

    #[test]
    fn not_ready_is_503() {
        let state = AppState::new(ServerOptions::default());
        assert!(!state.is_ready());
        let err = state.models(Api::Tei).err().unwrap();
        assert_eq!(err.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
