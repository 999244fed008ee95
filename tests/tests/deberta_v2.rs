//! DeBERTa-v2/v3 (DeBERTa-v3 and mDeBERTa-v3 embedders, ms-marco / mixedbread
//! deberta-v3 rerankers) against sentence-transformers, on the tiny fixtures of
//! `xtask/python/arch_deberta_v2.py`:
//! - `deberta_v3_*`: the v3 shape (log-bucketed relative positions with 8 exact
//!   distances each way, so the longer texts reach the log buckets and the clamp at
//!   the table's edge; shared position projections; no absolute positions or token
//!   types);
//! - `deberta_v2_conv_mean`: the branches v3 leaves out (v2-xlarge's convolution,
//!   separate position projections, "p2c|c2p", exact clamped distances, absolute
//!   positions, token types, a narrower embedding with `embed_proj`).
//!
//! Every LayerNorm, the relative embeddings' included, has weights drawn around 1,
//! so a norm left out or swapped fails.

use dartboard_tests::parity;

/// Mean pooling + Normalize, 128 tokens.
#[test]
fn mean_pooling_matches_sentence_transformers() {
    parity::embeddings("deberta_v3_mean_norm");
}

/// CLS pooling + Dense (tanh) + Normalize, up to 512 tokens.
#[test]
fn cls_pooling_with_dense_matches_sentence_transformers() {
    parity::embeddings("deberta_v3_cls_dense");
}

/// The v2-xlarge branches: convolution after the first block, `pos_key_proj` /
/// `pos_query_proj`, `pos_att_type` as the string "p2c|c2p", no buckets,
/// absolute positions, token types and `embed_proj`.
#[test]
fn the_v2_branches_match_sentence_transformers() {
    parity::embeddings("deberta_v2_conv_mean");
}

#[test]
fn bf16_matches_sentence_transformers() {
    for name in ["deberta_v3_mean_norm", "deberta_v3_cls_dense", "deberta_v2_conv_mean"] {
        parity::embeddings_bf16(name);
    }
}

/// Relative positions, the convolution and the absolute positions (counted from
/// each text's first token) must not depend on where a text sits in a padded batch.
#[test]
fn a_batch_equals_texts_one_by_one_and_padding_sides_agree() {
    for name in ["deberta_v3_mean_norm", "deberta_v3_cls_dense", "deberta_v2_conv_mean"] {
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}

/// `DebertaV2ForSequenceClassification` with one label: sigmoid scores within 1e-4
/// of `CrossEncoder.predict`.
#[test]
fn cross_encoder_matches_sentence_transformers() {
    parity::cross_encoder("deberta_v2_cross_encoder");
}
