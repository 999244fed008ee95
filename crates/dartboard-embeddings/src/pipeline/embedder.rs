//! [`SentenceEmbedder`]: tokenizer, encoder, pooling and normalization assembled
//! from a model directory, with sentence-transformers' `encode` behaviour.
//!
//! `encode_with` is two halves a caller may also run apart, on different threads:
//! [`EmbedTokenizer::tokenize`] (texts and a prompt to [`Tokenized`]; the tokenizer
//! is `Send + Sync`, shared through an `Arc`) and
//! [`SentenceEmbedder::embed_tokenized`] (forward passes only, over any number of
//! [`Tokenized`] groups at once). dartboard-api's model worker does this: callers
//! tokenize on their own threads and the worker batches their groups together.
//! Since results do not depend on how texts are grouped into passes, a group's
//! rows are the same whether it runs alone or with others.

use std::sync::Arc;

use dartboard_config::{DType, DeviceSpec, EmbeddingConfig};
use dartboard_hub::progress::{LogProgress, Progress};
use dartboard_hub::{ModelFiles, ModelHub, ModelRef};
use tch::{Device, Kind, Tensor};
use tracing::{debug_span, info_span};

use super::batching;
use super::pooling::normalize;
use super::tokenize::{self, TextTokenizer};
use crate::backend::device::{device_name, kind_of, resolve_device};
use crate::encoder::Encoder;
use crate::encoder::EncoderLimits;
use crate::error::EmbedError;
use crate::pipeline::embeddings::Embeddings;
use crate::spec::modules::{AfterPooling, DenseActivation, Pipeline, Prompts};
use crate::spec::pooling::Pooling;
use crate::weights::Weights;

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

/// Finds `model` (a name, `org/name@rev` or a directory) in the cache configured by
/// `config`, downloading it when it is not cached and `HF_HUB_OFFLINE` is not set,
/// and the load options `config` asks for. Both pipelines load this way.
pub(crate) fn resolve(
    model: &str,
    config: &EmbeddingConfig,
    progress: &dyn Progress,
) -> Result<(ModelFiles, LoadOptions), EmbedError> {
    let hub = ModelHub::from_env(&config.cache_dir);
    let files = hub.resolve(&ModelRef::parse(model)?, progress)?;
    Ok((files, LoadOptions { device: config.device, dtype: config.dtype, batch_size: config.batch_size }))
}

