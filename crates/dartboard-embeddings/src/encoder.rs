//! The one trait every architecture implements. Pooling, batching and the public
//! API only ever see `dyn Encoder`, never a concrete model.

use tch::Tensor;

use crate::error::EmbedError;

/// One padded batch of token ids, already on the model's device.
pub struct EncoderInput {
    /// `[batch, seq]` int64 token ids.
    pub input_ids: Tensor,
    /// `[batch, seq]` int64, 1 for real tokens and 0 for padding.
    pub attention_mask: Tensor,
    /// `[batch, seq]` int64 segment ids (all zeros for single texts).
    pub token_type_ids: Tensor,
}

/// What an encoder's embedding tables can look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderLimits {
    /// Token ids must be below this (`vocab_size`).
    pub vocab_size: i64,
    /// Token type ids must be below this (`type_vocab_size`); `None` when the
    /// architecture ignores token types (MPNet).
    pub type_vocab_size: Option<i64>,
    /// The longest sequence, special tokens included, the position table allows
    /// (`max_position_embeddings`, less the padding offset of RoBERTa-style models).
    pub max_positions: usize,
}

/// A transformer that maps token ids to contextual token embeddings.
///
/// Architecture invariant: an encoder never pools. It returns one vector per token,
/// and the sentence-transformers modules after it decide what a sentence is.
pub trait Encoder: Send {
    /// Width of the token embeddings `forward` returns.
    fn hidden_size(&self) -> i64;

    /// The ranges of ids the embedding tables accept, from `config.json`. The
    /// embedder compares them with the tokenizer at load time; `forward` also
    /// refuses an id outside them with an error rather than libtorch's.
    fn limits(&self) -> EncoderLimits;

    /// The longest sequence the position embeddings allow.
    fn max_positions(&self) -> usize {
        self.limits().max_positions
    }

    /// `[batch, seq, hidden]` token embeddings in the compute precision.
    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError>;
}
