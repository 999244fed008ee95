//! Qwen3 (Qwen3-Embedding-0.6B/4B/8B) against sentence-transformers, on the tiny
//! fixtures of `xtask/python/arch_qwen3.py`: three causal blocks with grouped-query
//! attention (4 query heads over 2 key/value heads of 16, wider than
//! `hidden_size / heads`), per-head q/k norms and a small RoPE theta, left padding
//! and a tokenizer that appends `<|endoftext|>`, pooled at the last token.

use dartboard_tests::parity::{self, fixtures_dir};
use dartboard_tests::{cosine, dartboard, run};

/// Last-token pooling + Normalize, plain and with Qwen3-Embedding's `query`
/// instruction; config.json as transformers 5 writes it (`rope_parameters`).
#[test]
fn last_token_with_the_query_instruction_matches_sentence_transformers() {
    parity::embeddings("qwen3_last_token");
}

/// Qwen3-Embedding-4B/8B's layout on the Hub: safetensors shards with an index, and
/// config.json as theirs (top-level `rope_theta`, `rope_scaling: null`,
/// `Qwen3ForCausalLM`) with another theta; 64 tokens at most, so long texts are cut
/// and still end with the appended `<|endoftext|>`.
#[test]
fn the_hub_layout_sharded_with_its_config_spelling_matches_sentence_transformers() {
    parity::embeddings("qwen3_hub_config");
}

/// Mean pooling over a model with attention biases and linear RoPE scaling.
#[test]
fn mean_pooling_with_biases_and_linear_rope_matches_sentence_transformers() {
    parity::embeddings("qwen3_mean_linear_rope");
}

#[test]
fn bf16_matches_sentence_transformers() {
    for name in ["qwen3_last_token", "qwen3_hub_config", "qwen3_mean_linear_rope"] {
        parity::embeddings_bf16(name);
    }
}

/// The causal mask, the rotations and the last-token pick must not depend on
/// where a text sits in a padded batch, nor on the side it is padded on.
#[test]
fn a_batch_equals_texts_one_by_one_and_padding_sides_agree() {
    for name in ["qwen3_last_token", "qwen3_mean_linear_rope"] {
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}

/// `dartboard embed --prompt-name query` gives what sentence-transformers gives
/// with `prompt_name="query"` (the instruction from config_sentence_transformers.json),
/// and without it the plain embedding.
#[test]
fn the_cli_applies_the_query_instruction() {
    let (_, fixture) = parity::load("qwen3_last_token");
    let model = fixtures_dir().join("qwen3_last_token");
    let text = fixture.texts[3].as_str();
    let embed = |extra: &[&str]| -> Vec<f32> {
        let r = run(dartboard().args(["embed", "--model"]).arg(&model).args(extra).arg(text));
        assert!(r.ok, "{}", r.stderr);
        let line: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
        serde_json::from_value(line["embedding"].clone()).unwrap()
    };
    let case = |prompt_name: Option<&str>| {
        let case = fixture.cases.iter().find(|c| c.prompt_name.as_deref() == prompt_name).unwrap();
        case.embeddings[3].clone()
    };
    let (query, plain) = (embed(&["--prompt-name", "query"]), embed(&[]));
    assert!(cosine(&query, &case(Some("query"))) >= 0.99999);
    assert!(cosine(&plain, &case(None)) >= 0.99999);
    assert!(cosine(&query, &plain) < 0.999, "the instruction changes the embedding");
}
