//! Every architecture and sentence-transformers module combination against
//! sentence-transformers itself, on tiny random-weight models that
//! `xtask/python/make_fixtures.py` builds and saves with sentence-transformers (see
//! that script for the list). f32, minimum cosine ≥ 0.99999 for every text and case.

use dartboard_embeddings::{LoadOptions, Prompt, SentenceEmbedder};
use dartboard_tests::cosine;

use dartboard_tests::parity::{self, copy_fixture, fixtures_dir, load};

fn check(name: &str) {
    parity::embeddings(name);
}

macro_rules! parity {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check(stringify!($name));
        }
    )*};
}

parity!(
    bert_mean_norm,
    bert_cls_dense,
    bert_multi_pooling,
    bert_weighted_last,
    bert_prompts,
    bert_prompts_included,
    bert_cls_prompt_excluded,
    bert_bin,
    bert_bin_twin,
    bert_sharded,
    bert_bin_sharded,
    bert_st2_layout,
    mpnet_mean_norm,
    mpnet_cls,
    xlmr_mean_norm,
    roberta_max_dense,
);

#[test]
fn pickled_weights_give_the_same_output_as_safetensors() {
    let (bin, fixture) = load("bert_bin");
    let (safe, _) = load("bert_bin_twin");
    assert!(fixtures_dir().join("bert_bin/pytorch_model.bin").is_file());
    assert!(!fixtures_dir().join("bert_bin/model.safetensors").exists());
    let texts: Vec<&str> = fixture.texts.iter().map(String::as_str).collect();
    let (a, b) = (bin.encode(&texts).unwrap(), safe.encode(&texts).unwrap());
    for i in 0..texts.len() {
        assert!(cosine(a.row(i), b.row(i)) > 0.999999, "text {i}");
    }
}

#[test]
fn layouts_are_what_their_fixtures_claim() {
    let dir = fixtures_dir();
    let st2 = dartboard_hub::ModelFiles::open(dir.join("bert_st2_layout"), None, None).unwrap();
    assert_eq!(st2.transformer_dir(), dir.join("bert_st2_layout/0_Transformer"));
    assert!(!dir.join("bert_st2_layout/config.json").exists() && !dir.join("bert_st2_layout/tokenizer.json").exists());
    let sharded = dir.join("bert_bin_sharded");
    assert!(sharded.join("pytorch_model.bin.index.json").is_file());
    assert!(sharded.join("pytorch_model-00001-of-00003.bin").is_file());
    assert!(!sharded.join("model.safetensors").exists() && !sharded.join("pytorch_model.bin").exists());
    assert!(dir.join("bert_sharded/model.safetensors.index.json").is_file());
    assert!(!dir.join("bert_sharded/model.safetensors").exists());
}

/// A safetensors file of f32 tensors, written by hand (8-byte header length, JSON
/// header, data).
fn write_safetensors(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_non_finite_embedding_is_an_error_naming_the_model_and_the_text() {
    // bert_cls_dense: CLS pooling (32), Dense 32 -> 16 with tanh, Normalize. A NaN in
    // the Dense weights makes every output NaN.
    let dir = copy_fixture("bert_cls_dense");
    let dense = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().ends_with("_Dense"))
        .expect("the fixture has a Dense module");
    for stale in ["model.safetensors", "pytorch_model.bin"] {
        let _ = std::fs::remove_file(dense.join(stale));
    }
    let mut weight = vec![0.1f32; 16 * 32];
    weight[5] = f32::NAN;
    write_safetensors(
        &dense.join("model.safetensors"),
        &[("linear.weight", vec![16, 32], weight), ("linear.bias", vec![16], vec![0.0; 16])],
    );
    let files = dartboard_hub::ModelFiles::open(dir.path(), None, None).unwrap();
    let options = LoadOptions { batch_size: 1, ..LoadOptions::default() };
    let model = SentenceEmbedder::load(&files, options).unwrap();
    // Batches run longest first, so text 1 is the first one found.
    let err = model.encode(&["short", "a much longer text than the first one"]).unwrap_err().to_string();
    assert!(err.contains("text 1") && err.contains("non-finite"), "{err}");
    assert!(err.contains(dir.path().to_str().unwrap()), "the error names the model: {err}");
}

#[test]
fn long_texts_and_sizes() {
    let (model, _) = load("bert_mean_norm");
    // Far past the limit, the embedding is that of the text's first tokens.
    let long = "Dartboard balances relevance and diversity. ".repeat(20_000);
    let start: String = long.chars().take(2_000).collect();
    let (a, b) = (model.encode_one(&long).unwrap(), model.encode_one(&start).unwrap());
    assert!(cosine(&a, &b) > 0.999999);
    let too_big = "a ".repeat(dartboard_embeddings::MAX_TEXT_BYTES / 2 + 1);
    let err = model.encode(&["fine", &too_big]).unwrap_err().to_string();
    assert!(err.contains("text 1") && err.contains(&dartboard_embeddings::MAX_TEXT_BYTES.to_string()), "{err}");
}

#[test]
fn prompts_are_looked_up_by_name() {
    let (model, _) = load("bert_prompts");
    assert_eq!(model.prompts().default_name.as_deref(), Some("query"));
    let err = model.encode_with(&["x"], Prompt::Name("nope")).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("query") && err.contains("passage"), "{err}");
    let with_default = model.encode(&["x"]).unwrap();
    let explicit = model.encode_with(&["x"], Prompt::Name("query")).unwrap();
    let none = model.encode_with(&["x"], Prompt::None).unwrap();
    assert_eq!(with_default, explicit);
    assert!(cosine(none.row(0), explicit.row(0)) < 0.9999, "the prompt changes the embedding");
}

#[test]
fn cross_encoder_scores_match_sentence_transformers() {
    let (model, _) = parity::load_cross_encoder("cross_encoder", LoadOptions::default());
    assert_eq!(model.activation(), dartboard_embeddings::ScoreActivation::Sigmoid);
    parity::cross_encoder("cross_encoder");
}

#[test]
fn xlm_roberta_cross_encoder_scores_match_sentence_transformers() {
    parity::cross_encoder("xlmr_cross_encoder");
}

#[test]
fn mpnet_cross_encoder_scores_match_sentence_transformers() {
    parity::cross_encoder("mpnet_cross_encoder");
}

#[test]
fn bert_and_xlm_roberta_in_bf16_and_left_padded() {
    for name in ["bert_mean_norm", "xlmr_mean_norm", "mpnet_mean_norm"] {
        parity::embeddings_bf16(name);
        parity::batch_equals_single(name);
        parity::padding_sides_agree(name);
    }
}
