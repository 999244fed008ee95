//! What a model directory says about itself, as plain data: serde mirrors of
//! `modules.json`, `sentence_bert_config.json`, `config_sentence_transformers.json`,
//! the Pooling and Dense configs, and the part of `config.json` that names the
//! architecture. No tensors here: this is the contract with sentence-transformers'
//! file formats, readable and testable without libtorch.
//!
//! Each architecture's own `config.json` fields are mirrored beside the model
//! that reads them (`models/<arch>.rs`), so that adding an architecture stays
//! one file.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::EmbedError;

pub mod modules;
pub mod pooling;

/// The fields of any `config.json` that say which architecture it describes.
#[derive(Debug, Deserialize)]
pub(crate) struct ModelHeader {
    /// transformers' `model_type` (`"bert"`, `"xlm-roberta"`).
    pub model_type: Option<String>,
    /// Class names (`["BertModel"]`), the fallback when `model_type` is absent.
    pub architectures: Option<Vec<String>>,
    /// Present when the model's architecture is Python code in its repository.
    pub auto_map: Option<serde_json::Value>,
}

/// Reads and deserializes a JSON file (a regular file of at most
/// [`dartboard_fs::limits::MODEL_JSON`] bytes), naming the file in every error.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let bytes = dartboard_fs::read_capped(path, dartboard_fs::limits::MODEL_JSON)?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::InvalidFile {
        path: path.to_path_buf(),
        reason: format!("not the expected JSON ({e})"),
    })
}

/// [`read_json`] for a file a model may lack: `None` only when nothing at all is at
/// `path`. Anything there (a dangling link, a FIFO, a directory, unreadable or
/// invalid JSON) is read and fails like a required file would.
pub(crate) fn read_optional_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, EmbedError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_json(path).map(Some),
    }
}