/// Which prompt to prepend to every text (sentence-transformers' `prompt_name` /
/// `prompt` arguments of `encode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prompt<'a> {
    /// The model's `default_prompt_name`, if it has one.
    #[default]
    Default,
    /// No prompt, even if the model has a default.
    None,
    /// One of the model's named prompts (`"query"`).
    Name(&'a str),
    /// This text, prepended as is.
    Text(&'a str),
}

/// The tokenizing half of a [`SentenceEmbedder`] (its tokenizer, limit and
/// prompts): cheap to clone, `Send + Sync`, so any thread can tokenize for the
/// thread that owns the model.
#[derive(Clone)]
pub struct EmbedTokenizer {
    shared: Arc<TokenizerPart>,
}

struct TokenizerPart {
    tokenizer: TextTokenizer,
    prompts: Prompts,
}

/// Texts tokenized with one prompt by [`EmbedTokenizer::tokenize`], ready for
/// [`SentenceEmbedder::embed_tokenized`] (of the model they came from).
#[derive(Debug, Clone)]
pub struct Tokenized {
    encodings: Vec<tokenizers::Encoding>,
    /// Leading prompt tokens in each encoding, `None` without a prompt; pooling
    /// leaves them out when the model excludes prompts, so groups with different
    /// prompt lengths never share a forward pass.
    prompt_length: Option<i64>,
    /// The prompt text prepended (to measure untruncated lengths).
    prompt: Option<String>,
}

impl Tokenized {
    /// Number of texts.
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    /// Whether there are no texts.
    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Tokens of each text as embedded: special tokens and prompt included, after
    /// truncation.
    pub fn token_counts(&self) -> Vec<usize> {
        self.encodings.iter().map(|e| e.len()).collect()
    }

    /// All texts' tokens together (unpadded).
    pub fn total_tokens(&self) -> usize {
        self.encodings.iter().map(|e| e.len()).sum()
    }
}

/// A text longer than the model's token limit, as [`EmbedTokenizer::find_overlong`]
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlong {
    /// The text's index in the input.
    pub index: usize,
    /// Its tokens without truncation (special tokens and prompt included).
    pub tokens: usize,
    /// The model's limit.
    pub max: usize,
}

impl EmbedTokenizer {
    /// Tokenizes `texts` with `prompt` prepended to each, truncated to the limit,
    /// exactly as [`SentenceEmbedder::encode_with`] does before its passes.
    ///
    /// Fails on a text longer than [`crate::MAX_TEXT_BYTES`], on more than
    /// [`crate::MAX_REQUEST_BYTES`] in all, and on an unknown prompt name (unless
    /// `texts` is empty, as `encode_with`).
    pub fn tokenize(&self, texts: &[&str], prompt: Prompt<'_>) -> Result<Tokenized, EmbedError> {
        tokenize::check_input_sizes(texts.iter().copied())?;
        if texts.is_empty() {
            return Ok(Tokenized { encodings: Vec::new(), prompt_length: None, prompt: None });
        }
        let tokenizer = &self.shared.tokenizer;
        let prompt = self.prompt_text(prompt)?.filter(|p| !p.is_empty());
        let (encodings, prompt_length) = match prompt {
            Some(p) => {
                let prompted: Vec<String> = texts.iter().map(|t| format!("{p}{t}")).collect();
                let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
                (tokenizer.encode(&refs)?, Some(tokenizer.prompt_length(p)?))
            }
            None => (tokenizer.encode(texts)?, None),
        };
        Ok(Tokenized { encodings, prompt_length, prompt: prompt.map(str::to_owned) })
    }

    /// The first text of `tokenized` (tokenized from `texts`) that truncation
    /// shortened, with its whole length. Only texts filled to the limit are
    /// tokenized again, whole, so texts under the limit cost nothing more.
    pub fn find_overlong(&self, texts: &[&str], tokenized: &Tokenized) -> Result<Option<Overlong>, EmbedError> {
        let tokenizer = &self.shared.tokenizer;
        let max = tokenizer.max_length();
        for (index, (text, encoding)) in texts.iter().zip(&tokenized.encodings).enumerate() {
            // Truncation fills the limit exactly; a shorter encoding is whole.
            if encoding.len() < max {
                continue;
            }
            let tokens = match &tokenized.prompt {
                Some(p) => tokenizer.untruncated_length(&format!("{p}{text}"))?,
                None => tokenizer.untruncated_length(text)?,
            };
            if tokens > max {
                return Ok(Some(Overlong { index, tokens, max }));
            }
        }
        Ok(None)
    }

    /// The token limit texts are truncated to (special tokens included).
    pub fn max_length(&self) -> usize {
        self.shared.tokenizer.max_length()
    }

    /// The model's named prompts and its default prompt name.
    pub fn prompts(&self) -> &Prompts {
        &self.shared.prompts
    }

    fn prompt_text<'p>(&'p self, prompt: Prompt<'p>) -> Result<Option<&'p str>, EmbedError> {
        let prompts = &self.shared.prompts;
        let by_name = |name: &str| {
            prompts.named.get(name).map(String::as_str).ok_or_else(|| EmbedError::UnknownPrompt {
                name: name.to_owned(),
                available: prompts.named.keys().cloned().collect(),
            })
        };
        Ok(match prompt {
            Prompt::Default => prompts.default_name.as_deref().map(by_name).transpose()?,
            Prompt::None => None,
            Prompt::Name(name) => Some(by_name(name)?),
            Prompt::Text(text) => Some(text),
        })
    }
}

/// A module after pooling, loaded.
enum AfterPoolingLayer {
    Dense { weight: Tensor, bias: Option<Tensor>, activation: DenseActivation },
    Normalize,
}

/// A sentence-transformers model ready to embed texts.
pub struct SentenceEmbedder {
    tokenizer: EmbedTokenizer,
    encoder: Box<dyn Encoder>,
    pooling: Pooling,
    after_pooling: Vec<AfterPoolingLayer>,
    device: Device,
    dtype: DType,
    batch_size: usize,
    dim: usize,
    /// How errors name the model: its repo id, else its directory.
    model_name: String,
    files: ModelFiles,
}

impl SentenceEmbedder {
    /// Finds the configured model (downloading it when it is not cached and
    /// `HF_HUB_OFFLINE` is not set) and loads it, checking a configured dimension
    /// against the model's real one.
    pub fn from_config(config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        let (files, options) = resolve(&config.model, config, &LogProgress)?;
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
        check_tables(&pipeline, &tokenizer, encoder.limits())?;
        let dim = pipeline.output_dim(encoder.hidden_size()) as usize;
        let after_pooling = load_after_pooling(&pipeline, encoder.hidden_size(), device)?;
        Ok(SentenceEmbedder {
            tokenizer: EmbedTokenizer { shared: Arc::new(TokenizerPart { tokenizer, prompts: pipeline.prompts }) },
            encoder,
            pooling: pipeline.pooling,
            after_pooling,
            device,
            dtype: options.dtype,
            batch_size: options.batch_size.max(1),
            dim,
            model_name: files.repo_id().map_or_else(|| files.dir().display().to_string(), str::to_owned),
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

    /// Texts per forward pass from now on (at least 1): sentence-transformers'
    /// per-call `encode(batch_size=…)`, which the Python package passes through.
    pub fn set_batch_size(&mut self, batch_size: usize) {
        self.batch_size = batch_size.max(1);
    }

    /// The token limit texts are truncated to.
    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// How many tokens each text becomes (special tokens included, after truncation).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        tokenize::check_input_sizes(texts.iter().copied())?;
        Ok(self.text_tokenizer().encode(texts)?.iter().map(|e| e.len()).collect())
    }

    /// The model's named prompts and its default prompt name.
    pub fn prompts(&self) -> &Prompts {
        self.tokenizer.prompts()
    }

    /// The tokenizing half of the model, to tokenize on other threads for
    /// [`SentenceEmbedder::embed_tokenized`].
    pub fn tokenizer(&self) -> &EmbedTokenizer {
        &self.tokenizer
    }

    fn text_tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer.shared.tokenizer
    }

    /// Embeds one text (with the default prompt, if the model has one).
    pub fn encode_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self.encode(&[text])?.row(0).to_vec())
    }

    /// Embeds texts with the model's default prompt (if any); row `i` of the result
    /// belongs to `texts[i]`.
    pub fn encode(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        self.encode_with(texts, Prompt::Default)
    }

    /// Embeds texts with a prompt prepended to each.
    ///
    /// Texts are tokenized once, sorted by token count (longest first, as
    /// sentence-transformers does) so each batch carries little padding, then put
    /// back in input order.
    ///
    /// Fails on a text longer than [`crate::MAX_TEXT_BYTES`], on more than
    /// [`crate::MAX_REQUEST_BYTES`] in all, and when the model produces NaN or
    /// infinity for a text (never returned as an embedding).
    pub fn encode_with(&self, texts: &[&str], prompt: Prompt<'_>) -> Result<Embeddings, EmbedError> {
        let tokenized = self.tokenizer.tokenize(texts, prompt)?;
        Ok(self.embed_tokenized(&[&tokenized])?.remove(0))
    }

    /// Embeds groups of texts tokenized by this model's [`EmbedTokenizer`], all in
    /// the same passes where they can share them; element `g` of the result holds
    /// `groups[g]`'s rows in its order, equal to what
    /// [`SentenceEmbedder::encode_with`] returns for that group alone.
    ///
    /// Groups with the same prompt length are sorted and batched together (longest
    /// first, at most the batch size and a token budget per pass); groups with
    /// different prompt lengths run in separate passes, since pooling may leave the
    /// prompt out. A non-finite row fails the call, naming the text's index within
    /// its group; run the groups one by one to learn which group it was.
    pub fn embed_tokenized(&self, groups: &[&Tokenized]) -> Result<Vec<Embeddings>, EmbedError> {
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); groups.len()];
        let mut prompt_lengths: Vec<Option<i64>> = Vec::new();
        for group in groups.iter().filter(|g| !g.is_empty()) {
            if !prompt_lengths.contains(&group.prompt_length) {
                prompt_lengths.push(group.prompt_length);
            }
        }
        let _guard = tch::no_grad_guard();
        for prompt_length in prompt_lengths {
            let members: Vec<usize> = (0..groups.len())
                .filter(|&g| !groups[g].is_empty() && groups[g].prompt_length == prompt_length)
                .collect();
            let encodings: Vec<&tokenizers::Encoding> =
                members.iter().flat_map(|&g| groups[g].encodings.iter()).collect();
            let flat = batching::run(&encodings, self.batch_size, self.dim, &self.model_name, |batch| {
                let width = batch.first().map_or(0, |e| e.len());
                let _span = debug_span!("encode", batch = batch.len(), max_len = width).entered();
                self.embed_batch(batch, prompt_length)
            })
            .map_err(|err| match err {
                // The index is into the concatenated groups; name it within its group.
                EmbedError::NonFinite { model, mut index } => {
                    for &g in &members {
                        if index < groups[g].len() {
                            break;
                        }
                        index -= groups[g].len();
                    }
                    EmbedError::NonFinite { model, index }
                }
                other => other,
            })?;
            let mut rest = flat.as_slice();
            for &g in &members {
                let (rows, tail) = rest.split_at(groups[g].len() * self.dim);
                out[g] = rows.to_vec();
                rest = tail;
            }
        }
        Ok(out.into_iter().map(|data| Embeddings::new(self.dim, data)).collect())
    }

    /// One forward pass: `[B, dim]` f32 on the CPU, contiguous.
    fn embed_batch(&self, batch: &[&tokenizers::Encoding], prompt_length: Option<i64>) -> Result<Tensor, EmbedError> {
        let input = self.text_tokenizer().batch(batch, self.device)?;
        let tokens = self.encoder.forward(&input)?;
        // Pool in f32 whatever the compute precision: the sums over up to 512 tokens
        // are where bf16 would lose the most.
        let tokens = tokens.f_to_kind(Kind::Float)?;
        let mut pooled = self.pooling.forward(&tokens, &input.attention_mask, prompt_length)?;
        for layer in &self.after_pooling {
            pooled = match layer {
                AfterPoolingLayer::Dense { weight, bias, activation } => {
                    let linear = pooled.f_linear(weight, bias.as_ref())?;
                    match activation {
                        DenseActivation::Identity => linear,
                        DenseActivation::Tanh => linear.f_tanh()?,
                        DenseActivation::Relu => linear.f_relu()?,
                        DenseActivation::Sigmoid => linear.f_sigmoid()?,
                        DenseActivation::Gelu => linear.f_gelu("none")?,
                    }
                }
                AfterPoolingLayer::Normalize => normalize(&pooled)?,
            };
        }
        Ok(pooled.f_to_device(Device::Cpu)?.f_contiguous()?)
    }
}

