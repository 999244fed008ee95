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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use dartboard_embeddings::LoadOptions;
    use dartboard_hub::ModelFiles;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/generated/tiny").join(name)
    }

    fn embedder(name: &str) -> SentenceEmbedder {
        let files = ModelFiles::open(fixture(name), None, None).unwrap();
        SentenceEmbedder::load(&files, LoadOptions::default()).unwrap()
    }

    fn handle(name: &str, options: BatchOptions) -> EmbeddingModel {
        EmbeddingModel::from_embedder(embedder(name), name.to_owned(), options).unwrap()
    }

    /// Waits (at most 60 s) until `n` requests are queued; on failure opens the
    /// gate first, so the callers held behind it end and the test fails, not hangs.
    fn wait_depth(model: &EmbeddingModel, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while model.queue_depth() < n {
            if Instant::now() > deadline {
                model.inner.worker.gate().open();
                panic!("{n} requests were not queued in 60 s ({} are)", model.queue_depth());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn request(texts: &[&str], prompt: PromptChoice) -> EmbedRequest {
        EmbedRequest { texts: texts.iter().map(|t| t.to_string()).collect(), prompt, truncate: true }
    }

    /// Requests with different prompts (so different prompt lengths, which this
    /// fixture leaves out of pooling) and lengths, all queued while the worker is
    /// held so they share one batch, come back bit for bit as `encode_with` gives
    /// each alone; token counts as the tokenizer counts them.
    #[test]
    fn requests_batched_together_equal_encode_with_alone() {
        for name in ["bert_cls_prompt_excluded", "bert_prompts", "bert_mean_norm"] {
            let direct = embedder(name);
            let model = handle(name, BatchOptions::default());
            let events = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&events);
            model.on_batch(Arc::new(move |e: &crate::BatchEvent| seen.lock().unwrap().push(e.requests)));
            let long = "Dartboard balances relevance and diversity when it picks passages. ".repeat(40);
            let cases: Vec<(Vec<&str>, PromptChoice)> = vec![
                (vec!["first", "a second, longer text than the first"], PromptChoice::None),
                (vec!["query text", long.as_str(), "x"], PromptChoice::Text("search for: ".into())),
                (vec!["short"], PromptChoice::Text("q: ".into())),
                (vec!["default prompt", "another"], PromptChoice::Default),
                (
                    vec![long.as_str(), "the same prompt as the second request"],
                    PromptChoice::Text("search for: ".into()),
                ),
                (vec![], PromptChoice::None),
            ];
            let gate = model.inner.worker.gate();
            gate.close();
            let answers = std::thread::scope(|s| {
                let warm = s.spawn(|| model.embed(request(&["held"], PromptChoice::None)));
                gate.wait_taken(1);
                let handles: Vec<_> = cases
                    .iter()
                    .enumerate()
                    .map(|(i, (texts, prompt))| {
                        let r = request(texts, prompt.clone());
                        let handle = s.spawn(|| model.embed(r));
                        // Empty requests are answered without queueing.
                        wait_depth(&model, cases[..=i].iter().filter(|(t, _)| !t.is_empty()).count());
                        handle
                    })
                    .collect();
                gate.open();
                warm.join().unwrap().unwrap();
                handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect::<Vec<_>>()
            });
            for ((texts, prompt), answer) in cases.iter().zip(answers) {
                let expected = direct.encode_with(texts, prompt.as_prompt()).unwrap();
                assert_eq!(answer.embeddings, expected, "{name}: {texts:?} with {prompt:?}");
                let counts = direct.tokenizer().tokenize(texts, prompt.as_prompt()).unwrap().token_counts();
                assert_eq!(answer.token_counts, counts);
                assert_eq!(answer.embeddings.dim(), model.embedding_dim());
            }
            assert_eq!(*events.lock().unwrap(), vec![1, 5], "{name}: the five queued requests ran as one batch");
        }
    }

    #[test]
    fn many_threads_get_their_own_rows_and_share_batches() {
        let direct = embedder("bert_mean_norm");
        let model = handle("bert_mean_norm", BatchOptions::default());
        let largest = Arc::new(Mutex::new(0usize));
        let seen = Arc::clone(&largest);
        model.on_batch(Arc::new(move |e: &crate::BatchEvent| {
            let mut largest = seen.lock().unwrap();
            *largest = (*largest).max(e.requests);
        }));
        let gate = model.inner.worker.gate();
        gate.close();
        let texts: Vec<String> = (0..32).map(|i| format!("thread {i} asks about item {}", i * 7)).collect();
        let rows = std::thread::scope(|s| {
            // One request is taken and held, then all 32 threads queue behind it.
            let held = s.spawn(|| model.encode_one("held"));
            gate.wait_taken(1);
            let handles: Vec<_> = texts
                .iter()
                .map(|text| {
                    let model = model.clone();
                    s.spawn(move || model.encode_one(text).unwrap())
                })
                .collect();
            wait_depth(&model, 32);
            gate.open();
            held.join().unwrap().unwrap();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        for (text, row) in texts.iter().zip(rows) {
            assert_eq!(row, direct.encode_one(text).unwrap(), "{text}");
        }
        assert_eq!(*largest.lock().unwrap(), 32);
    }

    #[test]
    fn truncate_false_names_the_text_its_tokens_and_the_limit() {
        let model = handle("bert_mean_norm", BatchOptions::default());
        let max = model.info().max_input_length;
        let mut tokenizer = tokenizers::Tokenizer::from_file(fixture("bert_mean_norm").join("tokenizer.json")).unwrap();
        tokenizer.with_truncation(None).unwrap();
        tokenizer.with_padding(None);
        let count = |text: &str| tokenizer.encode(text, true).unwrap().len();
        // "word" is one token: `max - 2` of them fill the limit with [CLS] and [SEP].
        let fits = "word ".repeat(max - 2);
        let over = "word ".repeat(max + 40);
        assert_eq!(count(&fits), max);
        let ok =
            model.embed(EmbedRequest { truncate: false, ..request(&["short", &fits], PromptChoice::None) }).unwrap();
        assert_eq!(ok.token_counts[1], max);
        let refused =
            model.embed(EmbedRequest { truncate: false, ..request(&["short", &fits, &over], PromptChoice::None) });
        match &refused {
            Err(err @ ApiError::TooLong { index: 2, tokens, max: limit }) => {
                assert_eq!((*tokens, *limit), (count(&over), max));
                let message = err.to_string();
                assert!(message.contains("text 2") && message.contains(&format!("{tokens} tokens")), "{message}");
            }
            other => panic!("expected TooLong for text 2, got {other:?}"),
        }
        // The prompt counts: the text that fit alone no longer does.
        let prompted =
            model.embed(EmbedRequest { truncate: false, ..request(&[&fits], PromptChoice::Text("prefix: ".into())) });
        assert!(matches!(prompted, Err(ApiError::TooLong { index: 0, .. })), "{prompted:?}");
        // Truncating, the same request is embedded to the limit.
        let cut = model.embed(request(&["short", &fits, &over], PromptChoice::None)).unwrap();
        assert_eq!(cut.token_counts[2], max);
    }

    #[test]
    fn spans_of_callers_are_parents_of_the_worker_spans() {
        use tracing_subscriber::layer::{Context, SubscriberExt};
        use tracing_subscriber::registry::LookupSpan;

        /// (span, its parent, the thread it was made on)
        type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;
        struct Capture(Seen);
        impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
            fn on_new_span(&self, _: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
                let span = ctx.span(id).expect("a new span is registered");
                let parent = span.parent().map(|p| p.name().to_owned());
                let thread = std::thread::current().name().map(str::to_owned);
                self.0.lock().unwrap().push((span.name().to_owned(), parent, thread));
            }
        }

        let model = handle("bert_mean_norm", BatchOptions::default());
        let seen: Seen = Arc::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http_request");
            let _entered = span.enter();
            model.encode(&["traced"]).unwrap();
        });
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().any(|(name, parent, thread)| name == "model_batch"
                && parent.as_deref() == Some("http_request")
                && thread.as_deref() == Some("dartboard-embed")),
            "{seen:?}"
        );
    }

    #[test]
    fn async_requests_equal_blocking_ones_and_stopped_after_shutdown() {
        let model = handle("bert_prompts", BatchOptions::default());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = request(&["one", "two texts"], PromptChoice::Name("passage".into()));
        let async_answer = runtime.block_on(model.embed_async(r.clone())).unwrap();
        assert_eq!(async_answer, model.embed(r.clone()).unwrap());
        // An empty request is answered without queueing, with the model's width.
        let empty = runtime.block_on(model.embed_async(request(&[], PromptChoice::Default))).unwrap();
        assert_eq!((empty.embeddings.len(), empty.embeddings.dim()), (0, model.embedding_dim()));
        let unknown = model.embed(request(&["x"], PromptChoice::Name("nope".into())));
        assert!(matches!(unknown, Err(ApiError::Model(EmbedError::UnknownPrompt { .. }))), "{unknown:?}");
        let clone = model.clone();
        model.shutdown();
        assert!(matches!(clone.embed(r.clone()), Err(ApiError::Stopped)));
        assert!(matches!(runtime.block_on(clone.embed_async(r)), Err(ApiError::Stopped)));
        assert!(matches!(clone.encode_one("x"), Err(ApiError::Stopped)));
    }
}
