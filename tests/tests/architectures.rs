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
}
