//! `dartboard serve`: sentence embeddings (and reranking) over HTTP, speaking
//! OpenAI's embeddings API and text-embeddings-inference's, on axum and tokio.
//!
//! Brief overview:
//! - [`router`] builds the routes over an [`AppState`]: `POST /v1/embeddings`
//!   (OpenAI), `POST /embed` and `POST /rerank` (TEI), `GET /health`, `GET /info`,
//!   `GET /metrics` (Prometheus text, [`metrics`]).
//! - Handlers never touch tensors: they call the batching handles of
//!   `dartboard-api` ([`dartboard_api::EmbeddingModel`], [`dartboard_api::RerankModel`]),
//!   whose worker thread joins whatever requests are queued into one forward pass.
//! - Admission: a semaphore of `max_concurrent_requests`; one request more is 429 at
//!   once, never a wait. Every error is JSON in the calling API's shape ([`error`]),
//!   and bad input is always a 4xx.
//! - [`serve`] binds nothing itself: it takes a bound listener, answers 503 until the
//!   models (loaded on a blocking thread) are in, and drains in-flight requests on
//!   shutdown. [`run`] is the whole process for the CLI: runtime, signals, bind, log
//!   the address, serve.
//!
//! ```no_run
//! use dartboard_server::{run, Models, ServeError, ServerOptions};
//! use dartboard_api::{BatchOptions, EmbeddingModel};
//!
//! let config = dartboard_api::config::EmbeddingConfig::load(&Default::default()).unwrap();
//! run("127.0.0.1", 3000, ServerOptions::default(), move || {
//!     let embedder = EmbeddingModel::with_options(&config, BatchOptions::default())
//!         .map_err(|source| ServeError::Load { model: config.model.clone(), source })?;
//!     Ok(Models { embedder, reranker: None })
//! })?;
//! # Ok::<(), ServeError>(())
//! ```
#![deny(missing_docs)]

mod body;
pub mod error;
pub mod metrics;
mod openai;
mod state;
mod tei;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use dartboard_api::embeddings::Embeddings;
use dartboard_api::{ApiError, EmbedRequest, EmbeddingModel, PromptChoice};
use tokio::net::TcpListener;

pub use error::{Api, HttpError, Kind};
pub use state::{ApiKey, AppState, Models, ServerOptions};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another --port or --hostname (port 0 picks a free port)")]
    Bind {
        /// What was asked for (`HOST:PORT`).
        addr: String,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A model failed to load.
    #[error("cannot load model {model}")]
    Load {
        /// The model reference.
        model: String,
        /// Why.
        #[source]
        source: ApiError,
    },
    /// `--api-key` (or `DARTBOARD_API_KEY`) is empty.
    #[error("the API key is empty; set --api-key (or DARTBOARD_API_KEY) to a secret, or leave it unset to serve without one")]
    EmptyApiKey,
    /// A limit is 0.
    #[error("{flag} must be at least 1")]
    ZeroLimit {
        /// The flag.
        flag: &'static str,
    },
    /// The runtime or the listener failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The model loading thread panicked.
    #[error("model loading stopped unexpectedly: {0}")]
    LoaderPanicked(String),
}

impl ServerOptions {
    fn check(&self) -> Result<(), ServeError> {
        for (value, flag) in [
            (self.max_concurrent_requests, "--max-concurrent-requests"),
            (self.max_client_batch_size, "--max-client-batch-size"),
            (self.payload_limit, "--payload-limit"),
            (self.max_batch_tokens, "--max-batch-tokens"),
        ] {
            if value == 0 {
                return Err(ServeError::ZeroLimit { flag });
            }
        }
        Ok(())
    }
}

/// The routes over `state`. `/health` and `/metrics` are open (orchestrators and
/// scrapers probe them without credentials); every other route needs the API key
/// when one is set; the model routes pass admission control.
pub fn router(state: AppState) -> Router {
    let model_routes = Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    let protected = model_routes
        .route("/info", get(tei::info))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let open = Router::new().route("/health", get(tei::health)).route("/metrics", get(metrics_text));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(state.options().payload_limit))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        // A span per request (method and path, never headers, so never the API key),
        // carried by the model handle to the worker's forward pass.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Embeds `texts` through the handle and applies `dimensions`; checks what can be
/// checked before queueing so a bad request costs no model time.
pub(crate) async fn embed(
    state: &AppState,
    api: Api,
    model: &EmbeddingModel,
    texts: Vec<String>,
    prompt: PromptChoice,
    truncate: bool,
    dimensions: Option<usize>,
) -> Result<(Embeddings, Vec<usize>), HttpError> {
    let dim = model.embedding_dim();
    if let Some(d) = dimensions {
        if d == 0 || d > dim {
            return Err(HttpError::invalid(
                api,
                format!("`dimensions` is {d}; this model's embeddings have {dim}, so use a value from 1 to {dim}"),
            )
            .param("dimensions"));
        }
    }
    let answer =
        model.embed_async(EmbedRequest { texts, prompt, truncate }).await.map_err(|e| HttpError::from_api(api, e))?;
    state.metrics().observe_request_tokens(answer.token_counts.iter().sum());
    let rows = match dimensions {
        Some(d) => answer.embeddings.truncate_dim(d).map_err(|e| HttpError::from_api(api, ApiError::Model(e)))?,
        None => answer.embeddings,
    };
    Ok((rows, answer.token_counts))
}

/// Admission control for the model routes: a slot for the whole request (body read
/// included), or 429 at once.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let api = Api::of_path(request.uri().path());
    match state.admit(api) {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(refused) => refused.into_response(),
    }
}

