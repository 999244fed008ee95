//! The T5 encoder (sentence-t5, GTR) against sentence-transformers, on the tiny
//! fixtures of `xtask/python/arch_t5.py`: two blocks with distinct RMSNorm weights,
//! texts up to 512 tokens (far past the relative-distance buckets' 128, so the
//! logarithmic buckets are reached), a T5-shaped Unigram tokenizer appending `</s>`.

use dartboard_tests::parity;

/// The original T5 feed-forward (relu), mean pooling, a Dense without bias and
/// with the identity activation, Normalize: sentence-t5's and GTR's modules.
#[test]
fn relu_mean_pooling_and_bias_free_dense_match_sentence_transformers() {
    parity::embeddings("t5_mean_dense");
}

/// T5 v1.1's gated-gelu feed-forward (tanh GELU), with `num_heads · d_kv` wider
/// than `d_model`, at max_seq_length 64.
#[test]
fn gated_gelu_with_wide_attention_matches_sentence_transformers() {
    parity::embeddings("t5_gated");
}

#[test]
fn bf16_matches_sentence_transformers() {
    for name in ["t5_mean_dense", "t5_gated"] {
        parity::embeddings_bf16(name);
    }
}

/// Relative positions must not depend on where a text sits in a padded batch.
#[test]
fn a_batch_equals_texts_one_by_one_and_padding_sides_agree() {
    for name in ["t5_mean_dense", "t5_gated"] {
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}

/// f16 takes transformers' guards (f32 `wo`, clamped overflow); on these small
/// activations it must agree with sentence-transformers' f32 as bf16 does.
#[test]
fn f16_matches_sentence_transformers() {
    use dartboard_config::DType;
    use dartboard_embeddings::LoadOptions;
    for name in ["t5_mean_dense", "t5_gated"] {
        let (_, fixture) = parity::load(name);
        let dir = parity::fixtures_dir().join(name);
        let model = parity::load_from(&dir, LoadOptions { dtype: DType::F16, ..LoadOptions::default() });
        let texts: Vec<&str> = fixture.texts.iter().map(String::as_str).collect();
        let ours = model.encode(&texts).unwrap();
        let worst = fixture.cases[0]
            .embeddings
            .iter()
            .enumerate()
            .map(|(i, theirs)| dartboard_tests::cosine(ours.row(i), theirs))
            .fold(f64::INFINITY, f64::min);
        println!("{name} f16: min cosine {worst:.8}");
        assert!(worst >= 0.999, "{name} f16: min cosine {worst}");
    }
}
