//! `dartboard embed` keeps memory bounded by its window, not by the corpus: peak RSS
//! on ten times the corpus stays within 1.3× of the peak on the corpus itself. Its
//! own test binary, so no other test's processes run beside the measured ones.

use dartboard_tests::{dartboard, run, sts, workspace_root};

/// Peak RSS in MB from the closing progress line.
fn peak_rss_mb(stderr: &str) -> f64 {
    let line =
        stderr.lines().rev().find(|l| l.contains("peak RSS")).unwrap_or_else(|| panic!("no peak RSS in {stderr}"));
    let value = line.split("peak RSS ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap();
    value.parse().unwrap()
}

#[test]
fn peak_memory_does_not_grow_with_the_corpus() {
    // A tiny model keeps the test quick; what would grow with the corpus is the
    // texts, their tokenizations and their vectors, which any model has.
    let model = workspace_root().join("tests/fixtures/generated/tiny/bert_mean_norm");
    assert!(model.is_dir(), "{} is missing: run `cargo xtask test`", model.display());
    let sentences: Vec<String> = sts("test").into_iter().flat_map(|(_, a, b)| [a, b]).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for copies in [1usize, 10] {
        let texts: Vec<&str> = sentences.iter().take(2000).map(String::as_str).cycle().take(2000 * copies).collect();
        let input = dir.path().join(format!("corpus-{copies}.txt"));
        std::fs::write(&input, texts.join("\n") + "\n").unwrap();
        let output = dir.path().join(format!("out-{copies}.jsonl"));
        let r = run(dartboard()
            .args(["embed", "--window", "1000", "--progress-every", "1000", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output));
        assert!(r.ok, "{}", r.stderr);
        assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), texts.len());
        peaks.push(peak_rss_mb(&r.stderr));
    }
    println!("peak RSS: 1x {} MB, 10x {} MB", peaks[0], peaks[1]);
    assert!(peaks[1] <= 1.3 * peaks[0], "10x the corpus took {} MB against {} MB for 1x", peaks[1], peaks[0]);
}
