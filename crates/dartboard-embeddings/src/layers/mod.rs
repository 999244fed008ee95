//! Building blocks that architectures assemble: activations, linear layers,
//! norms, positions, attention and the classification head. Nothing here knows
//! which architecture uses it; `models/` picks and wires them.
//!
//! Invariant: layers call `backend/` for the fast CPU paths and always keep an
//! aten fallback, so every block runs on every device libtorch supports.

mod activation;
pub(crate) mod attention;
#[cfg(test)]
mod attention_timing;
mod head;
mod linear;
mod norm;
pub(crate) mod positions;

pub use activation::Activation;
pub(crate) use attention::{AttentionMask, Visibility};
pub use head::{ClassificationHead, HeadPooling};
pub use linear::{linear, Linear};
pub use norm::{LayerNorm, RmsNorm};
pub use positions::Rope;
