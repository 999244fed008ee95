//! The one trait every architecture implements. Pooling, batching and the public
//! API only ever see `dyn Encoder`, never a concrete model.

use tch::Tensor;

use crate::EmbedError;

/// One padded batch of token ids, already on the model's device.
pub struct EncoderInput {
    /// `[batch, seq]` int64 token ids.
    pub input_ids: Tensor,
    /// `[batch, seq]` int64, 1 for real tokens and 0 for padding.
    pub attention_mask: Tensor,
    /// `[batch, seq]` int64 segment ids (all zeros for single texts).
    pub token_type_ids: Tensor,
}

/// A transformer that maps token ids to contextual token embeddings.
///
/// Architecture invariant: an encoder never pools. It returns one vector per token,
/// and the sentence-transformers modules after it decide what a sentence is.
pub trait Encoder: Send {
    /// Width of the token embeddings `forward` returns.
    fn hidden_size(&self) -> i64;

    /// The longest sequence the position embeddings allow.
    fn max_positions(&self) -> usize;

    /// `[batch, seq, hidden]` token embeddings in the compute precision.
    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EmbedError>;
}
