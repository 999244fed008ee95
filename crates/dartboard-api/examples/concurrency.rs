//! Many threads, one model: texts per second when each of `THREADS` threads
//! embeds `PER_THREAD` STS-B sentences one at a time, through a
//! `Mutex<SentenceEmbedder>` (what dartboard-api did before the worker) and
//! through the batching [`EmbeddingModel`] handle, alternating over rounds.
//!
//! ```text
//! cargo run --release -p dartboard-api --example concurrency [-- THREADS PER_THREAD ROUNDS]
//! ```
//!
//! The model is the configured one (`EMBEDDING_MODEL`, default all-MiniLM-L6-v2,
//! from the cache); texts are sentence 1 of `data/stsbenchmark/sts-test.csv`
//! (`DARTBOARD_DATA_DIR` points elsewhere). Both sides must return the same rows;
//! the run fails if a single value differs.

use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use dartboard_api::config::{EmbeddingConfig, Overrides};
use dartboard_api::embeddings::SentenceEmbedder;
use dartboard_api::{BatchEvent, BatchOptions, EmbeddingModel};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let threads = args.first().copied().unwrap_or(32).max(1);
    let per_thread = args.get(1).copied().unwrap_or(50).max(1);
    let rounds = args.get(2).copied().unwrap_or(3).max(1);

    // As `embedding_model()` and the `dartboard` binary do, for both sides alike.
    dartboard_api::embeddings::retain_freed_memory();
    let texts = sts_sentences(threads * per_thread)?;
    let config = EmbeddingConfig::load(&Overrides::default())?;
    let locked = Mutex::new(SentenceEmbedder::from_config(&config)?);
    let handle = EmbeddingModel::from_embedder(
        SentenceEmbedder::from_config(&config)?,
        config.model.clone(),
        BatchOptions::default(),
    )?;
    let batches = Arc::new(Mutex::new((0usize, 0usize)));
    let seen = Arc::clone(&batches);
    handle.on_batch(Arc::new(move |e: &BatchEvent| {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.0 += 1;
        seen.1 += e.requests;
    }));
    println!(
        "{} ({}, {}), {threads} threads x {per_thread} texts, one text per call, {rounds} rounds, libtorch threads {}",
        config.model,
        handle.device(),
        config.dtype,
        dartboard_api::embeddings::intra_op_threads()
    );

    // Warm-up, and the check that both give the same rows.
    let mutex_rows =
        run(threads, per_thread, &texts, |t| Ok(locked.lock().unwrap_or_else(|p| p.into_inner()).encode_one(t)?))?;
    let handle_rows = run(threads, per_thread, &texts, |t| Ok(handle.encode_one(t)?))?;
    if mutex_rows != handle_rows {
        return Err("the handle's embeddings differ from the mutex-guarded embedder's".into());
    }
    println!("rows identical: {} texts, bit for bit", mutex_rows.len());

    let (mut mutex_rates, mut handle_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let started = Instant::now();
        run(threads, per_thread, &texts, |t| Ok(locked.lock().unwrap_or_else(|p| p.into_inner()).encode_one(t)?))?;
        let mutex_rate = texts.len() as f64 / started.elapsed().as_secs_f64();
        *batches.lock().unwrap_or_else(|p| p.into_inner()) = (0, 0);
        let started = Instant::now();
        run(threads, per_thread, &texts, |t| Ok(handle.encode_one(t)?))?;
        let handle_rate = texts.len() as f64 / started.elapsed().as_secs_f64();
        let (count, requests) = *batches.lock().unwrap_or_else(|p| p.into_inner());
        println!(
            "round {round}: mutex {mutex_rate:8.1} texts/s   handle {handle_rate:8.1} texts/s   ratio {:.2}x   ({count} batches, {:.1} requests each)",
            handle_rate / mutex_rate,
            requests as f64 / count.max(1) as f64
        );
        mutex_rates.push(mutex_rate);
        handle_rates.push(handle_rate);
    }
    let (m, h) = (median(&mut mutex_rates), median(&mut handle_rates));
    println!("median: mutex {m:.1} texts/s, handle {h:.1} texts/s, ratio {:.2}x", h / m);
    Ok(())
}

/// Runs `threads` threads, thread `i` embedding its `per_thread` texts one call at
/// a time, all released together; returns the rows in text order.
fn run(
    threads: usize,
    per_thread: usize,
    texts: &[String],
    embed: impl Fn(&str) -> Result<Vec<f32>, Error> + Sync,
) -> Result<Vec<Vec<f32>>, Error> {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = texts
            .chunks(per_thread)
            .map(|chunk| {
                let (start, embed) = (&start, &embed);
                s.spawn(move || {
                    start.wait();
                    chunk.iter().map(|t| embed(t)).collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut rows = Vec::with_capacity(texts.len());
        for worker in workers {
            rows.extend(worker.join().map_err(|_| "a thread panicked")??);
        }
        Ok(rows)
    })
}

/// The first `n` distinct sentence-1 texts of STS-B test (tab-separated; the sixth
/// field), repeated if there are fewer.
fn sts_sentences(n: usize) -> Result<Vec<String>, Error> {
    let dir = std::env::var_os("DARTBOARD_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data"));
    let path = dir.join("stsbenchmark/sts-test.csv");
    let content =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e} (set DARTBOARD_DATA_DIR)", path.display()))?;
    let sentences: Vec<String> = content.lines().filter_map(|l| l.split('\t').nth(5)).map(str::to_owned).collect();
    if sentences.is_empty() {
        return Err(format!("{} holds no sentences", path.display()).into());
    }
    Ok(sentences.iter().cycle().take(n).cloned().collect())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
