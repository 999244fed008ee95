//! [`CrossEncoder`]: scores (query, passage) pairs jointly, as
//! sentence-transformers' `CrossEncoder` does with a sequence-classification model
//! (cross-encoder/ms-marco-MiniLM-L-12-v2, BAAI/bge-reranker-v2-m3, …).
//!
//! The pair is encoded as the tokenizer's post-processor says (`[CLS] a [SEP] b
//! [SEP]` with segment ids for BERT); any registered architecture with a
//! classification head (`models::Architecture::classifier`) runs it; the
//! activation is the one sentence-transformers applies for that model (sigmoid for
//! one label unless the config names another).
//!
//! As for the embedder, tokenizing ([`PairTokenizer`], `Send + Sync`) and the
//! forward passes ([`CrossEncoder::predict_tokenized`], which also returns the
//! logits before the activation) can run on different threads, and several
//! callers' pairs can share passes.

use std::path::Path;
use std::sync::Arc;

use dartboard_config::EmbeddingConfig;
use dartboard_hub::progress::Progress;
use dartboard_hub::ModelFiles;
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::batching;
use super::tokenize::{self, TextTokenizer};
use crate::backend::device::{device_name, kind_of, resolve_device};
use crate::encoder::Encoder;
use crate::error::EmbedError;
use crate::layers::ClassificationHead;
use crate::models::{self, Classifier};
use crate::pipeline::embedder::{LoadOptions, Overlong};
use crate::spec::read_json;

/// What the model's logits go through before they are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreActivation {
    /// Logits as they are.
    Identity,
    /// `1 / (1 + e^-x)`: sentence-transformers' default for one-label models.
    Sigmoid,
    /// Softmax over labels.
    Softmax,
}

/// The tokenizing half of a [`CrossEncoder`]: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct PairTokenizer {
    tokenizer: Arc<TextTokenizer>,
}

/// Pairs tokenized by [`PairTokenizer::tokenize_pairs`], ready for
/// [`CrossEncoder::predict_tokenized`] (of the model they came from).
#[derive(Debug, Clone)]
pub struct TokenizedPairs {
    encodings: Vec<tokenizers::Encoding>,
}

impl TokenizedPairs {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Tokens of each pair as scored (special tokens included, after truncation).
    pub fn token_counts(&self) -> Vec<usize> {
        self.encodings.iter().map(|e| e.len()).collect()
    }

    /// All pairs' tokens together (unpadded).
    pub fn total_tokens(&self) -> usize {
        self.encodings.iter().map(|e| e.len()).sum()
    }
}

/// One group's scores from [`CrossEncoder::predict_tokenized`]: row-major,
/// [`CrossEncoder::num_labels`] values per pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairScores {
    /// After the model's activation, as [`CrossEncoder::predict`] returns them.
    pub scores: Vec<f32>,
    /// The logits before the activation.
    pub logits: Vec<f32>,
}

impl PairTokenizer {
    /// Tokenizes pairs as [`CrossEncoder::predict`] does (truncating the longer side
    /// first); each side of at most [`crate::MAX_TEXT_BYTES`], all together at most
    /// [`crate::MAX_REQUEST_BYTES`].
    pub fn tokenize_pairs(&self, pairs: &[(&str, &str)]) -> Result<TokenizedPairs, EmbedError> {
        Ok(TokenizedPairs { encodings: self.tokenizer.encode_pairs(pairs)? })
    }

    /// The first pair that truncation shortened, with its whole length; only pairs
    /// filled to the limit are tokenized again.
    pub fn find_overlong(
        &self,
        pairs: &[(&str, &str)],
        tokenized: &TokenizedPairs,
    ) -> Result<Option<Overlong>, EmbedError> {
        let max = self.tokenizer.max_length();
        for (index, (&(a, b), encoding)) in pairs.iter().zip(&tokenized.encodings).enumerate() {
            if encoding.len() < max {
                continue;
            }
            let tokens = self.tokenizer.untruncated_pair_length(a, b)?;
            if tokens > max {
                return Ok(Some(Overlong { index, tokens, max }));
            }
        }
        Ok(None)
    }

    /// The token limit pairs are truncated to (special tokens included).
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }
}

/// A cross-encoder: an encoder and its classification head.
pub struct CrossEncoder {
    tokenizer: PairTokenizer,
    encoder: Box<dyn Encoder>,
    head: ClassificationHead,
    activation: ScoreActivation,
    labels: usize,
    device: Device,
    batch_size: usize,
    /// How errors name the model: its directory.
    model_name: String,
}

