//! Every architecture and sentence-transformers module combination against
//! sentence-transformers itself, on tiny random-weight models that
//! `xtask/python/make_fixtures.py` builds and saves with sentence-transformers (see
//! that script for the list). f32, minimum cosine ≥ 0.99999 for every text and case.

use std::path::PathBuf;

use dartboard_embeddings::{LoadOptions, Prompt, SentenceEmbedder};
use dartboard_tests::{cosine, workspace_root};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    texts: Vec<String>,
    dim: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt_name: Option<String>,
    prompt: Option<String>,
    embeddings: Vec<Vec<f32>>,
}

fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/generated/tiny")
}

fn load(name: &str) -> (SentenceEmbedder, Fixture) {
    let dir = fixtures_dir().join(name);
    let json = std::fs::read(dir.with_extension("json"))
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask test`, which generates the fixtures", dir.display()));
    let files = dartboard_hub::ModelFiles::open(&dir, None, None).unwrap();
    (SentenceEmbedder::load(&files, LoadOptions::default()).unwrap(), serde_json::from_slice(&json).unwrap())
}

fn check(name: &str) {
    let (model, fixture) = load(name);
    assert_eq!(model.embedding_dim(), fixture.dim, "{name}: dimension");
    let texts: Vec<&str> = fixture.texts.iter().map(String::as_str).collect();
    for case in &fixture.cases {
        let prompt = match (&case.prompt_name, &case.prompt) {
            (Some(name), _) => Prompt::Name(name),
            (None, Some(text)) => Prompt::Text(text),
            (None, None) => Prompt::Default,
        };
        let ours = model.encode_with(&texts, prompt).unwrap();
        let worst = case
            .embeddings
            .iter()
            .enumerate()
            .map(|(i, theirs)| {
                let c = cosine(ours.row(i), theirs);
                assert!(c.is_finite(), "{name}: text {i} gives {c}");
                (c, i)
            })
            .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a });
        // Parity only means something if texts embed differently from each other.
        let spread = (1..texts.len())
            .map(|i| cosine(&case.embeddings[i - 1], &case.embeddings[i]))
            .fold(f64::INFINITY, f64::min);
        assert!(spread < 0.99, "{name}: fixture texts embed alike (min neighbour cosine {spread})");
        println!("{name} {prompt:?}: min cosine {:.8} (texts differ down to {spread:.3})", worst.0);
        assert!(worst.0 >= 0.99999, "{name} {prompt:?}: cosine {} on text {:?}", worst.0, texts[worst.1]);
    }
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

/// A copy of a fixture model in a temporary directory, to be damaged by a test.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixtures_dir().join(name), dir.path());
    dir
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

#[derive(Deserialize)]
struct CrossFixture {
    query: String,
    passages: Vec<String>,
    scores: Vec<f32>,
    matrix: Vec<Vec<f32>>,
    pairs: Vec<(String, String)>,
    pair_scores: Vec<f32>,
}

#[test]
fn cross_encoder_scores_match_sentence_transformers() {
    let dir = fixtures_dir().join("cross_encoder");
    let fixture: CrossFixture = serde_json::from_slice(&std::fs::read(dir.with_extension("json")).unwrap()).unwrap();
    let files = dartboard_hub::ModelFiles::open(&dir, None, None).unwrap();
    let model = dartboard_embeddings::CrossEncoder::load(&files, LoadOptions::default()).unwrap();
    assert_eq!(model.activation(), dartboard_embeddings::ScoreActivation::Sigmoid);
    let passages: Vec<&str> = fixture.passages.iter().map(String::as_str).collect();
    let scores = model.score(&fixture.query, &passages).unwrap();
    let worst = scores.iter().zip(&fixture.scores).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("cross-encoder max |score difference| {worst:e}");
    assert!(worst <= 1e-4, "{scores:?} vs {:?}", fixture.scores);
    let (lo, hi) = fixture.scores.iter().fold((f32::MAX, f32::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    assert!(hi - lo > 0.1, "fixture scores must spread for the tolerance to mean anything: {lo}..{hi}");
    let matrix = model.score_matrix(&passages[..5]).unwrap();
    for (ours, theirs) in matrix.iter().flatten().zip(fixture.matrix.iter().flatten()) {
        assert!((ours - theirs).abs() <= 1e-4, "{ours} vs {theirs}");
    }
    // Pairs are ordered: (a, b) and (b, a) are different inputs.
    assert!(matrix[0][1] != matrix[1][0]);
    // Long sides are tokenized from bounded prefixes; pair truncation is unchanged.
    let pairs: Vec<(&str, &str)> = fixture.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let scores: Vec<f32> = model.predict(&pairs).unwrap().into_iter().map(|row| row[0]).collect();
    for (i, (ours, theirs)) in scores.iter().zip(&fixture.pair_scores).enumerate() {
        assert!((ours - theirs).abs() <= 1e-4, "pair {i}: {ours} vs {theirs}");
    }
}
