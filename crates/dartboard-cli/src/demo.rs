//! The Dartboard demo: embed a handful of documents about RAG and retrieve for one
//! question with the Dartboard algorithm, showing scores and timings.

use std::time::Instant;

use anyhow::Result;
use dartboard_retrieval::{dartboard, DartboardParams};

use crate::ModelArgs;

const QUERY: &str = "How does Dartboard improve RAG systems?";

const DOCUMENTS: [&str; 8] = [
    "Dartboard is a retrieval algorithm that selects passages by maximising relevant information gain.",
    "Dartboard improves RAG systems by choosing passages that are relevant to the query but not redundant with each other.",
    "Dartboard improves retrieval-augmented generation by picking relevant passages while avoiding near-duplicate ones.",
    "Retrieval-augmented generation (RAG) grounds a language model's answer in documents retrieved for the question.",
    "Plain top-k retrieval often returns several near-identical passages, wasting the language model's context window.",
    "Sentence embeddings map texts to vectors so that similar meanings end up close together.",
    "The Eiffel Tower is 330 metres tall and was completed in 1889.",
    "A good sourdough starter needs flour, water and a few days of patience.",
];

pub fn run(args: ModelArgs) -> Result<()> {
    let started = Instant::now();
    let (config, model) = args.load()?;
    let load_time = started.elapsed();
    println!(
        "Model: {} (dim={}, device={}, dtype={})",
        config.model,
        model.embedding_dim(),
        model.device(),
        config.dtype
    );

    let started = Instant::now();
    let documents = model.encode(&DOCUMENTS)?;
    let query = model.encode_one(QUERY)?;
    let encode_time = started.elapsed();

    let params = DartboardParams { sigma: 1.0, top_k: 3, triage_k: 8 };
    let picked = dartboard(&query, &documents.to_vecs(), &params)?;

    println!("\nQuery: {QUERY}");
    println!("Dartboard (sigma={}, top_k={}, triage_k={}):", params.sigma, params.top_k, params.triage_k);
    for (rank, selection) in picked.iter().enumerate() {
        println!(
            "  {}. [score {:.4}, cosine {:.4}] {}",
            rank + 1,
            selection.score,
            selection.similarity,
            DOCUMENTS[selection.index]
        );
    }
    println!("\nLoad time:   {:.1} ms", load_time.as_secs_f64() * 1e3);
    println!("Encode time: {:.1} ms for {} texts", encode_time.as_secs_f64() * 1e3, DOCUMENTS.len() + 1);
    Ok(())
}
