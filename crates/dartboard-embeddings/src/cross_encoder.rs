//! [`CrossEncoder`]: scores (query, passage) pairs jointly, as
//! sentence-transformers' `CrossEncoder` does with a BERT sequence-classification
//! model (cross-encoder/ms-marco-MiniLM-L-12-v2 and its family).
//!
//! The pair is encoded as `[CLS] a [SEP] b [SEP]` with segment ids; the `[CLS]` state
//! goes through BERT's pooler (dense + tanh) and the classifier; the activation is
//! the one sentence-transformers applies for that model (sigmoid for one label unless
//! the config names another).

use std::path::Path;

use dartboard_hub::ModelFiles;
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::device::{kind_of, resolve_device};
use crate::models::bert::{BertModel, Config};
use crate::pipeline::read_json;
use crate::tokenize::TextTokenizer;
use crate::weights::Weights;
use crate::{EmbedError, Encoder, LoadOptions};

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

/// A BERT cross-encoder.
pub struct CrossEncoder {
    tokenizer: TextTokenizer,
    encoder: BertModel,
    pooler_weight: Tensor,
    pooler_bias: Tensor,
    classifier_weight: Tensor,
    classifier_bias: Tensor,
    activation: ScoreActivation,
    labels: usize,
    device: Device,
    batch_size: usize,
}

#[derive(Deserialize)]
struct HeadConfig {
    model_type: Option<String>,
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
    /// Loads a cross-encoder from a model directory.
    pub fn load(files: &ModelFiles, options: LoadOptions) -> Result<Self, EmbedError> {
        let dir = files.dir();
        let config_path = dir.join("config.json");
        let head: HeadConfig = read_json(&config_path)?;
        let Some(model_type) = head.model_type.clone().filter(|t| !t.is_empty()) else {
            return Err(EmbedError::MissingModelType { path: config_path, supported: &["bert"] });
        };
        if model_type != "bert" {
            return Err(EmbedError::UnsupportedArchitecture {
                path: config_path,
                found: model_type,
                supported: &["bert"],
            });
        }
        let labels = head.num_labels.or(head.id2label.as_ref().map(|m| m.len())).unwrap_or(1).max(1);
        if labels > 1 << 16 {
            return Err(EmbedError::InvalidFile {
                path: config_path,
                reason: format!("{labels} labels is not a classifier"),
            });
        }
        let activation = activation(&head, labels, &config_path)?;
        let config: Config = read_json(&config_path)?;
        let device = resolve_device(options.device)?;
        let weights = Weights::load(dir, kind_of(options.dtype), device)?;
        // Shapes are checked against the checkpoint's headers before anything is read.
        let (encoder, [pooler_weight, pooler_bias, classifier_weight, classifier_bias]) = weights.build(|weights| {
            let encoder = BertModel::load(weights, &config, &config_path)?;
            let h = config.hidden_size;
            // The head runs in f32 on the [CLS] state, whatever the encoder's precision.
            let f32 = |t: Tensor| t.f_to_kind(Kind::Float);
            let pooler = weights.pp("pooler").pp("dense");
            let classifier = weights.pp_root("classifier");
            let n = labels as i64;
            let head = [
                f32(pooler.get("weight", &[h, h]))?,
                f32(pooler.get("bias", &[h]))?,
                f32(classifier.get("weight", &[n, h]))?,
                f32(classifier.get("bias", &[n]))?,
            ];
            Ok((encoder, head))
        })?;
        // What sentence-transformers' CrossEncoder truncates to.
        let limit = crate::tokenize::declared_limit(dir, encoder.max_positions())?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), limit, false)?;
        Ok(CrossEncoder {
            tokenizer,
            encoder,
            pooler_weight,
            pooler_bias,
            classifier_weight,
            classifier_bias,
            activation,
            labels,
            device,
            batch_size: options.batch_size.max(1),
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
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let _guard = tch::no_grad_guard();
        let mut out = vec![Vec::new(); pairs.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<_> = chunk.iter().map(|&i| &encodings[i]).collect();
            let input = self.tokenizer.batch(&batch, self.device)?;
            let hidden = self.encoder.forward(&input)?.f_to_kind(Kind::Float)?;
            let first = hidden.f_select(1, 0)?;
            let pooled = first.f_linear(&self.pooler_weight, Some(&self.pooler_bias))?.f_tanh()?;
            let logits = pooled.f_linear(&self.classifier_weight, Some(&self.classifier_bias))?;
            let scores = match self.activation {
                ScoreActivation::Identity => logits,
                ScoreActivation::Sigmoid => logits.f_sigmoid()?,
                ScoreActivation::Softmax => logits.f_softmax(-1, Kind::Float)?,
            };
            let flat = Vec::<f32>::try_from(scores.f_to_device(Device::Cpu)?.f_contiguous()?.f_view(-1)?)?;
            for (row, &index) in chunk.iter().enumerate() {
                out[index] = flat[row * self.labels..(row + 1) * self.labels].to_vec();
            }
        }
        Ok(out)
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
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "mpnet"}"#).unwrap();
        let err = CrossEncoder::load(&files, LoadOptions::default()).err().unwrap().to_string();
        assert!(err.contains("\"mpnet\" model, which is not supported"), "{err}");
    }
}
