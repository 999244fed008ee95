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
//!   per architecture and the registry); pooling is shared and never knows which
//!   one ran.
//! - [`EmbedError`] names the file and the fix for everything that can go wrong.
//! - On the CPU, linear layers run libtorch's oneDNN kernels, and attention and
//!   LayerNorm our own AVX-512 kernels (`backend/cpp/`), each with an aten
//!   fallback; why, with measurements, is in `docs/benchmarks.md`.
//!
//! Inside, modules point one way: `spec` (file formats, no tensors) and `backend`
//! (the only unsafe/FFI code) at the bottom, `weights` and `layers` on them,
//! `models` (architectures and their registry) on those, `pipeline` on top.
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

mod backend;
mod encoder;
mod error;
mod layers;
mod models;
mod pipeline;
mod spec;
mod weights;

pub use backend::allocator::retain_freed_memory;
pub use backend::device::{cuda_available, device_name, kind_of, resolve_device, LIBTORCH_LIB_DIR};
pub use encoder::{Encoder, EncoderInput, EncoderLimits};
pub use error::EmbedError;
pub use models::SUPPORTED as SUPPORTED_MODEL_TYPES;
pub use pipeline::cross_encoder::{CrossEncoder, PairScores, PairTokenizer, ScoreActivation, TokenizedPairs};
pub use pipeline::embedder::{EmbedTokenizer, LoadOptions, Overlong, Prompt, SentenceEmbedder, Tokenized};
pub use pipeline::embeddings::Embeddings;
pub use pipeline::pooling::normalize;
pub use pipeline::quantize::{
    quantize, quantize_rows, ParsePrecisionError, Precision, QuantizationRanges, Quantized, QuantizedData,
    RangesBuilder,
};
pub use pipeline::tokenize::{check_input_sizes, MAX_REQUEST_BYTES, MAX_TEXT_BYTES};
pub use spec::modules::{AfterPooling, DenseActivation, DenseSpec, Pipeline, Prompts};
pub use spec::pooling::{Pooling, PoolingMode};

/// The libtorch version `tch` requires; torch-sys refuses to build against any other.
pub const LIBTORCH_VERSION: &str = "2.13.0";

/// Threads libtorch uses for one operator.
pub fn intra_op_threads() -> i32 {
    tch::get_num_threads()
}

/// Which libtorch kernel [`measure_gemm_gflops`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernel {
    /// The route this crate's models take (their linear layers): oneDNN on the CPU.
    Model,
    /// Plain `matmul`, as PyTorch's f32 `nn.Linear` runs it on the CPU (MKL).
    Matmul,
}

/// This machine's matrix-product speed in GFLOP/s: the fastest of `repeat`
/// products of two `size × size` matrices in `dtype` on the CPU, through `kernel`
/// (the ceiling the benchmark compares model throughput with).
pub fn measure_gemm_gflops(
    dtype: dartboard_config::DType,
    size: i64,
    repeat: usize,
    kernel: GemmKernel,
) -> Result<f64, EmbedError> {
    let _guard = tch::no_grad_guard();
    let options = (kind_of(dtype), tch::Device::Cpu);
    let a = tch::Tensor::f_randn([size, size], options)?;
    let b = tch::Tensor::f_randn([size, size], options)?;
    let product = || match kernel {
        GemmKernel::Model => layers::linear(&a, &b, None),
        GemmKernel::Matmul => Ok(a.f_matmul(&b)?),
    };
    let _ = product()?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let started = std::time::Instant::now();
        let c = product()?;
        c.f_sum(c.kind())?.f_double_value(&[])?; // force completion
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(2.0 * (size as f64).powi(3) / best / 1e9)
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