/// `Authorization: Bearer KEY` when a key is set; 401 otherwise. The header is
/// never logged.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &state.options().api_key else {
        return next.run(request).await;
    };
    let api = Api::of_path(request.uri().path());
    let presented = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes).and_then(|value| {
        // The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
        let (scheme, token) = value.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
    });
    match presented {
        Some(token) if key.matches(token) => next.run(request).await,
        Some(_) => HttpError::new(api, StatusCode::UNAUTHORIZED, Kind::Unauthorized, "the API key is not valid")
            .into_response(),
        None => HttpError::new(
            api,
            StatusCode::UNAUTHORIZED,
            Kind::Unauthorized,
            "this server needs an API key: send `Authorization: Bearer KEY`",
        )
        .into_response(),
    }
}

/// Counts every answer by route and status, with its latency.
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = metrics::route_label(request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics().observe_request(route, response.status().as_u16(), started.elapsed());
    response
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let models = state.models(Api::Tei).ok();
    let gauges = metrics::Gauges {
        embed_queue: models.map_or(0, |m| m.embedder.queue_depth()),
        rerank_queue: models.and_then(|m| m.reranker.as_ref()).map(|r| r.queue_depth()),
        in_flight: state.in_flight(),
        max_concurrent: state.options().max_concurrent_requests,
        ready: state.is_ready(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics().render(&gauges))
        .into_response()
}

async fn not_found(request: Request) -> HttpError {
    let path = request.uri().path();
    HttpError::new(
        Api::of_path(path),
        StatusCode::NOT_FOUND,
        Kind::NotFound,
        format!(
            "no route {} {path}; the routes are POST /v1/embeddings, POST /embed, POST /rerank, GET /health, GET /info, GET /metrics",
            request.method()
        ),
    )
}

async fn method_not_allowed(request: Request) -> HttpError {
    let path = request.uri().path();
    let expected = match path {
        "/health" | "/info" | "/metrics" => "GET",
        _ => "POST",
    };
    HttpError::new(
        Api::of_path(path),
        StatusCode::METHOD_NOT_ALLOWED,
        Kind::MethodNotAllowed,
        format!("{path} does not take {}; use {expected}", request.method()),
    )
}

/// Serves on `listener` until `shutdown` completes, then stops accepting and lets
/// every request in flight finish. The models come from `load`, run on a blocking
/// thread after the listener is already answering (503 until then, so an
/// orchestrator can probe `/health` during a long download); if loading fails the
/// server stops and the error is returned.
pub async fn serve<L, S>(listener: TcpListener, options: ServerOptions, load: L, shutdown: S) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Models, ServeError> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    options.check()?;
    let state = AppState::new(options);
    let app = router(state.clone());
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<ServeError>();
    let loader = tokio::task::spawn_blocking(load);
    let installer = state.clone();
    tokio::spawn(async move {
        let outcome = match loader.await {
            Ok(Ok(models)) => {
                let info = models.embedder.info();
                tracing::info!(model = %info.name, dim = info.dim, device = %info.device, "ready: serving requests");
                installer.install(models);
                return;
            }
            Ok(Err(err)) => err,
            Err(join) => ServeError::LoaderPanicked(join.to_string()),
        };
        let _ = failed_tx.send(outcome);
    });
    // The stop future must be 'static, so a load failure comes back through a slot.
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = std::sync::Arc::clone(&failure);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down: no new connections; finishing the requests in flight");
            }
            Ok(err) = failed_rx => {
                tracing::error!("{err}; shutting down");
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
            }
        }
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(stop).into_future();
    // The drain is bounded: a client that never finishes sending its body (or a
    // connection kept open) must not hold the process past an orchestrator's grace
    // period. Requests still running after DRAIN_LIMIT are dropped with the process.
    let drain_deadline = async move {
        match stopping_rx.await {
            Ok(()) => tokio::time::sleep(DRAIN_LIMIT).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = server => served?,
        () = drain_deadline => {
            tracing::warn!("requests still in flight {} s after the stop signal; exiting without them", DRAIN_LIMIT.as_secs());
        }
    }
    let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failure {
        Some(err) => Err(err),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// How long requests in flight may take to finish after a stop signal; less than
/// Kubernetes' default 30 s grace period, so the process exits on its own first.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(25);

/// Resolves on SIGTERM or SIGINT. The handlers are installed by this call, before
/// the address is announced, so a signal sent as soon as the server says it is
/// listening is never the default (fatal) one.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// The whole `dartboard serve` process: a tokio runtime, signal handlers, the
/// listener on `hostname:port` (port 0 picks a free one), the line
/// `listening on http://ADDR`, then [`serve`] until SIGTERM/SIGINT.
pub fn run<L>(hostname: &str, port: u16, options: ServerOptions, load: L) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Models, ServeError> + Send + 'static,
{
    options.check()?;
    // HTTP work is light next to the model (which has its own thread and libtorch's
    // pool); a few workers parse, serialise and wait, without taking every core.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).thread_name("http").enable_all().build()?;
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let listener = TcpListener::bind((hostname, port))
            .await
            .map_err(|source| ServeError::Bind { addr: format!("{hostname}:{port}"), source })?;
        let addr: SocketAddr = listener.local_addr()?;
        tracing::info!("listening on http://{addr}");
        serve(listener, options, load, shutdown).await
    });
    // A model still loading (a signal during a long download) must not hold the
    // process: the loader thread is left to the process exit.
    runtime.shutdown_background();
    result
}
