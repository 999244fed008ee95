//! Same numbers as sentence-transformers: the real all-MiniLM-L6-v2 in f32 against the
//! embeddings sentence-transformers produced for the same texts (see
//! xtask/python/st_reference.py), and the STS Benchmark dev Spearman.

use dartboard_config::DType;
use dartboard_embeddings::{LoadOptions, SentenceEmbedder};
use dartboard_tests::{cosine, minilm, reference, spearman, sts};

fn model() -> SentenceEmbedder {
    SentenceEmbedder::load(&minilm(), LoadOptions::default()).unwrap()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let reference = reference();
    let model = model();
    assert_eq!(model.max_seq_length(), reference.max_seq_length);
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    assert!(texts.len() >= 300, "a few hundred texts");
    let ours = model.encode(&texts).unwrap();
    assert_eq!(ours.len(), texts.len());
    let (mut worst, mut worst_text) = (f64::INFINITY, "");
    for (i, expected) in reference.embeddings.iter().enumerate() {
        assert_eq!(ours.row(i).len(), expected.len());
        let c = cosine(ours.row(i), expected);
        assert!(c.is_finite(), "text {i}: cosine {c} (NaN or infinite output)");
        if c < worst {
            (worst, worst_text) = (c, texts[i]);
        }
    }
    println!("min cosine vs sentence-transformers {}: {worst:.8}", reference.sentence_transformers);
    assert!(worst >= 0.99999, "min cosine {worst} on {worst_text:?}");
}

/// bf16 is a speed option, not a different model: against sentence-transformers'
/// f32 output every text must stay within cosine 0.999.
#[test]
fn bf16_stays_close_to_sentence_transformers_f32() {
    let reference = reference();
    let options = LoadOptions { dtype: DType::Bf16, ..LoadOptions::default() };
    let model = SentenceEmbedder::load(&minilm(), options).unwrap();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ours = model.encode(&texts).unwrap();
    let cosines: Vec<f64> = (0..texts.len()).map(|i| cosine(ours.row(i), &reference.embeddings[i])).collect();
    assert!(cosines.iter().all(|c| c.is_finite()), "NaN or infinite bf16 output");
    let worst = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    println!("bf16: min cosine vs sentence-transformers {} f32: {worst:.6}", reference.sentence_transformers);
    assert!(worst >= 0.999, "bf16 min cosine {worst}");
}

#[test]
fn batching_and_order_do_not_change_results() {
    let reference = reference();
    let model = model();
    let picks = [0usize, 7, reference.texts.len() - 1, 3, reference.texts.len() - 2];
    for &i in &picks {
        let alone = model.encode_one(&reference.texts[i]).unwrap();
        let c = cosine(&alone, &reference.embeddings[i]);
        assert!(c >= 0.99999, "text {i} alone: cosine {c}");
    }
    let texts: Vec<&str> = picks.iter().map(|&i| reference.texts[i].as_str()).collect();
    let batched = model.encode(&texts).unwrap();
    for (row, &i) in picks.iter().enumerate() {
        assert!(cosine(batched.row(row), &reference.embeddings[i]) >= 0.99999, "row {row} is text {i}");
    }
    assert!(model.encode(&[]).unwrap().is_empty());
}

#[test]
fn sts_benchmark_dev_spearman_matches() {
    const SENTENCE_TRANSFORMERS_DEV: f64 = 0.867163;
    let model = model();
    let rows = sts("dev");
    let a: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let b: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let (ea, eb) = (model.encode(&a).unwrap(), model.encode(&b).unwrap());
    let cos: Vec<f64> = (0..rows.len()).map(|i| cosine(ea.row(i), eb.row(i))).collect();
    let gold: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let ours = spearman(&cos, &gold);
    println!("STS-B dev Spearman: ours {ours:.6}, sentence-transformers measured {:.6}", reference().sts_dev_spearman);
    assert!((ours - SENTENCE_TRANSFORMERS_DEV).abs() <= 0.0005, "Spearman {ours}");
    assert!((ours - reference().sts_dev_spearman).abs() <= 0.0005, "Spearman {ours}");
}
