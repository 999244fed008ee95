//! The sentence-transformers pipeline on libtorch (through `tch`): the only crate in
//! dartboard-rs that links libtorch.
//!
//! A model directory (as [`dartboard_hub`] finds it) is read the way
//! sentence-transformers reads it: `modules.json` lists the modules, the Transformer
//! module's `config.json` picks the architecture, `tokenizer.json` tokenizes,
//! `1_Pooling/config.json` pools and `Normalize` L2-normalizes.
//!
//! Brief overview:
//! - [`SentenceEmbedder`] is the public model: [`SentenceEmbedder::encode`] returns
//!   [`Embeddings`] that match `SentenceTransformer(...).encode(texts)`.
//! - [`Encoder`] is the trait every architecture implements ([`models`] has one file
//!   per architecture); [`pooling`] is shared and never knows which one ran.
//! - [`EmbedError`] names the file and the fix for everything that can go wrong.
//!
//! ```no_run
//! use dartboard_config::{EmbeddingConfig, Overrides};
//! use dartboard_embeddings::SentenceEmbedder;
//!
//! let config = EmbeddingConfig::load(&Overrides::default())?;
//! let model = SentenceEmbedder::from_config(&config)?;
//! let embeddings = model.encode(&["Dartboard picks diverse passages.", "Hello"])?;
//! assert_eq!(embeddings.len(), 2);
//! assert_eq!(embeddings.dim(), model.embedding_dim());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cross_encoder;
mod device;
mod embedder;
mod embeddings;
mod encoder;
mod error;
pub mod models;
mod pickle;
mod pipeline;
pub mod pooling;
mod tokenize;
mod weights;

pub use cross_encoder::{CrossEncoder, ScoreActivation};
pub use device::{device_name, kind_of, resolve_device};
pub use embedder::{LoadOptions, Prompt, SentenceEmbedder};
pub use embeddings::Embeddings;
pub use encoder::{Encoder, EncoderInput};
pub use error::EmbedError;
pub use pipeline::{AfterPooling, DenseActivation, DenseSpec, Pipeline, Prompts};

/// The libtorch version `tch` requires; torch-sys refuses to build against any other.
pub const LIBTORCH_VERSION: &str = "2.13.0";

/// The libtorch `lib/` directory this crate was linked against (and finds at run
/// time through the rpath).
pub const LIBTORCH_LIB_DIR: &str = env!("DARTBOARD_LIBTORCH_LIB");

/// Threads libtorch uses for one operator.
pub fn intra_op_threads() -> i32 {
    tch::get_num_threads()
}

/// Whether libtorch can use a CUDA device.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

#[cfg(test)]
mod send_check {
    // Models are handed to worker threads; keep that possible.
    fn assert_send<T: Send>() {}
    #[test]
    fn embedder_is_send() {
        assert_send::<super::SentenceEmbedder>();
        assert_send::<Box<dyn super::Encoder>>();
    }
}