#[derive(Deserialize)]
struct HeadConfig {
    num_labels: Option<usize>,
    id2label: Option<std::collections::BTreeMap<String, String>>,
    sentence_transformers: Option<StSection>,
    sbert_ce_default_activation_function: Option<String>,
}

#[derive(Deserialize)]
struct StSection {
    activation_fn: Option<String>,
}

impl CrossEncoder {
    /// Finds the cross-encoder `model` (a name, `org/name@rev` or a directory) in
    /// the cache `config` names, downloading it when it is not cached and
    /// `HF_HUB_OFFLINE` is not set (reporting to `progress`), and loads it with
    /// `config`'s device, precision and batch size.
    pub fn from_config(model: &str, config: &EmbeddingConfig, progress: &dyn Progress) -> Result<Self, EmbedError> {
        let (files, options) = super::embedder::resolve(model, config, progress)?;
        Self::load(&files, options)
    }

    /// Loads a cross-encoder from a model directory.
    pub fn load(files: &ModelFiles, options: LoadOptions) -> Result<Self, EmbedError> {
        let dir = files.dir();
        let config_path = dir.join("config.json");
        let head: HeadConfig = read_json(&config_path)?;
        let labels = head.num_labels.or(head.id2label.as_ref().map(|m| m.len())).unwrap_or(1).max(1);
        if labels > 1 << 16 {
            return Err(EmbedError::InvalidFile {
                path: config_path,
                reason: format!("{labels} labels is not a classifier"),
            });
        }
        let activation = activation(&head, labels, &config_path)?;
        let device = resolve_device(options.device)?;
        // Shapes are checked against the checkpoint's headers before anything is read.
        let Classifier { encoder, head } = models::load_classifier(dir, kind_of(options.dtype), device, labels as i64)?;
        // What sentence-transformers' CrossEncoder truncates to.
        let limit = tokenize::declared_limit(dir, encoder.max_positions())?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), limit, false)?;
        Ok(CrossEncoder {
            tokenizer: PairTokenizer { tokenizer: Arc::new(tokenizer) },
            encoder,
            head,
            activation,
            labels,
            device,
            batch_size: options.batch_size.max(1),
            model_name: dir.display().to_string(),
        })
    }

    /// How many scores each pair gets (1 for rerankers).
    pub fn num_labels(&self) -> usize {
        self.labels
    }

    /// The activation applied to the logits.
    pub fn activation(&self) -> ScoreActivation {
        self.activation
    }

    /// The tokenizing half, to tokenize on other threads for
    /// [`CrossEncoder::predict_tokenized`].
    pub fn tokenizer(&self) -> &PairTokenizer {
        &self.tokenizer
    }

    /// The token limit pairs are truncated to.
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// The device as text (`cpu`, `cuda:0`).
    pub fn device_name(&self) -> String {
        device_name(self.device)
    }

    /// Scores of arbitrary pairs, one row of [`CrossEncoder::num_labels`] per pair.
    pub fn predict(&self, pairs: &[(&str, &str)]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self.tokenizer.tokenize_pairs(pairs)?.encodings;
        let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
        let _guard = tch::no_grad_guard();
        let flat = batching::run(&refs, self.batch_size, self.labels, &self.model_name, |batch| {
            let logits = self.logits(batch)?;
            Ok(self.activate(&logits)?.f_to_device(Device::Cpu)?.f_contiguous()?)
        })?;
        Ok(flat.chunks(self.labels).map(<[f32]>::to_vec).collect())
    }

    /// Scores groups of pairs tokenized by this model's [`PairTokenizer`] in shared
    /// passes; element `g` holds `groups[g]`'s scores, the activated ones equal to
    /// what [`CrossEncoder::predict`] returns for that group alone, and the logits
    /// they came from. A non-finite value fails the call, naming the pair's index
    /// within its group.
    pub fn predict_tokenized(&self, groups: &[&TokenizedPairs]) -> Result<Vec<PairScores>, EmbedError> {
        let encodings: Vec<&tokenizers::Encoding> = groups.iter().flat_map(|g| g.encodings.iter()).collect();
        let labels = self.labels;
        let _guard = tch::no_grad_guard();
        // Each row: the activated scores, then the logits (one pass computes both;
        // the activation sees the same logits as in `predict`).
        let flat = batching::run(&encodings, self.batch_size, 2 * labels, &self.model_name, |batch| {
            let logits = self.logits(batch)?;
            let both = Tensor::f_cat(&[self.activate(&logits)?, logits.f_to_kind(Kind::Float)?], 1)?;
            Ok(both.f_to_device(Device::Cpu)?.f_contiguous()?)
        })
        .map_err(|err| match err {
            EmbedError::NonFinite { model, mut index } => {
                for group in groups {
                    if index < group.len() {
                        break;
                    }
                    index -= group.len();
                }
                EmbedError::NonFinite { model, index }
            }
            other => other,
        })?;
        let mut rows = flat.chunks_exact(2 * labels);
        Ok(groups
            .iter()
            .map(|group| {
                let mut scores = Vec::with_capacity(group.len() * labels);
                let mut logits = Vec::with_capacity(group.len() * labels);
                for row in rows.by_ref().take(group.len()) {
                    scores.extend_from_slice(&row[..labels]);
                    logits.extend_from_slice(&row[labels..]);
                }
                PairScores { scores, logits }
            })
            .collect())
    }

    /// One pass's logits, `[B, labels]`.
    ///
    /// A pass of one pair runs as two copies of it: the head's matrix products have
    /// one row per pair, and libtorch computes a one-row product by another route
    /// (a matrix-vector kernel) whose sums round differently in the last bits. With
    /// at least two rows, a pair's scores are the same alone or batched with any
    /// others, which is what lets a server batch callers' pairs together.
    fn logits(&self, batch: &[&tokenizers::Encoding]) -> Result<Tensor, EmbedError> {
        if let [single] = batch {
            return Ok(self.forward_logits(&[single, single])?.f_narrow(0, 0, 1)?);
        }
        self.forward_logits(batch)
    }

    fn forward_logits(&self, batch: &[&tokenizers::Encoding]) -> Result<Tensor, EmbedError> {
        let input = self.tokenizer.tokenizer.batch(batch, self.device)?;
        let hidden = self.encoder.forward(&input)?;
        self.head.forward(&hidden, &input.attention_mask)
    }

    fn activate(&self, logits: &Tensor) -> Result<Tensor, EmbedError> {
        Ok(match self.activation {
            ScoreActivation::Identity => logits.shallow_clone(),
            ScoreActivation::Sigmoid => logits.f_sigmoid()?,
            ScoreActivation::Softmax => logits.f_softmax(-1, Kind::Float)?,
        })
    }

    /// Relevance of each passage to the query (first label), in passage order.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, EmbedError> {
        let pairs: Vec<(&str, &str)> = passages.iter().map(|p| (query, *p)).collect();
        Ok(self.predict(&pairs)?.into_iter().map(|row| row[0]).collect())
    }

    /// `matrix[i][j]` is the score of the pair (passage i, passage j).
    pub fn score_matrix(&self, passages: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let pairs: Vec<(&str, &str)> = passages.iter().flat_map(|a| passages.iter().map(move |b| (*a, *b))).collect();
        let flat = self.predict(&pairs)?;
        Ok(flat.chunks(passages.len().max(1)).map(|row| row.iter().map(|s| s[0]).collect()).collect())
    }
}

