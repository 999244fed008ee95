//! DistilBERT (msmarco-distilbert-*, multi-qa-distilbert-*, DistilBERT rerankers)
//! against sentence-transformers, on the tiny fixtures of
//! `xtask/python/arch_distilbert.py`: two blocks whose LayerNorms all have distinct
//! random weights (so a swapped or skipped norm fails), a tokenizer that sends no
//! token types, and texts up to the 512 positions.

use dartboard_tests::parity;

/// Mean pooling + Normalize at max_seq_length 64, as msmarco-distilbert-base-v4.
#[test]
fn mean_pooling_matches_sentence_transformers() {
    parity::embeddings("distilbert_mean_norm");
}

/// CLS pooling, then a Dense layer (tanh), over up to 512 tokens.
#[test]
fn cls_pooling_with_dense_matches_sentence_transformers() {
    parity::embeddings("distilbert_cls_dense");
}

#[test]
fn bf16_matches_sentence_transformers() {
    for name in ["distilbert_mean_norm", "distilbert_cls_dense"] {
        parity::embeddings_bf16(name);
    }
}

/// Absolute positions must not depend on where a text sits in a padded batch.
#[test]
fn a_batch_equals_texts_one_by_one_and_padding_sides_agree() {
    for name in ["distilbert_mean_norm", "distilbert_cls_dense"] {
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}

/// `DistilBertForSequenceClassification` with one label: first token →
/// pre_classifier → ReLU → classifier, sigmoid scores within 1e-4.
#[test]
fn cross_encoder_matches_sentence_transformers() {
    parity::cross_encoder("distilbert_cross_encoder");
}
