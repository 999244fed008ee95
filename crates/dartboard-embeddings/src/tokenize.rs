//! `tokenizer.json` through the `tokenizers` crate, configured the way
//! sentence-transformers calls its tokenizer: truncate to the model's limit
//! (special tokens included), pad each batch to its longest text.

use std::path::Path;

use tch::{Device, Kind, Tensor};
use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::pipeline::read_json;
use crate::{EmbedError, EncoderInput};

#[derive(serde::Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

/// The token limit a model directory's `tokenizer_config.json` declares
/// (`model_max_length`), capped by the `positions` the encoder has. Tokenizers
/// without a limit store a huge sentinel (1e30), which counts as none.
pub fn declared_limit(dir: &Path, positions: usize) -> Result<usize, EmbedError> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(positions);
    }
    let config: TokenizerConfig = read_json(&path)?;
    Ok(config.model_max_length.filter(|n| *n >= 1.0 && *n < 1e9).map_or(positions, |n| (n as usize).min(positions)))
}

/// A tokenizer with sentence-transformers' truncation and lowercasing applied.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: i64,
    lowercase: bool,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. Whatever truncation and padding the file carries is
    /// replaced: many Hub files pin `Fixed(128)` padding, which would silently change
    /// both speed and (through truncation) results.
    pub fn load(path: &Path, max_length: usize, lowercase: bool) -> Result<Self, EmbedError> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| EmbedError::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("not a tokenizers JSON file ({e})"),
        })?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EmbedError::InvalidFile { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(TextTokenizer { inner, pad_id: i64::from(pad_id), lowercase, max_length })
    }

    /// How many leading tokens a prompt occupies once prepended: its tokens with
    /// special tokens, minus a trailing special token (`[SEP]`, `</s>`), which a real
    /// text would push further right. This is how sentence-transformers measures it.
    pub fn prompt_length(&self, prompt: &str) -> Result<i64, EmbedError> {
        let encoding = self.encode(&[prompt])?.remove(0);
        let ids = encoding.get_ids();
        let trailing_special = ids
            .last()
            .is_some_and(|last| self.inner.get_added_tokens_decoder().get(last).is_some_and(|token| token.special));
        Ok(ids.len() as i64 - i64::from(trailing_special))
    }

    /// The token limit, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes texts with special tokens, unpadded.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoding>, EmbedError> {
        let result = if self.lowercase {
            let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
            self.inner.encode_batch(lowered.iter().map(String::as_str).collect(), true)
        } else {
            self.inner.encode_batch(texts.to_vec(), true)
        };
        result.map_err(|e| EmbedError::Tokenize(e.to_string()))
    }

    /// Tokenizes text pairs (`[CLS] a [SEP] b [SEP]` with segment ids), unpadded,
    /// truncating the longer side first.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<Encoding>, EmbedError> {
        let inputs: Vec<tokenizers::EncodeInput<'_>> =
            pairs.iter().map(|&(a, b)| tokenizers::EncodeInput::Dual(a.into(), b.into())).collect();
        self.inner.encode_batch(inputs, true).map_err(|e| EmbedError::Tokenize(e.to_string()))
    }

    /// Pads encodings to the longest one and moves them to `device`.
    pub fn batch(&self, encodings: &[&Encoding], device: Device) -> Result<EncoderInput, EmbedError> {
        let rows = encodings.len();
        let width = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; rows * width];
        let mut mask = vec![0i64; rows * width];
        let mut types = vec![0i64; rows * width];
        for (row, encoding) in encodings.iter().enumerate() {
            let start = row * width;
            for (i, ((&id, &m), &ty)) in
                encoding.get_ids().iter().zip(encoding.get_attention_mask()).zip(encoding.get_type_ids()).enumerate()
            {
                ids[start + i] = i64::from(id);
                mask[start + i] = i64::from(m);
                types[start + i] = i64::from(ty);
            }
        }
        let shape = [rows as i64, width as i64];
        let to_tensor = |v: &[i64]| -> Result<Tensor, EmbedError> {
            Ok(Tensor::from_slice(v).f_view(shape)?.f_to_device(device)?.f_to_kind(Kind::Int64)?)
        };
        Ok(EncoderInput {
            input_ids: to_tensor(&ids)?,
            attention_mask: to_tensor(&mask)?,
            token_type_ids: to_tensor(&types)?,
        })
    }
}
