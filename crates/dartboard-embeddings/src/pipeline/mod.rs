//! What runs a model end to end: tokenization, batching, the encoder, then either
//! sentence-transformers' modules after it (pooling, Dense, Normalize:
//! [`SentenceEmbedder`]) or a classification head ([`CrossEncoder`]). Both sit on
//! `Box<dyn Encoder>` and share one batching module; neither knows which
//! architecture runs.

mod batching;
pub(crate) mod cross_encoder;
pub(crate) mod embedder;
pub(crate) mod embeddings;
pub(crate) mod pooling;
pub(crate) mod quantize;
pub(crate) mod tokenize;