/// Loads the Dense layers' weights (in f32, like the pooled vectors they act on)
/// and checks each layer's input width against what arrives.
fn load_after_pooling(pipeline: &Pipeline, hidden: i64, device: Device) -> Result<Vec<AfterPoolingLayer>, EmbedError> {
    let mut width = pipeline.pooling.output_dim(hidden);
    let mut layers = Vec::new();
    for module in &pipeline.after_pooling {
        layers.push(match module {
            AfterPooling::Normalize => AfterPoolingLayer::Normalize,
            AfterPooling::Dense(spec) => {
                if spec.out_features <= 0 || spec.out_features > 1 << 20 {
                    return Err(EmbedError::InvalidFile {
                        path: spec.dir.join("config.json"),
                        reason: format!("out_features is {}; it must be a positive width", spec.out_features),
                    });
                }
                if spec.in_features != width {
                    return Err(EmbedError::InvalidFile {
                        path: spec.dir.join("config.json"),
                        reason: format!("in_features is {} but the previous module produces {width}", spec.in_features),
                    });
                }
                let weights = Weights::load(&spec.dir, Kind::Float, device)?;
                let linear = weights.pp("linear");
                let weight = linear.get("weight", &[spec.out_features, spec.in_features]);
                let bias = spec.bias.then(|| linear.get("bias", &[spec.out_features]));
                weights.finish()?;
                width = spec.out_features;
                AfterPoolingLayer::Dense { weight, bias, activation: spec.activation }
            }
        });
    }
    Ok(layers)
}

