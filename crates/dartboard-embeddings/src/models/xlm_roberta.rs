//! XLM-RoBERTa (Conneau et al. 2019, arXiv:1911.02116) and RoBERTa (Liu et al. 2019,
//! arXiv:1907.11692): the encoder of paraphrase-multilingual-MiniLM-L12-v2.
//!
//! Architecturally these are BERT with two differences, both in the embeddings, so
//! they reuse [`super::bert::BertModel`]: position ids start after the padding id
//! (fairseq numbering, transformers' `create_position_ids_from_input_ids`), and the
//! token-type table has a single row that every token uses. Weight names are BERT's
//! (`embeddings.*`, `encoder.layer.N.*`), under a `roberta.` prefix in task checkpoints.

//!
//! Cross-encoders (`XLMRobertaForSequenceClassification`, as BAAI/bge-reranker-v2-m3)
//! have no pooler; their head is `[CLS]` → `classifier.dense` → tanh →
//! `classifier.out_proj`.

use std::path::Path;

use serde::Deserialize;

use super::bert::{self, BertModel, Positions};
use super::{Architecture, Classifier};
use crate::encoder::Encoder;
use crate::error::EmbedError;
use crate::layers::{Activation, ClassificationHead, HeadPooling, Linear};
use crate::weights::Weights;

/// An XLM-R / RoBERTa `config.json`: BERT's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Config(pub bert::Config);

impl Architecture for Config {
    fn encoder(&self, weights: &mut Weights, config_path: &Path) -> Result<Box<dyn Encoder>, EmbedError> {
        Ok(Box::new(load(weights, &self.0, config_path)?))
    }

    fn classifier(&self, weights: &mut Weights, config_path: &Path, labels: i64) -> Result<Classifier, EmbedError> {
        let encoder = load(weights, &self.0, config_path)?;
        let h = self.0.hidden_size;
        let classifier = weights.pp_root("classifier");
        let dense = Linear::load(&classifier.pp("dense"), h, h);
        let out = Linear::load(&classifier.pp("out_proj"), h, labels);
        let head = ClassificationHead::new(HeadPooling::First, Some((dense, Activation::Tanh)), None, out)?;
        Ok(Classifier { encoder: Box::new(encoder), head })
    }
}

/// Loads an XLM-R / RoBERTa encoder. `config.json` has BERT's keys; `pad_token_id`
/// (1 in every released checkpoint) sets where positions start.
pub fn load(weights: &mut Weights, config: &bert::Config, config_path: &Path) -> Result<BertModel, EmbedError> {
    if config.pad_token_id < 0 {
        return Err(EmbedError::InvalidFile {
            path: config_path.to_path_buf(),
            reason: format!(
                "pad_token_id is {}; it must be 0 or more (positions are numbered after it)",
                config.pad_token_id
            ),
        });
    }
    if config.max_position_embeddings <= config.pad_token_id.saturating_add(1) {
        return Err(EmbedError::InvalidFile {
            path: config_path.to_path_buf(),
            reason: format!(
                "max_position_embeddings {} leaves no positions after pad_token_id {}",
                config.max_position_embeddings, config.pad_token_id
            ),
        });
    }
    BertModel::load_with_positions(weights, config, config_path, Positions::AfterPadding(config.pad_token_id))
}
