//! XLM-RoBERTa (Conneau et al. 2019, arXiv:1911.02116) and RoBERTa (Liu et al. 2019,
//! arXiv:1907.11692): the encoder of paraphrase-multilingual-MiniLM-L12-v2.
//!
//! Architecturally these are BERT with two differences, both in the embeddings, so
//! they reuse [`super::bert::BertModel`]: position ids start after the padding id
//! (fairseq numbering, transformers' `create_position_ids_from_input_ids`), and the
//! token-type table has a single row that every token uses. Weight names are BERT's
//! (`embeddings.*`, `encoder.layer.N.*`), under a `roberta.` prefix in task checkpoints.

use std::path::Path;

use super::bert::{BertModel, Config, Positions};
use crate::weights::Weights;
use crate::EmbedError;

/// Loads an XLM-R / RoBERTa encoder. `config.json` has BERT's keys; `pad_token_id`
/// (1 in every released checkpoint) sets where positions start.
pub fn load(weights: &mut Weights, config: &Config, config_path: &Path) -> Result<BertModel, EmbedError> {
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