/// The tokenizer and the sequence limit must fit the encoder's embedding tables:
/// an id past `vocab_size` or a position past `max_position_embeddings` is an
/// out-of-range lookup (an error on the CPU, a device assertion on CUDA), and
/// sentence-transformers would fail on the first text that reaches it. Checked at
/// load time, so a mismatched tokenizer is refused before any text is embedded.
fn check_tables(pipeline: &Pipeline, tokenizer: &TextTokenizer, limits: EncoderLimits) -> Result<(), EmbedError> {
    let config = pipeline.transformer_dir.join("config.json");
    let fix = "use the tokenizer and sentence_bert_config.json that came with this config.json and its weights";
    if let Some(highest) = tokenizer.highest_id().filter(|&id| i64::from(id) >= limits.vocab_size) {
        return Err(EmbedError::InputOutOfRange {
            config,
            tokenizer: tokenizer.path().to_path_buf(),
            detail: format!(
                "the tokenizer has token ids up to {highest}, but config.json's vocab_size is {}",
                limits.vocab_size
            ),
            fix,
        });
    }
    if let Some(limit) = pipeline.max_seq_length.filter(|&n| n > limits.max_positions) {
        return Err(EmbedError::InputOutOfRange {
            config,
            tokenizer: pipeline.transformer_dir.join("sentence_bert_config.json"),
            detail: format!(
                "max_seq_length is {limit} tokens, but config.json's position embeddings hold {} (max_position_embeddings less the padding offset)",
                limits.max_positions
            ),
            fix,
        });
    }
    Ok(())
}