fn activation(head: &HeadConfig, labels: usize, path: &Path) -> Result<ScoreActivation, EmbedError> {
    let named = head
        .sentence_transformers
        .as_ref()
        .and_then(|s| s.activation_fn.clone())
        .or_else(|| head.sbert_ce_default_activation_function.clone());
    match named.as_deref().map(|n| n.rsplit('.').next().unwrap_or_default()) {
        None if labels == 1 => Ok(ScoreActivation::Sigmoid),
        None | Some("Identity") => Ok(ScoreActivation::Identity),
        Some("Sigmoid") => Ok(ScoreActivation::Sigmoid),
        Some("Softmax") => Ok(ScoreActivation::Softmax),
        Some(other) => Err(EmbedError::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("activation function {other:?} is not supported (Identity, Sigmoid, Softmax)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_model_type_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [("config.json", "{}"), ("tokenizer.json", "{}"), ("model.safetensors", "")] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let files = ModelFiles::open(dir.path(), None, None).unwrap();
        let err = CrossEncoder::load(&files, LoadOptions::default()).err().unwrap().to_string();
        assert!(err.contains("config.json has no model_type") && err.contains("supported model types: bert"), "{err}");
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
        let err = CrossEncoder::load(&files, LoadOptions::default()).err().unwrap().to_string();
        assert!(err.contains("\"gpt2\" model, which is not supported"), "{err}");
    }
}
