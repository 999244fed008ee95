//! Parity with sentence-transformers on the tiny random-weight fixtures that
//! `xtask/python/make_fixtures.py` (and its `arch_*.py` modules) generate: one
//! helper per property every architecture must have, so that an architecture's
//! test file is a list of calls.
//!
//! - [`embeddings`]: f32 embeddings within min cosine 0.99999 of
//!   sentence-transformers' for every text and case of the fixture;
//! - [`embeddings_bf16`]: the same in bf16, min cosine 0.999;
//! - [`batch_equals_single`]: a text embeds the same alone as in a batch;
//! - [`padding_sides_agree`]: left padding gives what right padding gives;
//! - [`cross_encoder`]: `CrossEncoder.predict` scores within 1e-4.

use std::path::{Path, PathBuf};

use dartboard_config::DType;
use dartboard_embeddings::{CrossEncoder, LoadOptions, Prompt, SentenceEmbedder};
use serde::Deserialize;

use crate::{cosine, workspace_root};

/// Where the tiny fixtures are.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/generated/tiny")
}

/// A fixture's texts and sentence-transformers' embeddings for each case.
#[derive(Deserialize)]
pub struct Fixture {
    pub texts: Vec<String>,
    pub dim: usize,
    pub cases: Vec<Case>,
}

/// One `encode` call of the fixture: its prompt arguments and the result.
#[derive(Deserialize)]
pub struct Case {
    pub prompt_name: Option<String>,
    pub prompt: Option<String>,
    pub embeddings: Vec<Vec<f32>>,
}

impl Case {
    /// The prompt argument that reproduces this case.
    pub fn prompt(&self) -> Prompt<'_> {
        match (&self.prompt_name, &self.prompt) {
            (Some(name), _) => Prompt::Name(name),
            (None, Some(text)) => Prompt::Text(text),
            (None, None) => Prompt::Default,
        }
    }
}

