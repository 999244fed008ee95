//! `dartboard bench`: throughput of one model on one corpus at one batch size, as a
//! JSON object on stdout. `cargo xtask bench` runs it for every configuration beside
//! the same measurement of sentence-transformers and builds the report.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Corpus: one text per line.
    #[arg(long, value_name = "FILE", required_unless_present = "gemm_peak")]
    input: Option<PathBuf>,
    /// Timed passes over the corpus; the fastest counts.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Write the embeddings (little-endian f32, row-major) to FILE.
    #[arg(long, value_name = "FILE")]
    embeddings_out: Option<PathBuf>,
    /// Instead: measure this machine's matrix-product peak in f32 and bf16.
    #[arg(long)]
    gemm_peak: bool,
}

#[derive(Deserialize)]
struct Shape {
    hidden_size: f64,
    intermediate_size: f64,
    num_hidden_layers: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.gemm_peak {
        return gemm_peak();
    }
    let input = args.input.as_ref().expect("clap requires --input");
    let texts = crate::files::read_lines(input)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = Instant::now();
    let (config, model) = args.model.load_embedder()?;
    let load_seconds = started.elapsed().as_secs_f64();

    // Useful work: what an unpadded forward pass costs (per layer: QKV and output
    // projections 8·H², feed-forward 4·H·I per token, attention 4·n·H per token).
    let shape: Shape = serde_json::from_slice(&std::fs::read(model.files().path("config.json"))?)
        .context("reading the model's config.json for its shape")?;
    let tokens = model.token_counts(&refs)?;
    let flops: f64 = tokens
        .iter()
        .map(|&n| {
            let n = n as f64;
            let (h, i) = (shape.hidden_size, shape.intermediate_size);
            2.0 * shape.num_hidden_layers * (n * (4.0 * h * h + 2.0 * h * i) + 2.0 * n * n * h)
        })
        .sum();

    model.encode(&refs[..refs.len().min(64)])?; // warm-up: allocator, oneDNN kernels
    let mut best = f64::INFINITY;
    let mut embeddings = None;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let e = model.encode(&refs)?;
        best = best.min(t.elapsed().as_secs_f64());
        embeddings = Some(e);
    }
    if let (Some(path), Some(e)) = (&args.embeddings_out, &embeddings) {
        let bytes: Vec<u8> = e.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let report = serde_json::json!({
        "impl": "dartboard",
        "model": config.model,
        "dtype": config.dtype.to_string(),
        "batch_size": config.batch_size,
        "texts": refs.len(),
        "tokens": tokens.iter().sum::<usize>(),
        "useful_flops": flops,
        "seconds": best,
        "texts_per_s": refs.len() as f64 / best,
        "gflops": flops / best / 1e9,
        "load_seconds": load_seconds,
        "threads": dartboard_embeddings::intra_op_threads(),
        "peak_rss_kb": peak_rss_kb(),
    });
    writeln!(std::io::stdout(), "{report}")?;
    Ok(())
}

fn gemm_peak() -> Result<()> {
    use dartboard_config::DType;
    use dartboard_embeddings::{measure_gemm_gflops, GemmKernel};
    let mut out = serde_json::Map::new();
    // The model's own kernels set the ceiling; MKL's f32 figure shows the one
    // PyTorch's f32 nn.Linear is held to on this CPU.
    for (name, dtype, kernel) in [
        ("f32", DType::F32, GemmKernel::Model),
        ("bf16", DType::Bf16, GemmKernel::Model),
        ("f32_matmul", DType::F32, GemmKernel::Matmul),
    ] {
        out.insert(format!("{name}_gflops"), measure_gemm_gflops(dtype, 2048, 5, kernel)?.into());
    }
    writeln!(std::io::stdout(), "{}", serde_json::Value::Object(out))?;
    Ok(())
}

/// The process's peak resident set (VmHWM), in KiB.
pub(crate) fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
