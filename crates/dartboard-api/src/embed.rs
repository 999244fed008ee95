//! [`EmbeddingModel`]: the cloneable handle to one embedding model on its worker
//! thread. Callers tokenize on their own threads; the worker runs forward passes
//! over whatever several callers queued (see `worker.rs`).

use std::sync::Arc;
use std::time::Instant;

use dartboard_config::EmbeddingConfig;
use dartboard_embeddings::{EmbedError, EmbedTokenizer, Embeddings, Prompt, SentenceEmbedder, Tokenized};
use serde::Serialize;

use crate::worker::{BatchObserver, BatchOptions, Engine, Worker};
use crate::ApiError;

/// Which prompt to prepend (an owned [`Prompt`], so a request can cross threads).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PromptChoice {
    /// The model's default prompt, if it has one.
    #[default]
    Default,
    /// No prompt, even if the model has a default.
    None,
    /// One of the model's named prompts (`"query"`).
    Name(String),
    /// This text, prepended as is.
    Text(String),
}

impl PromptChoice {
    /// The borrowed form the embedder takes.
    pub fn as_prompt(&self) -> Prompt<'_> {
        match self {
            PromptChoice::Default => Prompt::Default,
            PromptChoice::None => Prompt::None,
            PromptChoice::Name(name) => Prompt::Name(name),
            PromptChoice::Text(text) => Prompt::Text(text),
        }
    }
}

/// What one caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedRequest {
    /// The texts; row `i` of the answer belongs to `texts[i]`.
    pub texts: Vec<String>,
    /// The prompt prepended to each.
    pub prompt: PromptChoice,
    /// Whether a text over the model's token limit is cut to it (as
    /// sentence-transformers does); when false such a text fails the request with
    /// [`ApiError::TooLong`].
    pub truncate: bool,
}

impl EmbedRequest {
    /// Texts with the default prompt, truncated to the limit.
    pub fn new(texts: Vec<String>) -> Self {
        EmbedRequest { texts, prompt: PromptChoice::Default, truncate: true }
    }
}

/// The answer to an [`EmbedRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    /// Row `i` is `texts[i]`'s embedding, identical to what
    /// [`SentenceEmbedder::encode_with`] returns.
    pub embeddings: Embeddings,
    /// Tokens per text as embedded (special tokens and prompt included, after
    /// truncation), for usage reports.
    pub token_counts: Vec<usize>,
}

/// Facts about a loaded model, available without queueing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// The model reference it was loaded from.
    pub name: String,
    /// The commit its files come from, for models from the cache.
    pub revision: Option<String>,
    /// Embedding width (for a reranker: scores per pair).
    pub dim: usize,
    /// The token limit, special tokens included.
    pub max_input_length: usize,
    /// Compute precision (`f32`, `bf16`, `f16`).
    pub dtype: String,
    /// Where it runs (`cpu`, `cuda:0`).
    pub device: String,
}

struct EmbedEngine(SentenceEmbedder);

impl Engine for EmbedEngine {
    type Group = Tokenized;
    type Output = Embeddings;

    fn run(&self, groups: &[&Tokenized]) -> Result<Vec<Embeddings>, EmbedError> {
        self.0.embed_tokenized(groups)
    }
}

/// A loaded embedding model that any number of threads and tasks can share.
///
/// Cloning is cheap (an `Arc`); every clone talks to the same worker thread,
/// which owns the model (libtorch tensors are `Send` but not `Sync`). Callers
/// tokenize on their own thread; the worker takes everything queued when it
/// becomes free, up to [`BatchOptions::max_batch_tokens`], and runs it in shared
/// forward passes. Results are the same as [`SentenceEmbedder::encode_with`] on
/// the caller's texts alone.
///
/// Errors: [`ApiError::Busy`] at once when [`BatchOptions::max_queued`] requests
/// already wait; [`ApiError::TooLong`] for an over-long text when the request
/// asks not to truncate; [`ApiError::Stopped`] once the worker has ended (after
/// [`EmbeddingModel::shutdown`], or a panic in the model); [`ApiError::Model`]
/// for the embedder's own errors (unknown prompt, text too large, non-finite
/// output). The worker stops when the last clone is dropped, after the requests
/// already queued.
#[derive(Clone)]
pub struct EmbeddingModel {
    inner: Arc<Inner>,
}

struct Inner {
    worker: Worker<EmbedEngine>,
    tokenizer: EmbedTokenizer,
    info: ModelInfo,
    /// No rows, the model's width: the answer to an empty request, given without
    /// queueing (`Embeddings` are only made by the embedder).
    empty: Embeddings,
}

impl EmbeddingModel {
    /// Loads the model `config` describes with default [`BatchOptions`], logging
    /// `Initializing embedding model: NAME (dim=..., device=...)`.
    pub fn new(config: &EmbeddingConfig) -> Result<Self, ApiError> {
        Self::with_options(config, BatchOptions::default())
    }

    /// Loads the model `config` describes, batching as `options` says.
    pub fn with_options(config: &EmbeddingConfig, options: BatchOptions) -> Result<Self, ApiError> {
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
        Self::from_embedder(embedder, config.model.clone(), options)
    }