/// Loads the fixture model `name` (from `dir`, default the fixtures directory) with `options`.
pub fn load_from(dir: &Path, options: LoadOptions) -> SentenceEmbedder {
    let files = dartboard_hub::ModelFiles::open(dir, None, None).unwrap();
    SentenceEmbedder::load(&files, options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The fixture `name`'s model (f32, CPU) and reference outputs.
pub fn load(name: &str) -> (SentenceEmbedder, Fixture) {
    let dir = fixtures_dir().join(name);
    let json = std::fs::read(dir.with_extension("json"))
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask test`, which generates the fixtures", dir.display()));
    (load_from(&dir, LoadOptions::default()), serde_json::from_slice(&json).unwrap())
}

fn texts(fixture: &Fixture) -> Vec<&str> {
    fixture.texts.iter().map(String::as_str).collect()
}

/// Checks every case of fixture `name` against sentence-transformers with `model`;
/// returns the lowest cosine.
fn compare(name: &str, model: &SentenceEmbedder, fixture: &Fixture, threshold: f64) -> f64 {
    assert_eq!(model.embedding_dim(), fixture.dim, "{name}: dimension");
    let texts = texts(fixture);
    let mut lowest = f64::INFINITY;
    for case in &fixture.cases {
        let ours = model.encode_with(&texts, case.prompt()).unwrap();
        let (worst, at) = case
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
        println!(
            "{name} {:?} {:?}: min cosine {worst:.8} (texts differ down to {spread:.3})",
            model.dtype(),
            case.prompt()
        );
        assert!(worst >= threshold, "{name} {:?}: cosine {worst} on text {:?}", case.prompt(), texts[at]);
        lowest = lowest.min(worst);
    }
    lowest
}

/// f32 parity: min cosine ≥ 0.99999 for every text and case.
pub fn embeddings(name: &str) {
    let (model, fixture) = load(name);
    compare(name, &model, &fixture, 0.99999);
}

/// bf16 parity with sentence-transformers' f32 output: min cosine ≥ 0.999.
pub fn embeddings_bf16(name: &str) {
    let (_, fixture) = load(name);
    let model = load_from(&fixtures_dir().join(name), LoadOptions { dtype: DType::Bf16, ..LoadOptions::default() });
    compare(name, &model, &fixture, 0.999);
}

/// Each text embeds the same alone as within batches of mixed lengths (batch
/// size 1 against 7): cosine ≥ 0.999999 in f32, for the fixture's texts.
pub fn batch_equals_single(name: &str) {
    let (_, fixture) = load(name);
    let dir = fixtures_dir().join(name);
    let single = load_from(&dir, LoadOptions { batch_size: 1, ..LoadOptions::default() });
    let batched = load_from(&dir, LoadOptions { batch_size: 7, ..LoadOptions::default() });
    let texts = texts(&fixture);
    let (a, b) = (single.encode(&texts).unwrap(), batched.encode(&texts).unwrap());
    for i in 0..texts.len() {
        let c = cosine(a.row(i), b.row(i));
        assert!(c >= 0.999999, "{name}: text {i} alone vs batched: cosine {c}");
    }
}

/// Copies the directory tree `from` into `to` (which must exist).
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of fixture `name` in a temporary directory, to be changed by a test.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let from = fixtures_dir().join(name);
    assert!(from.is_dir(), "{} is missing: run `cargo xtask test` to generate the fixtures", from.display());
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&from, dir.path());
    dir
}

/// The fixture copied with its tokenizer told to pad on `side`.
fn with_padding_side(name: &str, side: &str) -> tempfile::TempDir {
    let dir = copy_fixture(name);
    let files = dartboard_hub::ModelFiles::open(dir.path(), None, None).unwrap();
    let config_path = files.transformer_dir().join("tokenizer_config.json");
    let mut config: serde_json::Value = std::fs::read(&config_path)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_else(|_| serde_json::json!({}));
    config["padding_side"] = serde_json::Value::String(side.to_owned());
    std::fs::write(&config_path, config.to_string()).unwrap();
    dir
}

/// Left and right padding give the same embeddings (cosine ≥ 0.99999 in f32), in
/// batches that mix lengths.
pub fn padding_sides_agree(name: &str) {
    let (_, fixture) = load(name);
    let texts = texts(&fixture);
    let options = LoadOptions { batch_size: 8, ..LoadOptions::default() };
    let (left, right) = (with_padding_side(name, "left"), with_padding_side(name, "right"));
    let a = load_from(left.path(), options).encode(&texts).unwrap();
    let b = load_from(right.path(), options).encode(&texts).unwrap();
    for i in 0..texts.len() {
        let c = cosine(a.row(i), b.row(i));
        assert!(c >= 0.99999, "{name}: text {i} padded left vs right: cosine {c}");
    }
}

/// A cross-encoder fixture: sentence-transformers' `CrossEncoder.predict` scores.
#[derive(Deserialize)]
pub struct CrossFixture {
    pub query: String,
    pub passages: Vec<String>,
    pub scores: Vec<f32>,
    pub matrix: Vec<Vec<f32>>,
    pub pairs: Vec<(String, String)>,
    pub pair_scores: Vec<f32>,
}

/// The cross-encoder fixture `name` and its model in `options`.
pub fn load_cross_encoder(name: &str, options: LoadOptions) -> (CrossEncoder, CrossFixture) {
    let dir = fixtures_dir().join(name);
    let json = std::fs::read(dir.with_extension("json"))
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask test`, which generates the fixtures", dir.display()));
    let files = dartboard_hub::ModelFiles::open(&dir, None, None).unwrap();
    let model = CrossEncoder::load(&files, options).unwrap_or_else(|e| panic!("{name}: {e}"));
    (model, serde_json::from_slice(&json).unwrap())
}

/// Scores within 1e-4 of sentence-transformers' (its default activation) for a
/// query against passages, a matrix of ordered pairs and pairs past the token
/// limit; also checks that the fixture's scores spread enough to mean something.
pub fn cross_encoder(name: &str) {
    let (model, fixture) = load_cross_encoder(name, LoadOptions::default());
    let passages: Vec<&str> = fixture.passages.iter().map(String::as_str).collect();
    let scores = model.score(&fixture.query, &passages).unwrap();
    let worst = scores.iter().zip(&fixture.scores).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("{name}: max |score difference| {worst:e}");
    assert!(worst <= 1e-4, "{name}: {scores:?} vs {:?}", fixture.scores);
    let (lo, hi) = fixture.scores.iter().fold((f32::MAX, f32::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    assert!(hi - lo > 0.1, "{name}: fixture scores must spread for the tolerance to mean anything: {lo}..{hi}");
    let matrix = model.score_matrix(&passages[..5]).unwrap();
    for (ours, theirs) in matrix.iter().flatten().zip(fixture.matrix.iter().flatten()) {
        assert!((ours - theirs).abs() <= 1e-4, "{name}: {ours} vs {theirs}");
    }
    // Pairs are ordered: (a, b) and (b, a) are different inputs.
    assert!(matrix[0][1] != matrix[1][0], "{name}");
    let pairs: Vec<(&str, &str)> = fixture.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let scores: Vec<f32> = model.predict(&pairs).unwrap().into_iter().map(|row| row[0]).collect();
    for (i, (ours, theirs)) in scores.iter().zip(&fixture.pair_scores).enumerate() {
        assert!((ours - theirs).abs() <= 1e-4, "{name}: pair {i}: {ours} vs {theirs}");
    }
}
