//! `dartboard rerank`: a cross-encoder scores every passage against the query.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use dartboard_config::{DType, DeviceSpec, EmbeddingConfig, Overrides};
use dartboard_embeddings::CrossEncoder;
use dartboard_hub::progress::ConsoleProgress;

/// The seed's reranker.
const DEFAULT_RERANKER: &str = "cross-encoder/ms-marco-MiniLM-L-12-v2";

#[derive(Args)]
pub struct RerankArgs {
    /// The query.
    #[arg(long)]
    query: String,
    /// Cross-encoder: ORG/NAME[@REVISION] or a local directory.
    #[arg(long, default_value = DEFAULT_RERANKER)]
    model: String,
    /// cpu, cuda, cuda:N or auto [env: EMBEDDING_DEVICE]
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Compute precision: f32, bf16 or f16 [env: EMBEDDING_DTYPE]
    #[arg(long)]
    dtype: Option<DType>,
    /// Read passages from FILE (one per line; every line is a passage). `-` is stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "passages")]
    input: Option<PathBuf>,
    /// Passages to score.
    passages: Vec<String>,
}

pub fn run(args: RerankArgs) -> Result<()> {
    let passages = match &args.input {
        Some(path) => crate::files::read_lines(path)?,
        None if !args.passages.is_empty() => args.passages.clone(),
        None => bail!("no passages to rerank: pass them as arguments or with --input FILE"),
    };
    let config = EmbeddingConfig::load(&Overrides { device: args.device, dtype: args.dtype, ..Overrides::default() })?;
    let model = CrossEncoder::from_config(&args.model, &config, &ConsoleProgress::new())
        .with_context(|| format!("cannot load cross-encoder {}", args.model))?;
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let scores = model.score(&args.query, &refs)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut out = BufWriter::new(std::io::stdout().lock());
    for index in order {
        let line = serde_json::json!({ "index": index, "score": scores[index], "text": passages[index] });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(out.flush()?)
}
