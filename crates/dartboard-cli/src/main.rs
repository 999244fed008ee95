//! `dartboard`: embed texts, inspect the setup, run the Dartboard demo.
//!
//! Thin on purpose: flags become [`dartboard_config::Overrides`], and everything else
//! is the library crates' work. Errors print their whole chain and exit non-zero.

mod bench;
mod cache;
mod demo;
mod embed;
mod files;
mod push;
mod rerank;
mod serve;

use std::io;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use dartboard_api::EmbeddingModel;
use dartboard_config::{DType, DeviceSpec, EmbeddingConfig, Overrides};
use dartboard_embeddings::SentenceEmbedder;

#[derive(Parser)]
#[command(name = "dartboard", version, about = "Sentence embeddings on libtorch, the sentence-transformers way")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts and write one JSON line `{"embedding":[...]}` per text, in input order.
    Embed(embed::EmbedArgs),
    /// Show the active model, its dimension, device, cache and libtorch.
    Info(ModelArgs),
    /// Embed eight sample documents and retrieve for a query with Dartboard.
    Demo(ModelArgs),
    /// Score passages against a query with a cross-encoder, best first, as JSON Lines.
    Rerank(rerank::RerankArgs),
    /// Serve embeddings over HTTP: OpenAI's /v1/embeddings and text-embeddings-inference's /embed and /rerank.
    Serve(serve::ServeArgs),
    /// Measure throughput on a corpus (what `cargo xtask bench` runs).
    Bench(bench::BenchArgs),
    /// Download models into the cache for later offline use (e.g. in a Docker build).
    Prefetch(cache::PrefetchArgs),
    /// Inspect and manage the model cache.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Upload a model folder, or mirror a cached model, to a Hub repository (HF_ENDPOINT).
    Push(push::PushArgs),
}

/// Flags shared by every command that loads a model; each beats its environment
/// variable, which beats the config file.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Model name (all-MiniLM-L6-v2), ORG/NAME[@REVISION], or a local directory [env: EMBEDDING_MODEL]
    #[arg(long)]
    model: Option<String>,
    /// cpu, cuda, cuda:N or auto [env: EMBEDDING_DEVICE]
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Compute precision: f32, bf16 or f16 [env: EMBEDDING_DTYPE]
    #[arg(long)]
    dtype: Option<DType>,
    /// Texts per forward pass [env: EMBEDDING_BATCH_SIZE]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
}

impl ModelArgs {
    fn config(&self) -> Result<EmbeddingConfig> {
        let overrides = Overrides {
            model: self.model.clone(),
            device: self.device,
            dtype: self.dtype,
            batch_size: self.batch_size.map(|b| b as usize),
            ..Overrides::default()
        };
        Ok(EmbeddingConfig::load(&overrides)?)
    }

    pub(crate) fn load_embedder(&self) -> Result<(EmbeddingConfig, SentenceEmbedder)> {
        let config = self.config()?;
        let model = SentenceEmbedder::from_config(&config)
            .with_context(|| format!("cannot load embedding model {}", config.model))?;
        Ok((config, model))
    }

    fn load(&self) -> Result<(EmbeddingConfig, EmbeddingModel)> {
        let config = self.config()?;
        let model =
            EmbeddingModel::new(&config).with_context(|| format!("cannot load embedding model {}", config.model))?;
        Ok((config, model))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dartboard_api::init_tracing();
    dartboard_embeddings::retain_freed_memory();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Info(args) => info(args),
        Command::Demo(args) => demo::run(args),
        Command::Rerank(args) => rerank::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Prefetch(args) => cache::prefetch(args),
        Command::Cache(command) => cache::run(command),
        Command::Push(args) => push::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<embed::Interrupted>().is_some() => {
            eprintln!("dartboard: {err}");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

fn info(args: ModelArgs) -> Result<()> {
    let config = args.config()?;
    println!("model:            {}", config.model);
    println!("device:           {}", config.device);
    println!("dtype:            {}", config.dtype);
    println!("batch size:       {}", config.batch_size);
    println!("cache dir:        {}", config.cache_dir.display());
    if let Some(file) = &config.config_file {
        println!("config file:      {}", file.display());
    }
    println!(
        "libtorch:         {} ({})",
        dartboard_embeddings::LIBTORCH_VERSION,
        dartboard_embeddings::LIBTORCH_LIB_DIR
    );
    println!("cuda available:   {}", dartboard_embeddings::cuda_available());
    println!("threads:          {}", dartboard_embeddings::intra_op_threads());
    let started = Instant::now();
    let model = SentenceEmbedder::from_config(&config)
        .with_context(|| format!("cannot load embedding model {}", config.model))?;
    println!("model files:      {}", model.files().dir().display());
    if let Some(revision) = model.files().revision() {
        println!("revision:         {revision}");
    }
    println!("embedding dim:    {}", model.embedding_dim());
    println!("max seq length:   {}", model.max_seq_length());
    println!("running on:       {}", model.device_name());
    println!("load time:        {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
