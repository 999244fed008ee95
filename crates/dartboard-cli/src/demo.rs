//! The Dartboard demo: the Dartboard RAG system's own `demo_dartboard.py`, on
//! dartboard-rs. It embeds the system's eight sample documents, retrieves for its
//! query with the same parameters (σ = 1.0, top_k = 3, triage_k = 8, cosine) and
//! prints each pick with the score the system prints, the query's cosine distance
//! to it, plus load and encode times. It runs with whatever model is configured.
//!
//! The documents, query and parameters live in `demo.json`, which
//! `xtask/python/seed_demo.py` also reads to compute the system's picks from
//! sentence-transformers' embeddings; the CLI tests compare the two.

use std::time::Instant;

use anyhow::{Context, Result};
use dartboard_retrieval::{dartboard, DartboardParams};
use serde::Deserialize;

use crate::ModelArgs;

#[derive(Deserialize)]
struct Demo {
    query: String,
    sigma: f64,
    top_k: usize,
    triage_k: usize,
    documents: Vec<String>,
}

pub fn run(args: ModelArgs) -> Result<()> {
    // Compiled in, so a broken file fails the tests, never a user.
    let demo: Demo = serde_json::from_str(include_str!("demo.json")).context("demo.json is malformed")?;

    println!("Dartboard RAG demo\n");
    println!("Loading embedding model...");
    let started = Instant::now();
    let (config, model) = args.load()?;
    let load_time = started.elapsed();
    println!(
        "Model loaded: {} (dim={}, device={}, dtype={})\n",
        config.model,
        model.embedding_dim(),
        model.device(),
        config.dtype
    );

    println!("Embedding {} documents...", demo.documents.len());
    let started = Instant::now();
    let texts: Vec<&str> = demo.documents.iter().map(String::as_str).collect();
    let documents = model.encode(&texts)?;
    let query = model.encode_one(&demo.query)?;
    let encode_time = started.elapsed();

    let params = DartboardParams { sigma: demo.sigma, top_k: demo.top_k, triage_k: demo.triage_k };
    let picked = dartboard(&query, &documents.to_vecs(), &params)?;
    println!(
        "Dartboard retriever: sigma={:.1}, top_k={}, triage_k={}, cosine distances\n",
        params.sigma, params.top_k, params.triage_k
    );
    println!("Query: '{}'\n", demo.query);
    println!("Top {} results:\n", picked.len());
    for (rank, selection) in picked.iter().enumerate() {
        // The system's score is the query's cosine distance to the pick.
        println!("{}. [Score: {:.4}]", rank + 1, selection.distance());
        println!("   {}\n", demo.documents[selection.index]);
    }
    println!("Load time:   {:.1} ms", load_time.as_secs_f64() * 1e3);
    println!("Encode time: {:.1} ms for {} texts", encode_time.as_secs_f64() * 1e3, demo.documents.len() + 1);
    Ok(())
}
