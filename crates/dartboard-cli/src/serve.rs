//! `dartboard serve`: the HTTP server (`dartboard-server`) with the model flags every
//! command takes, plus the server's own. Each server flag has a `DARTBOARD_*`
//! variable (for containers); the defaults are text-embeddings-inference's (port
//! 3000, 512 concurrent requests, 16384 batch tokens, 32 inputs per request, 2 MB
//! bodies).

use anyhow::{Context, Result};
use clap::Args;
use dartboard_api::{BatchOptions, EmbeddingModel, RerankModel};
use dartboard_server::{ApiKey, Models, ServeError, ServerOptions};

use crate::ModelArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (0.0.0.0: every interface; 127.0.0.1: this machine only)
    #[arg(long, env = "DARTBOARD_HOSTNAME", default_value = "0.0.0.0")]
    hostname: String,
    /// Port to listen on; 0 picks a free one (the log line `listening on http://ADDR` names it)
    #[arg(long, short, env = "DARTBOARD_PORT", default_value_t = 3000)]
    port: u16,
    /// Token budget of one batch built from queued requests
    #[arg(long, env = "DARTBOARD_MAX_BATCH_TOKENS", default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch_tokens: u64,
    /// Requests handled at once; one more is answered 429 at once
    #[arg(long, env = "DARTBOARD_MAX_CONCURRENT_REQUESTS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent_requests: u64,
    /// Most inputs one request may carry; more is answered 413
    #[arg(long, env = "DARTBOARD_MAX_CLIENT_BATCH_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    max_client_batch_size: u64,
    /// Largest request body in bytes; larger is answered 413
    #[arg(long, env = "DARTBOARD_PAYLOAD_LIMIT", default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    payload_limit: u64,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics
    #[arg(long, env = "DARTBOARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Cross-encoder to serve POST /rerank with: ORG/NAME[@REVISION] or a local directory
    #[arg(long, value_name = "MODEL", env = "DARTBOARD_RERANKER")]
    reranker: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let config = args.model.config()?;
    let as_usize = |v: u64, flag: &str| usize::try_from(v).with_context(|| format!("{flag} {v} is too large"));
    let max_batch_tokens = as_usize(args.max_batch_tokens, "--max-batch-tokens")?;
    let max_concurrent_requests = as_usize(args.max_concurrent_requests, "--max-concurrent-requests")?;
    let options = ServerOptions {
        max_concurrent_requests,
        max_client_batch_size: as_usize(args.max_client_batch_size, "--max-client-batch-size")?,
        payload_limit: as_usize(args.payload_limit, "--payload-limit")?,
        max_batch_tokens,
        api_key: args.api_key.as_deref().map(ApiKey::new).transpose()?,
    };
    // The admission semaphore already bounds requests in flight; the handles' queues
    // get the same bound, so their `Busy` is a backstop, not a second, smaller limit.
    let batching = move || BatchOptions { max_batch_tokens, max_queued: max_concurrent_requests };
    let reranker = args.reranker;
    let load = move || {
        let embedder = EmbeddingModel::with_options(&config, batching())
            .map_err(|source| ServeError::Load { model: config.model.clone(), source })?;
        let reranker = match reranker {
            Some(name) => Some(
                RerankModel::new(&name, &config, batching())
                    .map_err(|source| ServeError::Load { model: name, source })?,
            ),
            None => None,
        };
        Ok(Models { embedder, reranker })
    };
    dartboard_server::run(&args.hostname, args.port, options, load)?;
    Ok(())
}
