//! [`SentenceEmbedder`]: tokenizer, encoder, pooling and normalization assembled
//! from a model directory, with sentence-transformers' `encode` behaviour.

use std::path::Path;

use dartboard_config::{DType, DeviceSpec, EmbeddingConfig};
use dartboard_hub::progress::LogProgress;
use dartboard_hub::{ModelFiles, ModelHub, ModelRef};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use tracing::{debug_span, info_span};

use crate::device::{device_name, kind_of, resolve_device};
use crate::pipeline::{read_json, Pipeline};
use crate::pooling::{normalize, Pooling};
use crate::tokenize::TextTokenizer;
use crate::{EmbedError, Embeddings, Encoder};

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where to run.
    pub device: DeviceSpec,
    /// Compute precision.
    pub dtype: DType,
    /// Texts per forward pass.
    pub batch_size: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { device: DeviceSpec::Cpu, dtype: DType::F32, batch_size: dartboard_config::DEFAULT_BATCH_SIZE }
    }
}

/// A sentence-transformers model ready to embed texts.
pub struct SentenceEmbedder {
    tokenizer: TextTokenizer,
    encoder: Box<dyn Encoder>,
    pooling: Pooling,
    normalize: bool,
    device: Device,
    dtype: DType,
    batch_size: usize,
    dim: usize,
    files: ModelFiles,
}

impl SentenceEmbedder {
    /// Finds the configured model (downloading it when it is not cached and
    /// `HF_HUB_OFFLINE` is not set) and loads it, checking a configured dimension
    /// against the model's real one.
    pub fn from_config(config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        let hub = ModelHub::from_env(&config.cache_dir);
        let files = hub.resolve(&ModelRef::parse(&config.model)?, &LogProgress)?;
        let options = LoadOptions { device: config.device, dtype: config.dtype, batch_size: config.batch_size };
        let embedder = Self::load(&files, options)?;
        config.check_dim(embedder.embedding_dim())?;
        Ok(embedder)
    }

    /// Loads the model in `files`.
    pub fn load(files: &ModelFiles, options: LoadOptions) -> Result<Self, EmbedError> {
        let _span = info_span!("load", model = %files.dir().display(), revision = files.revision()).entered();
        let device = resolve_device(options.device)?;
        let pipeline = Pipeline::read(files.dir())?;
        let encoder = crate::models::load_encoder(&pipeline.transformer_dir, kind_of(options.dtype), device)?;
        let max_length = token_limit(&pipeline, encoder.as_ref())?;
        let tokenizer =
            TextTokenizer::load(&pipeline.transformer_dir.join("tokenizer.json"), max_length, pipeline.do_lower_case)?;
        let dim = pipeline.pooling.output_dim(encoder.hidden_size()) as usize;
        Ok(SentenceEmbedder {
            tokenizer,
            encoder,
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            device,
            dtype: options.dtype,
            batch_size: options.batch_size.max(1),
            dim,
            files: files.clone(),
        })
    }

    /// Width of the embeddings.
    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The device as text (`cpu`, `cuda:0`).
    pub fn device_name(&self) -> String {
        device_name(self.device)
    }

    /// The compute precision.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the model files are.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The token limit texts are truncated to.
    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// Embeds one text.
    pub fn encode_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self.encode(&[text])?.row(0).to_vec())
    }

    /// Embeds texts; row `i` of the result belongs to `texts[i]`.
    ///
    /// Texts are tokenized once, sorted by token count (longest first, as
    /// sentence-transformers does) so each batch carries little padding, then put
    /// back in input order.
    pub fn encode(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        let mut out = vec![0f32; texts.len() * self.dim];
        if texts.is_empty() {
            return Ok(Embeddings::new(self.dim, out));
        }
        let encodings = self.tokenizer.encode(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));

        let _guard = tch::no_grad_guard();
        let mut pooled = Vec::new();
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<_> = chunk.iter().map(|&i| &encodings[i]).collect();
            let width = batch.first().map_or(0, |e| e.len());
            let _span = debug_span!("encode", batch = batch.len(), max_len = width).entered();
            let vectors = self.embed_batch(&batch)?;
            pooled.resize(chunk.len() * self.dim, 0.0);
            vectors.f_copy_data(&mut pooled, chunk.len() * self.dim)?;
            for (row, &index) in chunk.iter().enumerate() {
                out[index * self.dim..(index + 1) * self.dim]
                    .copy_from_slice(&pooled[row * self.dim..(row + 1) * self.dim]);
            }
        }
        Ok(Embeddings::new(self.dim, out))
    }

    /// One forward pass: `[B, dim]` f32 on the CPU, contiguous.
    fn embed_batch(&self, batch: &[&tokenizers::Encoding]) -> Result<Tensor, EmbedError> {
        let input = self.tokenizer.batch(batch, self.device)?;
        let tokens = self.encoder.forward(&input)?;
        // Pool in f32 whatever the compute precision: the sums over up to 512 tokens
        // are where bf16 would lose the most.
        let tokens = tokens.f_to_kind(Kind::Float)?;
        let mut pooled = self.pooling.forward(&tokens, &input.attention_mask)?;
        if self.normalize {
            pooled = normalize(&pooled)?;
        }
        Ok(pooled.f_to_device(Device::Cpu)?.f_contiguous()?)
    }
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

/// The token limit as sentence-transformers computes it: `max_seq_length` from
/// sentence_bert_config.json, else the smaller of the tokenizer's
/// `model_max_length` and what the position embeddings allow.
fn token_limit(pipeline: &Pipeline, encoder: &dyn Encoder) -> Result<usize, EmbedError> {
    let positions = encoder.max_positions();
    if let Some(limit) = pipeline.max_seq_length {
        return Ok(limit.min(positions));
    }
    let path = pipeline.transformer_dir.join("tokenizer_config.json");
    let from_tokenizer = if Path::new(&path).is_file() {
        let config: TokenizerConfig = read_json(&path)?;
        // Tokenizers without a limit store a huge sentinel (1e30).
        config.model_max_length.filter(|n| *n >= 1.0 && *n < 1e9).map(|n| n as usize)
    } else {
        None
    };
    Ok(from_tokenizer.map_or(positions, |n| n.min(positions)))
}
