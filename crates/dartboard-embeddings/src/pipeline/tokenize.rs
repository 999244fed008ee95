//! `tokenizer.json` through the `tokenizers` crate, configured the way
//! sentence-transformers calls its tokenizer: truncate to the model's limit
//! (special tokens included), pad each batch to its longest text.
//!
//! Only the start of a long text is tokenized: the ids that come out are those of
//! the whole text truncated to the limit, so the work (and memory) per text is
//! bounded by the limit, not by the text's length. See [`TextTokenizer::encode`]
//! for why the result is unchanged. [`MAX_TEXT_BYTES`] and [`MAX_REQUEST_BYTES`]
//! bound what one call may carry at all.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::encoder::EncoderInput;
use crate::error::EmbedError;
use crate::spec::read_optional_json;

/// Most bytes one text may have (1 MiB). Only a text's first tokens are used, and a
/// long text is tokenized only as far as the limit reaches, so this only bounds the
/// worst case: a text the bounded path cannot cut (no spaces, or a tokenizer whose
/// pieces may span a space) is tokenized whole, at ~120 bytes of memory per byte.
/// 1 MiB is over 100 times what a 8192-token window holds. A server should refuse
/// larger texts before they reach the model; the embedder and cross-encoder refuse
/// them with [`EmbedError::TextTooLarge`].
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Most bytes of text one call may carry, all texts (or both sides of all pairs)
/// together (64 MiB); above it the call fails with [`EmbedError::RequestTooLarge`].
/// Send larger inputs in groups: results do not depend on how texts are grouped.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// Checks one call's texts against [`MAX_TEXT_BYTES`] and [`MAX_REQUEST_BYTES`].
pub fn check_input_sizes<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<(), EmbedError> {
    let (mut count, mut total) = (0usize, 0usize);
    for (index, text) in texts.into_iter().enumerate() {
        if text.len() > MAX_TEXT_BYTES {
            return Err(EmbedError::TextTooLarge { index, bytes: text.len(), max: MAX_TEXT_BYTES });
        }
        count += 1;
        total += text.len();
    }
    if total > MAX_REQUEST_BYTES {
        return Err(EmbedError::RequestTooLarge { texts: count, bytes: total, max: MAX_REQUEST_BYTES });
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
    /// `"left"` for decoder models (Qwen3), whose last token must be the text's.
    padding_side: Option<String>,
}

/// The token limit a model directory's `tokenizer_config.json` declares
/// (`model_max_length`), capped by the `positions` the encoder has. Tokenizers
/// without a limit store a huge sentinel (1e30), which counts as none.
pub fn declared_limit(dir: &Path, positions: usize) -> Result<usize, EmbedError> {
    let Some(config) = read_optional_json::<TokenizerConfig>(&dir.join("tokenizer_config.json"))? else {
        return Ok(positions);
    };
    Ok(config.model_max_length.filter(|n| *n >= 1.0 && *n < 1e9).map_or(positions, |n| (n as usize).min(positions)))
}

/// A tokenizer with sentence-transformers' truncation and lowercasing applied.
pub struct TextTokenizer {
    /// Truncates to `max_length` and adds special tokens, as sentence-transformers'.
    inner: Tokenizer,
    /// The same without truncation, special tokens or padding: a text's content tokens.
    raw: Tokenizer,
    /// Whether a text cut before a space tokenizes to a prefix of the whole text's
    /// tokens (see [`prefix_stable`]).
    prefix_stable: bool,
    path: PathBuf,
    pad_id: i64,
    /// Pad at the start of each row rather than the end.
    pad_left: bool,
    lowercase: bool,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (a regular file of at most
    /// [`dartboard_fs::limits::TOKENIZER`] bytes). Whatever truncation and padding the
    /// file carries is replaced: many Hub files pin `Fixed(128)` padding, which would
    /// silently change both speed and (through truncation) results.
    pub fn load(path: &Path, max_length: usize, lowercase: bool) -> Result<Self, EmbedError> {
        let invalid = |reason: String| EmbedError::InvalidFile { path: path.to_path_buf(), reason };
        let bytes = dartboard_fs::read_capped(path, dartboard_fs::limits::TOKENIZER)?;
        let mut inner =
            Tokenizer::from_bytes(&bytes).map_err(|e| invalid(format!("not a tokenizers JSON file ({e})")))?;
        drop(bytes);
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)))
            .unwrap_or(0);
        // transformers pads on the side tokenizer_config.json names, else on the
        // side tokenizer.json's padding names, else on the right.
        let config_side = match path.parent() {
            Some(dir) => {
                read_optional_json::<TokenizerConfig>(&dir.join("tokenizer_config.json"))?.and_then(|c| c.padding_side)
            }
            None => None,
        };
        let pad_left = match config_side.as_deref() {
            Some("left") => true,
            Some("right") => false,
            Some(other) => {
                return Err(EmbedError::InvalidFile {
                    path: path.with_file_name("tokenizer_config.json"),
                    reason: format!("padding_side is {other:?}; it must be \"left\" or \"right\""),
                })
            }
            None => inner.get_padding().is_some_and(|p| matches!(p.direction, tokenizers::PaddingDirection::Left)),
        };
        inner.with_padding(None);
        // tokenizers subtracts the special tokens from the limit without checking.
        let specials = inner.get_post_processor().map_or(0, |p| p.added_tokens(true).max(p.added_tokens(false)));
        if max_length < specials {
            return Err(invalid(format!(
                "the token limit {max_length} (max_seq_length) leaves no room for its {specials} special tokens"
            )));
        }
        let mut raw = inner.clone();
        raw.with_post_processor(None::<PostProcessorWrapper>);
        raw.with_truncation(None).map_err(|e| invalid(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| invalid(e.to_string()))?;
        let prefix_stable = prefix_stable(&inner);
        Ok(TextTokenizer {
            inner,
            raw,
            prefix_stable,
            path: path.to_path_buf(),
            pad_id: i64::from(pad_id),
            pad_left,
            lowercase,
            max_length,
        })
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

    /// The file the tokenizer came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest token id the tokenizer can produce (its vocabulary and added
    /// tokens), which the model's embedding table must hold.
    pub fn highest_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// Tokenizes texts with special tokens, unpadded, truncated to the limit.
    ///
    /// A long text is tokenized only up to a cut before a space, far enough in that
    /// its tokens fill the limit; the cut grows (x4) until they do or the whole text
    /// is taken. The ids are those of the whole text: where [`prefix_stable`] holds,
    /// no normalizer, pre-tokenizer or added token joins characters across a space
    /// that follows a non-space, so the pieces before the cut, and so their tokens,
    /// are the same in the prefix as in the whole text; truncation keeps only
    /// tokens from before the cut. Otherwise the whole text is tokenized.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoding>, EmbedError> {
        let content = self.max_length.saturating_sub(self.added_tokens(false));
        let mut out = Vec::with_capacity(texts.len());
        for raw in self.raw_batch(texts, content)? {
            let mut encoding = self.finish(raw, None)?;
            encoding.take_overflowing();
            out.push(encoding);
        }
        Ok(out)
    }

    /// Tokenizes text pairs (`[CLS] a [SEP] b [SEP]` with segment ids), unpadded,
    /// truncating the longer side first; each side of at most [`MAX_TEXT_BYTES`],
    /// both sides of all pairs together at most [`MAX_REQUEST_BYTES`].
    ///
    /// Pairs are tokenized whole, not from prefixes: how a pair is truncated depends
    /// on where tokenizers' model stops on each side (after the pre-token that
    /// reaches the limit, not counting added tokens), which a prefix does not
    /// reproduce in every case. The stop itself bounds the model's work per side;
    /// normalization and pre-tokenization still see the whole side, which
    /// [`MAX_TEXT_BYTES`] bounds.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<Encoding>, EmbedError> {
        check_input_sizes(pairs.iter().flat_map(|&(a, b)| [a, b]))?;
        let inputs: Vec<tokenizers::EncodeInput<'_>> =
            pairs.iter().map(|&(a, b)| tokenizers::EncodeInput::Dual(a.into(), b.into())).collect();
        let mut encodings = self.inner.encode_batch(inputs, true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        for encoding in &mut encodings {
            encoding.take_overflowing();
        }
        Ok(encodings)
    }

    /// How many tokens `text` becomes without truncation (special tokens included):
    /// what the limit is compared with when a caller asks not to truncate. The
    /// whole text is tokenized, so this costs what [`MAX_TEXT_BYTES`] allows; call
    /// it only for texts that [`TextTokenizer::encode`] filled to the limit.
    pub fn untruncated_length(&self, text: &str) -> Result<usize, EmbedError> {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let raw = self.raw.encode(text, false).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(raw.len() + self.added_tokens(false))
    }

    /// How many tokens the pair `(a, b)` becomes without truncation (special tokens
    /// included), as [`TextTokenizer::untruncated_length`] for one text.
    pub fn untruncated_pair_length(&self, a: &str, b: &str) -> Result<usize, EmbedError> {
        let count = |text: &str| -> Result<usize, EmbedError> {
            Ok(self.raw.encode(text, false).map_err(|e| EmbedError::Tokenize(e.to_string()))?.len())
        };
        Ok(count(a)? + count(b)? + self.added_tokens(true))
    }

    /// Special tokens the post-processor adds to one text or a pair.
    fn added_tokens(&self, pair: bool) -> usize {
        self.inner.get_post_processor().map_or(0, |p| p.added_tokens(pair))
    }

    /// Truncation and special tokens, exactly as `Tokenizer::encode` applies them
    /// after tokenizing each sequence.
    fn finish(&self, first: Encoding, second: Option<Encoding>) -> Result<Encoding, EmbedError> {
        self.inner.post_process(first, second, true).map_err(|e| EmbedError::Tokenize(e.to_string()))
    }

    /// Content tokens of each text: all of them, or those of a prefix of the text
    /// holding at least `needed` tokens.
    fn raw_batch(&self, texts: &[&str], needed: usize) -> Result<Vec<Encoding>, EmbedError> {
        let mut out: Vec<Option<Encoding>> = texts.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..texts.len()).collect();
        let mut budget = needed.saturating_mul(8).max(1024);
        while !pending.is_empty() {
            let pieces: Vec<(&str, bool)> = pending
                .iter()
                .map(|&i| {
                    let piece = self.cut(texts[i], budget);
                    (piece, piece.len() == texts[i].len())
                })
                .collect();
            let lowered: Vec<String>;
            let inputs: Vec<&str> = if self.lowercase {
                lowered = pieces.iter().map(|(p, _)| p.to_lowercase()).collect();
                lowered.iter().map(String::as_str).collect()
            } else {
                pieces.iter().map(|(p, _)| *p).collect()
            };
            let encodings = self.raw.encode_batch(inputs, false).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
            let mut next = Vec::new();
            for ((&i, (_, complete)), encoding) in pending.iter().zip(pieces).zip(encodings) {
                if complete || encoding.len() >= needed {
                    out[i] = Some(encoding);
                } else {
                    next.push(i);
                }
            }
            pending = next;
            budget = budget.saturating_mul(4);
        }
        Ok(out.into_iter().map(|raw| raw.expect("every text is tokenized")).collect())
    }

    /// `text` up to the first space at or after `budget` bytes that follows a
    /// character which is neither whitespace nor a grapheme-joining prepend mark;
    /// the whole text when it is short, has no such space, or the tokenizer is not
    /// prefix-stable.
    fn cut<'t>(&self, text: &'t str, budget: usize) -> &'t str {
        if !self.prefix_stable || text.len() <= budget {
            return text;
        }
        let mut start = budget;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let mut previous = text[..start].chars().next_back();
        for (offset, c) in text[start..].char_indices() {
            if c == ' ' && previous.is_some_and(|p| !p.is_whitespace() && !is_prepend(p)) {
                return &text[..start + offset];
            }
            previous = Some(c);
        }
        text
    }

    /// Pads encodings to the longest one (on the side the tokenizer's config names)
    /// and moves them to `device`.
    pub fn batch(&self, encodings: &[&Encoding], device: Device) -> Result<EncoderInput, EmbedError> {
        let rows = encodings.len();
        let width = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; rows * width];
        let mut mask = vec![0i64; rows * width];
        let mut types = vec![0i64; rows * width];
        for (row, encoding) in encodings.iter().enumerate() {
            let start = row * width + if self.pad_left { width - encoding.len() } else { 0 };
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

/// Whether tokenizing a text cut just before a space (that follows a non-space)
/// gives a prefix of the whole text's content tokens. It does when every step is
/// local to the stretches between such spaces:
/// - no added token contains whitespace (added tokens are matched first, and one
///   with a space could straddle the cut);
/// - the normalizers map characters (or grapheme clusters: `Precompiled`) one by
///   one, never joining across a space: Unicode normalization does not compose or
///   reorder across a space (a starter that composes with nothing before it), and
///   `Replace` only with a pattern whose matches are all spaces or contain none;
/// - the pre-tokenizers split at every space (BERT's, `Whitespace`,
///   `WhitespaceSplit`, `Metaspace` with `split`, `ByteLevel` with its regex, where a
///   space starts the next piece), and the others in a `Sequence` only split
///   pieces further (`Punctuation`, `Digits`);
/// - the model (WordPiece, BPE, Unigram, WordLevel) tokenizes each piece alone.
///
/// Anything else (a custom `Split` regex, `Metaspace` without splitting, no
/// pre-tokenizer) is tokenized whole, which is always right.
fn prefix_stable(tokenizer: &Tokenizer) -> bool {
    if tokenizer.get_added_tokens_decoder().values().any(|t| t.content.chars().any(char::is_whitespace)) {
        return false;
    }
    let normalizer_ok = match tokenizer.get_normalizer().map(serde_json::to_value) {
        None => true,
        Some(Ok(value)) => local_normalizer(&value),
        Some(Err(_)) => false,
    };
    let splits = match tokenizer.get_pre_tokenizer().map(serde_json::to_value) {
        Some(Ok(value)) => local_pre_tokenizer(&value),
        _ => None,
    };
    normalizer_ok && splits == Some(true)
}

fn type_of(value: &serde_json::Value) -> &str {
    value.get("type").and_then(|t| t.as_str()).unwrap_or_default()
}

fn local_normalizer(value: &serde_json::Value) -> bool {
    match type_of(value) {
        "BertNormalizer" | "Strip" | "StripAccents" | "NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase" | "Nmt"
        | "Precompiled" | "Prepend" | "ByteLevel" => true,
        "Sequence" => {
            value.get("normalizers").and_then(|n| n.as_array()).is_some_and(|items| items.iter().all(local_normalizer))
        }
        "Replace" => {
            let pattern = value.get("pattern");
            match (pattern.and_then(|p| p.get("String")), pattern.and_then(|p| p.get("Regex"))) {
                (Some(serde_json::Value::String(s)), _) => {
                    s.chars().all(char::is_whitespace) || !s.chars().any(char::is_whitespace)
                }
                // The runs-of-spaces pattern XLM-R's and other SentencePiece
                // conversions use; its matches are all spaces.
                (_, Some(serde_json::Value::String(r))) => r == " {2,}",
                _ => false,
            }
        }
        _ => false,
    }
}

/// `Some(splits_at_spaces)` if the pre-tokenizer is local, `None` if not.
fn local_pre_tokenizer(value: &serde_json::Value) -> Option<bool> {
    let flag = |key: &str| value.get(key).and_then(|v| v.as_bool());
    match type_of(value) {
        "BertPreTokenizer" | "Whitespace" | "WhitespaceSplit" => Some(true),
        "Metaspace" if flag("split") == Some(true) => Some(true),
        "ByteLevel" if flag("use_regex") != Some(false) => Some(true),
        "Punctuation" | "Digits" => Some(false),
        "Sequence" => {
            let items = value.get("pretokenizers")?.as_array()?;
            let mut splits = false;
            for item in items {
                splits |= local_pre_tokenizer(item)?;
            }
            Some(splits)
        }
        _ => None,
    }
}

/// Unicode's Grapheme_Cluster_Break=Prepend characters: a cluster does not break
/// after them, so one before a space would join it (and the `Precompiled`
/// normalizer maps whole clusters).
fn is_prepend(c: char) -> bool {
    matches!(
        c,
        '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{0D4E}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{111C2}'..='\u{111C3}'
            | '\u{1193F}'
            | '\u{11941}'
            | '\u{11A3A}'
            | '\u{11A84}'..='\u{11A89}'
            | '\u{11D46}'
            | '\u{11F02}'
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn special(id: u32, content: &str) -> Value {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    }

    fn template(cls: (&str, u32), sep: (&str, u32), pair_sep_twice: bool) -> Value {
        let tok = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
        let mut pair = vec![tok(cls.0, 0), seq("A", 0), tok(sep.0, 0)];
        if pair_sep_twice {
            pair.push(tok(sep.0, 1));
        }
        pair.extend([seq("B", 1), tok(sep.0, 1)]);
        json!({"type": "TemplateProcessing", "single": [tok(cls.0, 0), seq("A", 0), tok(sep.0, 0)], "pair": pair,
               "special_tokens": {cls.0: {"id": cls.0, "ids": [cls.1], "tokens": [cls.0]},
                                  sep.0: {"id": sep.0, "ids": [sep.1], "tokens": [sep.0]}}})
    }

    const CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'!?-éσςΣ日本語🚀";

    /// MiniLM's shape: BertNormalizer (lowercasing), BERT pre-tokenizer, WordPiece.
    fn wordpiece() -> Value {
        let mut vocab = serde_json::Map::new();
        for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##llo", "it", "end"] {
            vocab.insert(t.into(), json!(vocab.len()));
        }
        for c in CHARS.chars() {
            for t in [c.to_string(), format!("##{c}")] {
                if !vocab.contains_key(&t) {
                    vocab.insert(t, json!(vocab.len()));
                }
            }
        }
        json!({"version": "1.0", "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
               "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                              "strip_accents": null, "lowercase": true},
               "pre_tokenizer": {"type": "BertPreTokenizer"},
               "post_processor": template(("[CLS]", 2), ("[SEP]", 3), false), "decoder": null,
               "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                         "max_input_chars_per_word": 100, "vocab": vocab}})
    }

    /// XLM-R's shape: NFKC and runs of spaces, Metaspace, Unigram.
    fn unigram(split: bool) -> Value {
        let mut vocab = vec![json!(["<s>", 0.0]), json!(["<pad>", 0.0]), json!(["</s>", 0.0]), json!(["<unk>", 0.0])];
        for (i, piece) in ["▁", "▁hello", "▁world", "he", "llo", "▁it", "'s", "▁end", "▁▁"].iter().enumerate()
        {
            vocab.push(json!([piece, -1.0 - i as f64 * 0.3]));
        }
        for (i, c) in CHARS.chars().chain(['\t', '\n']).enumerate() {
            vocab.push(json!([c.to_string(), -5.0 - (i % 7) as f64 * 0.1]));
        }
        json!({"version": "1.0", "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"), special(3, "<unk>")],
               "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"},
                              {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
               "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": split},
               "post_processor": template(("<s>", 0), ("</s>", 2), true), "decoder": null,
               "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false}})
    }

    /// RoBERTa's shape: byte-level BPE with its regex.
    fn byte_level() -> Value {
        let mut vocab = serde_json::Map::new();
        for t in ["<s>", "<pad>", "</s>"] {
            vocab.insert(t.into(), json!(vocab.len()));
        }
        let mut alphabet: Vec<char> =
            tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
        alphabet.sort();
        for c in alphabet {
            vocab.insert(c.to_string(), json!(vocab.len()));
        }
        let mut merges = Vec::new();
        for word in ["Ġhello", "Ġworld", "hello", "Ġend"] {
            let chars: Vec<char> = word.chars().collect();
            let mut left = chars[0].to_string();
            for c in &chars[1..] {
                let merged = format!("{left}{c}");
                if !vocab.contains_key(&merged) {
                    merges.push(format!("{left} {c}"));
                    vocab.insert(merged.clone(), json!(vocab.len()));
                }
                left = merged;
            }
        }
        json!({"version": "1.0", "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>")],
               "normalizer": null,
               "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
               "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                                  "trim_offsets": true, "add_prefix_space": false},
               "decoder": null, "model": {"type": "BPE", "vocab": vocab, "merges": merges, "unk_token": null}})
    }

    fn load(json: &Value, max_length: usize, lowercase: bool) -> (tempfile::TempDir, TextTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let tokenizer = TextTokenizer::load(&path, max_length, lowercase).unwrap();
        (dir, tokenizer)
    }

    /// Long texts made to put every kind of character and separator next to the
    /// places a cut may fall: runs of spaces, tabs and newlines, a combining mark or
    /// a prepend mark beside a space, final sigma, words longer than WordPiece takes.
    fn texts() -> Vec<String> {
        let words = [
            "hello",
            "world",
            "it's",
            "end.",
            "ΣΟΦΙΑΣ",
            "e\u{301}",
            "日本語",
            "🚀",
            "12345",
            "Ünïcödé",
            "x\u{600}",
            &"y".repeat(150),
            "HeLLo",
            "\u{301}",
            "a\u{200d}",
        ];
        let separators = [" ", "  ", "\t", "\n", " \u{301}", "\u{a0}", "\u{3000}", " \n ", "   ", ""];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut out = Vec::new();
        for length in [1500, 3000, 6000] {
            for _ in 0..4 {
                let mut text = String::new();
                while text.len() < length {
                    text.push_str(words[next(words.len())]);
                    text.push_str(separators[next(separators.len())]);
                }
                out.push(text);
            }
        }
        out.push("nospace".repeat(1000));
        out.push("short text".into());
        out
    }

    fn same(ours: &Encoding, theirs: &Encoding) -> bool {
        ours.get_ids() == theirs.get_ids()
            && ours.get_type_ids() == theirs.get_type_ids()
            && ours.get_attention_mask() == theirs.get_attention_mask()
    }

    #[test]
    fn bounded_tokenization_gives_the_ids_of_the_whole_text() {
        let texts = texts();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (name, json, stable) in [
            ("wordpiece", wordpiece(), true),
            ("unigram", unigram(true), true),
            ("byte-level", byte_level(), true),
            ("unigram without splitting", unigram(false), false),
        ] {
            for max_length in [8, 17, 128] {
                for lowercase in [false, true] {
                    let (_dir, tok) = load(&json, max_length, lowercase);
                    assert_eq!(tok.prefix_stable, stable, "{name}");
                    let ours = tok.encode(&refs).unwrap();
                    for (i, text) in refs.iter().enumerate() {
                        let input = if lowercase { text.to_lowercase() } else { text.to_string() };
                        let theirs = tok.inner.encode(input.as_str(), true).unwrap();
                        assert!(same(&ours[i], &theirs), "{name}, max_length {max_length}, text {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_long_text_is_tokenized_only_as_far_as_the_limit_reaches() {
        let (_dir, tok) = load(&wordpiece(), 128, false);
        let text = "hello world ".repeat(MAX_TEXT_BYTES / 12);
        let raw = tok.raw_batch(&[&text], 126).unwrap().remove(0);
        // The whole text is 2 tokens per 12 bytes, ~175 000 tokens.
        assert!((126..2000).contains(&raw.len()), "{} tokens for 126 needed", raw.len());
        assert_eq!(tok.encode(&[&text]).unwrap()[0].len(), 128);
        // A text with no space to cut at is tokenized whole, still right.
        let solid = "hello".repeat(1000);
        let whole = tok.raw.encode(solid.as_str(), false).unwrap().len();
        assert_eq!(tok.raw_batch(&[&solid], 126).unwrap()[0].len(), whole);
    }

    #[test]
    fn tokenizers_that_may_join_across_spaces_are_not_cut() {
        let mut json = wordpiece();
        json["pre_tokenizer"] =
            json!({"type": "Split", "pattern": {"Regex": "\\w+ \\w+"}, "behavior": "Isolated", "invert": false});
        assert!(!load(&json, 16, false).1.prefix_stable);
        let mut json = wordpiece();
        json["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": 4, "content": "hello world", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": false}));
        assert!(!load(&json, 16, false).1.prefix_stable);
        let mut json = unigram(true);
        json["normalizer"]["normalizers"][1]["pattern"] = json!({"Regex": "a b"});
        assert!(!load(&json, 16, false).1.prefix_stable);
    }

    #[test]
    fn input_sizes_are_limited_per_text_and_per_call() {
        let big = "a".repeat(MAX_TEXT_BYTES + 1);
        let err = check_input_sizes(["ok", big.as_str()]).unwrap_err();
        assert!(matches!(err, EmbedError::TextTooLarge { index: 1, .. }), "{err}");
        let full = "a".repeat(MAX_TEXT_BYTES);
        let many = vec![full.as_str(); MAX_REQUEST_BYTES / MAX_TEXT_BYTES + 1];
        let err = check_input_sizes(many).unwrap_err();
        assert!(matches!(err, EmbedError::RequestTooLarge { .. }), "{err}");
        check_input_sizes(vec![full.as_str(); MAX_REQUEST_BYTES / MAX_TEXT_BYTES]).unwrap();
        let (_dir, tok) = load(&wordpiece(), 16, false);
        assert!(matches!(tok.encode_pairs(&[("q", &big)]), Err(EmbedError::TextTooLarge { index: 1, .. })));
    }

    #[test]
    fn tokenizer_files_must_be_regular_and_a_limit_must_fit_the_special_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = TextTokenizer::load(&path, 16, false).err().unwrap().to_string();
        assert!(err.contains(path.to_str().unwrap()) && err.contains("not a regular file"), "{err}");
        let config = dir.path().join("tokenizer_config.json");
        crate::backend::mkfifo(&config);
        let err = declared_limit(dir.path(), 512).unwrap_err().to_string();
        assert!(err.contains("tokenizer_config.json") && err.contains("FIFO"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, wordpiece().to_string()).unwrap();
        let err = TextTokenizer::load(&path, 16, false).err().unwrap().to_string();
        assert!(err.contains("tokenizer_config.json") && err.contains("FIFO"), "{err}");
        std::fs::remove_file(&config).unwrap();
        let err = TextTokenizer::load(&path, 2, false).err().unwrap().to_string();
        assert!(err.contains("special tokens"), "{err}");
    }

    #[test]
    fn batches_pad_on_the_side_the_tokenizer_config_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, wordpiece().to_string()).unwrap();
        let rows = |tok: &TextTokenizer| {
            let encodings = tok.encode(&["a b c", "a"]).unwrap();
            let input = tok.batch(&encodings.iter().collect::<Vec<_>>(), Device::Cpu).unwrap();
            let mask = Vec::<i64>::try_from(input.attention_mask.view(-1)).unwrap();
            let ids = Vec::<i64>::try_from(input.input_ids.view(-1)).unwrap();
            (mask, ids, encodings[1].get_ids().iter().map(|&i| i64::from(i)).collect::<Vec<_>>())
        };
        let (mask, ids, short) = rows(&TextTokenizer::load(&path, 16, false).unwrap());
        let width = mask.len() / 2;
        assert_eq!(&mask[width..width + short.len()], vec![1; short.len()].as_slice(), "right by default");
        assert_eq!(&ids[width..width + short.len()], short.as_slice());
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"padding_side": "left"}"#).unwrap();
        let (mask, ids, _) = rows(&TextTokenizer::load(&path, 16, false).unwrap());
        let pad = width - short.len();
        assert_eq!(&mask[width..width + pad], vec![0; pad].as_slice(), "{mask:?}");
        assert_eq!(&ids[width + pad..], short.as_slice(), "the text ends the row");
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"padding_side": "middle"}"#).unwrap();
        let err = TextTokenizer::load(&path, 16, false).err().unwrap().to_string();
        assert!(err.contains("padding_side is \"middle\"") && err.contains("tokenizer_config.json"), "{err}");
    }
}