    /// Serves an embedder loaded some other way, under `name`.
    pub fn from_embedder(embedder: SentenceEmbedder, name: String, options: BatchOptions) -> Result<Self, ApiError> {
        let tokenizer = embedder.tokenizer().clone();
        let empty = embedder.embed_tokenized(&[&tokenizer.tokenize(&[], Prompt::None)?])?.remove(0);
        let info = ModelInfo {
            name,
            revision: embedder.files().revision().map(str::to_owned),
            dim: embedder.embedding_dim(),
            max_input_length: embedder.max_seq_length(),
            dtype: embedder.dtype().to_string(),
            device: embedder.device_name(),
        };
        let worker = Worker::start("dartboard-embed", EmbedEngine(embedder), options)?;
        Ok(EmbeddingModel { inner: Arc::new(Inner { worker, tokenizer, info, empty }) })
    }

    /// Sets the one observer of the worker's batches (replacing any earlier one).
    pub fn on_batch(&self, observer: BatchObserver) {
        self.inner.worker.on_batch(observer);
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// The model reference it was loaded from.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// The commit the model's files come from, for models from the cache.
    pub fn revision(&self) -> Option<&str> {
        self.inner.info.revision.as_deref()
    }

    /// The embedding dimension.
    pub fn embedding_dim(&self) -> usize {
        self.inner.info.dim
    }

    /// The device it runs on (`cpu`, `cuda:0`).
    pub fn device(&self) -> &str {
        &self.inner.info.device
    }

    /// Requests waiting now (not counting the batch the worker is running).
    pub fn queue_depth(&self) -> usize {
        self.inner.worker.queue_depth()
    }

    /// Embeds one request, blocking this thread until the worker has run it.
    /// From async code use [`EmbeddingModel::embed_async`].
    pub fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, ApiError> {
        self.inner.worker.check_room()?;
        let texts: Vec<&str> = request.texts.iter().map(String::as_str).collect();
        let tokenized = prepare(&self.inner.tokenizer, &texts, request.prompt.as_prompt(), request.truncate)?;
        self.run(tokenized)
    }

    /// Embeds one request without blocking the async runtime: tokenizing runs on
    /// tokio's blocking pool when called inside a tokio runtime (on this thread
    /// otherwise), and the answer arrives over a oneshot channel.
    pub async fn embed_async(&self, request: EmbedRequest) -> Result<EmbedResponse, ApiError> {
        self.inner.worker.check_room()?;
        let tokenizer = self.inner.tokenizer.clone();
        let tokenize = move || {
            let texts: Vec<&str> = request.texts.iter().map(String::as_str).collect();
            prepare(&tokenizer, &texts, request.prompt.as_prompt(), request.truncate)
        };
        let tokenized = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => match runtime.spawn_blocking(tokenize).await {
                Ok(tokenized) => tokenized?,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                // The runtime is shutting down.
                Err(_) => return Err(ApiError::Stopped),
            },
            Err(_) => tokenize()?,
        };
        if tokenized.is_empty() {
            return Ok(EmbedResponse { embeddings: self.inner.empty.clone(), token_counts: Vec::new() });
        }
        let token_counts = tokenized.token_counts();
        let (tokens, texts) = (tokenized.total_tokens(), tokenized.len());
        let embeddings = self.inner.worker.call_async(tokenized, tokens, texts)?.await?;
        Ok(EmbedResponse { embeddings, token_counts })
    }

    /// Embeds texts with the model's default prompt (if any), truncating; row `i`
    /// belongs to `texts[i]`. Blocks until the worker has run them.
    pub fn encode(&self, texts: &[&str]) -> Result<Embeddings, ApiError> {
        self.encode_with(texts, Prompt::Default)
    }

    /// Embeds texts with a prompt, truncating. Blocks until the worker has run them.
    pub fn encode_with(&self, texts: &[&str], prompt: Prompt<'_>) -> Result<Embeddings, ApiError> {
        self.inner.worker.check_room()?;
        let tokenized = prepare(&self.inner.tokenizer, texts, prompt, true)?;
        Ok(self.run(tokenized)?.embeddings)
    }

    /// Embeds one text. Blocks until the worker has run it.
    pub fn encode_one(&self, text: &str) -> Result<Vec<f32>, ApiError> {
        Ok(self.encode(&[text])?.row(0).to_vec())
    }

    /// Stops taking requests, lets the worker finish those already queued and
    /// waits for it; every later call (on any clone) fails with
    /// [`ApiError::Stopped`].
    pub fn shutdown(&self) {
        self.inner.worker.shutdown();
    }

    fn run(&self, tokenized: Tokenized) -> Result<EmbedResponse, ApiError> {
        if tokenized.is_empty() {
            return Ok(EmbedResponse { embeddings: self.inner.empty.clone(), token_counts: Vec::new() });
        }
        let token_counts = tokenized.token_counts();
        let (tokens, texts) = (tokenized.total_tokens(), tokenized.len());
        let embeddings = self.inner.worker.call(tokenized, tokens, texts)?;
        Ok(EmbedResponse { embeddings, token_counts })
    }
}

/// Tokenizes on the caller's thread; with `truncate` false, an over-long text is
/// [`ApiError::TooLong`].
fn prepare(
    tokenizer: &EmbedTokenizer,
    texts: &[&str],
    prompt: Prompt<'_>,
    truncate: bool,
) -> Result<Tokenized, ApiError> {
    let tokenized = tokenizer.tokenize(texts, prompt)?;
    if !truncate {
        if let Some(over) = tokenizer.find_overlong(texts, &tokenized)? {
            return Err(ApiError::TooLong { index: over.index, tokens: over.tokens, max: over.max });
        }
    }
    Ok(tokenized)
}
