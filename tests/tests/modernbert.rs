//! ModernBERT (gte-modernbert-base, modernbert-embed-base, ModernBERT rerankers)
//! against sentence-transformers, on the tiny fixtures of
//! `xtask/python/arch_modernbert.py`: three blocks mixing global and local
//! (4 tokens each side) attention with far-apart RoPE thetas, so a window off by
//! one, swapped thetas or a norm weight left out each fail these tests.

use dartboard_tests::parity;

/// Mean pooling + Normalize with modernbert-embed-base's query and document
/// prompts; config.json as transformers 5 writes it (`layer_types`,
/// `rope_parameters`).
#[test]
fn mean_pooling_with_prompts_matches_sentence_transformers() {
    parity::embeddings("modernbert_mean_norm");
}

/// CLS pooling over 512 tokens, as gte-modernbert-base pools.
#[test]
fn cls_pooling_matches_sentence_transformers() {
    parity::embeddings("modernbert_cls");
}

/// config.json as the Hub's ModernBERT models spell it (`global_attn_every_n_layers`,
/// `global_rope_theta`, `local_rope_theta`, an odd `local_attention`), with another
/// layer pattern and other thetas than the transformers 5 fixtures.
#[test]
fn the_hub_config_spelling_matches_sentence_transformers() {
    parity::embeddings("modernbert_hub_config");
}

#[test]
fn bf16_matches_sentence_transformers() {
    for name in ["modernbert_mean_norm", "modernbert_cls", "modernbert_hub_config"] {
        parity::embeddings_bf16(name);
    }
}

/// Windows and rotations must not depend on where a text sits in a padded batch.
#[test]
fn a_batch_equals_texts_one_by_one_and_padding_sides_agree() {
    for name in ["modernbert_mean_norm", "modernbert_hub_config"] {
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}

/// `ModernBertForSequenceClassification` with mean pooling in its head (as
/// gte-reranker-modernbert-base), sigmoid scores within 1e-4.
#[test]
fn mean_pooled_cross_encoder_matches_sentence_transformers() {
    parity::cross_encoder("modernbert_cross_encoder");
}

/// CLS pooling, with every optional bias (attention, MLP, norms, head dense) and
/// tanh-approximated GELU in the blocks and the head.
#[test]
fn cls_cross_encoder_with_every_bias_matches_sentence_transformers() {
    parity::cross_encoder("modernbert_cross_encoder_cls");
}