/// The token limit as sentence-transformers computes it: `max_seq_length` from
/// sentence_bert_config.json, else the smaller of the tokenizer's
/// `model_max_length` and what the position embeddings allow.
fn token_limit(pipeline: &Pipeline, encoder: &dyn Encoder) -> Result<usize, EmbedError> {
    let positions = encoder.max_positions();
    match pipeline.max_seq_length {
        // Larger than the position table is refused by `check_tables`.
        Some(limit) => Ok(limit.min(positions)),
        None => tokenize::declared_limit(&pipeline.transformer_dir, positions),
    }
}

#[cfg(test)]
mod tests {
    use super::check_tables;
    use crate::encoder::EncoderLimits;
    use crate::pipeline::tokenize::TextTokenizer;
    use crate::spec::modules::Pipeline;

    #[test]
    fn tokenizer_ids_and_max_seq_length_must_fit_the_embedding_tables() {
        let dir = tempfile::tempdir().unwrap();
        // A word-level tokenizer whose highest id is 41.
        let tokenizer = serde_json::json!({"version": "1.0", "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 41}, "unk_token": "[UNK]"}});
        std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
        let tok = TextTokenizer::load(&dir.path().join("tokenizer.json"), 16, false).unwrap();
        let mut pipeline = Pipeline::read(dir.path()).unwrap();
        let limits = |vocab_size| EncoderLimits { vocab_size, type_vocab_size: Some(2), max_positions: 32 };
        check_tables(&pipeline, &tok, limits(42)).unwrap();
        let err = check_tables(&pipeline, &tok, limits(41)).unwrap_err().to_string();
        assert!(err.contains("41") && err.contains("tokenizer.json") && err.contains("config.json"), "{err}");
        pipeline.max_seq_length = Some(33);
        let err = check_tables(&pipeline, &tok, limits(42)).unwrap_err().to_string();
        assert!(err.contains("33") && err.contains("32") && err.contains("sentence_bert_config.json"), "{err}");
    }
}
