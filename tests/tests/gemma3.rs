//! Gemma 3 text models (EmbeddingGemma) against sentence-transformers, on the tiny
//! fixtures of `xtask/python/arch_gemma3.py`: three blocks mixing global and local
//! attention with far-apart RoPE thetas, grouped-query heads of their own width,
//! `query_pre_attn_scalar` other than `head_dim`, and Gemma's `1 + w` norms drawn
//! around 0, so a window off by one, swapped thetas, the wrong score scale or a
//! norm read as `w` each fail these tests.

use dartboard_config::DType;
use dartboard_embeddings::{EmbedError, LoadOptions, SentenceEmbedder};
use dartboard_tests::parity;

const FIXTURES: [&str; 2] = ["gemma3_mean_dense", "gemma3_causal_hub_config"];

/// EmbeddingGemma's pipeline: bidirectional attention (4 keys each side in local
/// blocks), mean pooling, two bias-free Dense layers, Normalize, and its query and
/// document prompts.
#[test]
fn embeddinggemma_pipeline_with_prompts_matches_sentence_transformers() {
    parity::embeddings("gemma3_mean_dense");
}

/// Gemma 3 as a decoder (causal, local blocks seeing 5 keys back) with config.json
/// as transformers 4 spelled it (`sliding_window_pattern`, `rope_theta`,
/// `rope_local_base_freq`, linear `rope_scaling` on the global blocks).
#[test]
fn causal_model_with_the_transformers_4_spelling_matches_sentence_transformers() {
    parity::embeddings("gemma3_causal_hub_config");
}

#[test]
fn bf16_matches_sentence_transformers() {
    for name in FIXTURES {
        parity::embeddings_bf16(name);
    }
}

/// Windows and rotations must not depend on where a text sits in a padded batch.
#[test]
fn a_batch_equals_texts_one_by_one_and_padding_sides_agree() {
    for name in FIXTURES {
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}

/// Gemma's activations overflow f16, so `dtype f16` is refused with the fix named,
/// rather than returning infinities or NaN.
#[test]
fn f16_is_refused_naming_bf16_and_f32() {
    let dir = parity::fixtures_dir().join("gemma3_mean_dense");
    let files = dartboard_hub::ModelFiles::open(&dir, None, None).unwrap();
    let options = LoadOptions { dtype: DType::F16, ..LoadOptions::default() };
    let Err(err) = SentenceEmbedder::load(&files, options) else {
        panic!("a Gemma 3 model loaded in f16");
    };
    assert!(matches!(err, EmbedError::UnsupportedPrecision { .. }), "{err:?}");
    let message = err.to_string();
    for expected in ["config.json", "Gemma 3", "cannot run in f16", "bf16", "f32", "--dtype"] {
        assert!(message.contains(expected), "{expected:?} missing from: {message}");
    }
}
