//! [`CrossEncoder`]: scores (query, passage) pairs jointly, as
//! sentence-transformers' `CrossEncoder` does with a sequence-classification model
//! (cross-encoder/ms-marco-MiniLM-L-12-v2, BAAI/bge-reranker-v2-m3, …).
//!
//! The pair is encoded as the tokenizer's post-processor says (`[CLS] a [SEP] b
//! [SEP]` with segment ids for BERT); any registered architecture with a
//! classification head (`models::Architecture::classifier`) runs it; the
//! activation is the one sentence-transformers applies for that model (sigmoid for
//! one label unless the config names another).

use std::path::Path;

use dartboard_config::EmbeddingConfig;
use dartboard_hub::progress::Progress;
use dartboard_hub::ModelFiles;
use serde::Deserialize;
use tch::{Device, Kind};

use super::batching;
use super::tokenize::{self, TextTokenizer};
use crate::backend::device::{kind_of, resolve_device};
use crate::encoder::Encoder;
use crate::error::EmbedError;
use crate::layers::ClassificationHead;
use crate::models::{self, Classifier};
use crate::pipeline::embedder::LoadOptions;
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

/// A cross-encoder: an encoder and its classification head.
pub struct CrossEncoder {
    tokenizer: TextTokenizer,
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
            tokenizer,
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

    /// Scores of arbitrary pairs, one row of [`CrossEncoder::num_labels`] per pair.
    pub fn predict(&self, pairs: &[(&str, &str)]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self.tokenizer.encode_pairs(pairs)?;
        let _guard = tch::no_grad_guard();
        let flat = batching::run(&encodings, self.batch_size, self.labels, &self.model_name, |batch| {
            let input = self.tokenizer.batch(batch, self.device)?;
            let hidden = self.encoder.forward(&input)?;
            let logits = self.head.forward(&hidden, &input.attention_mask)?;
            let scores = match self.activation {
                ScoreActivation::Identity => logits,
                ScoreActivation::Sigmoid => logits.f_sigmoid()?,
                ScoreActivation::Softmax => logits.f_softmax(-1, Kind::Float)?,
            };
            Ok(scores.f_to_device(Device::Cpu)?.f_contiguous()?)
        })?;
        Ok(flat.chunks(self.labels).map(<[f32]>::to_vec).collect())
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
