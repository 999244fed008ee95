//! The `dartboard` binary end to end: embedding, info, demo, precedence of flags over
//! environment over config file, and a clear error (never a panic) for bad input.

use std::path::Path;

use dartboard_embeddings::{LoadOptions, SentenceEmbedder};
use dartboard_tests::{cosine, dartboard, minilm, run, Run};

fn embeddings_of(stdout: &str) -> Vec<Vec<f32>> {
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value.as_object().unwrap().len(), 1, "only the embedding key: {line}");
            serde_json::from_value(value["embedding"].clone()).unwrap()
        })
        .collect()
}

/// A failed run: non-zero exit, no panic, and every `needle` in the message.
fn assert_clean_failure(r: &Run, needles: &[&str]) {
    assert!(!r.ok, "expected failure, got success: {}", r.stdout);
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    for needle in needles {
        assert!(r.stderr.contains(needle), "{needle:?} not in: {}", r.stderr);
    }
}

#[test]
fn embed_arguments_as_json_lines_in_order() {
    let r = run(dartboard().args(["embed", "The cat sits outside", "", "A man is playing guitar"]));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("Initializing embedding model: all-MiniLM-L6-v2 (dim=384, device=cpu)"), "{}", r.stderr);
    let rows = embeddings_of(&r.stdout);
    assert_eq!(rows.len(), 3);
    let library = SentenceEmbedder::load(&minilm(), LoadOptions::default()).unwrap();
    let expected = library.encode(&["The cat sits outside", "", "A man is playing guitar"]).unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 384);
        // JSON carries the shortest decimal that round-trips, so values are exact.
        assert_eq!(row.as_slice(), expected.row(i));
    }
}

#[test]
fn embed_input_file_every_line_is_a_text_and_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "first line\n\nthird line after an empty one\r\nfourth\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let r = run(dartboard().args(["embed", "--input"]).arg(&input).arg("--output").arg(&output));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let rows = embeddings_of(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(rows.len(), 4);
    let single = embeddings_of(&run(dartboard().args(["embed", "third line after an empty one"])).stdout);
    assert!(cosine(&rows[2], &single[0]) > 0.99999);
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 2, "no temporary files left beside the output");
}

/// The mode bits of a path (following symlinks).
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn output_files_get_the_umask_and_replacing_keeps_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    // What the umask gives a new file, as any CLI creates it.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let output = dir.path().join("new.jsonl");
    let r = run(dartboard().args(["embed", "a text", "--output"]).arg(&output));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(mode_of(&output), mode_of(&plain), "a new output file gets the umask, not 0600");
    assert_ne!(mode_of(&output), 0o600);
    // Replacing an existing file keeps its mode.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = run(dartboard().args(["embed", "another text", "--output"]).arg(&output));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(mode_of(&output), 0o640);
    assert_eq!(embeddings_of(&std::fs::read_to_string(&output).unwrap()).len(), 1);
}

#[test]
fn output_through_a_symlink_writes_its_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink("target.jsonl", &link).unwrap();
    let r = run(dartboard().args(["embed", "a text", "--output"]).arg(&link));
    assert!(r.ok, "{}", r.stderr);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
    assert_eq!(embeddings_of(&std::fs::read_to_string(&target).unwrap()).len(), 1);
    // A dangling link: its target is created.
    std::fs::remove_file(&target).unwrap();
    let r = run(dartboard().args(["embed", "a text", "--output"]).arg(&link));
    assert!(r.ok, "{}", r.stderr);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(embeddings_of(&std::fs::read_to_string(&target).unwrap()).len(), 1);
}

/// `/dev/full` stays the device (a rename over it, as root, once replaced it with a
/// regular file) and its ENOSPC is an error, not exit 0.
#[test]
fn output_to_a_device_is_written_in_place_and_its_errors_surface() {
    use std::os::unix::fs::FileTypeExt;
    let full = Path::new("/dev/full");
    assert!(std::fs::metadata(full).unwrap().file_type().is_char_device());
    let r = run(dartboard().args(["embed", "a text", "--output", "/dev/full"]));
    assert_clean_failure(&r, &["cannot write /dev/full"]);
    assert!(r.stderr.to_lowercase().contains("no space"), "{}", r.stderr);
    assert!(std::fs::metadata(full).unwrap().file_type().is_char_device(), "/dev/full is still a device");

    let r = run(dartboard().args(["embed", "a text", "--output", "/dev/null"]));
    assert!(r.ok, "{}", r.stderr);
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    let dir = tempfile::tempdir().unwrap();
    let r = run(dartboard().args(["embed", "a text", "--output"]).arg(dir.path()));
    assert_clean_failure(&r, &["is a directory"]);
}

#[test]
fn output_to_a_fifo_is_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    // If the FIFO were renamed over, this reader would wait forever: the test gives up
    // after a bound instead (the thread ends with the test process).
    std::thread::spawn(move || {
        let text = std::fs::read_to_string(&reader_path).unwrap_or_default();
        let _ = tx.send(text);
    });
    let r = run(dartboard().args(["embed", "a text", "--output"]).arg(&fifo));
    assert!(r.ok, "{}", r.stderr);
    let received = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the reader of the FIFO got nothing");
    assert_eq!(embeddings_of(&received).len(), 1);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");
}

#[test]
fn endless_or_special_input_fails_fast() {
    let r = run(dartboard().args(["embed", "--input", "/dev/zero"]));
    assert_clean_failure(&r, &["line 1 of /dev/zero is longer than 64 MiB"]);
    let dir = tempfile::tempdir().unwrap();
    let r = run(dartboard().args(["embed", "--input"]).arg(dir.path()));
    assert_clean_failure(&r, &["is a directory"]);
    let r = run(dartboard().args(["rerank", "--query", "q", "--input", "/dev/zero"]));
    assert_clean_failure(&r, &["longer than 64 MiB"]);
}

#[test]
fn binary_runs_with_an_empty_environment() {
    // The rpath to libtorch is baked in: no LD_LIBRARY_PATH, no LIBTORCH.
    let r = run(dartboard()
        .env_clear()
        .env("SENTENCE_TRANSFORMERS_HOME", dartboard_tests::cache_dir())
        .args(["embed", "hi"]));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(embeddings_of(&r.stdout)[0].len(), 384);
}

#[test]
fn info() {
    let r = run(dartboard().arg("info"));
    assert!(r.ok, "{}", r.stderr);
    for needle in ["all-MiniLM-L6-v2", "embedding dim:    384", "2.13.0", "threads:", "cpu"] {
        assert!(r.stdout.contains(needle), "{needle:?} not in {}", r.stdout);
    }
}

/// `dartboard demo` is the Dartboard system's own demo: the same picks, in the same
/// order, with the same scores as the system computes from sentence-transformers'
/// embeddings (`xtask/python/seed_demo.py`, run by `cargo xtask test`).
#[test]
fn demo_prints_the_systems_picks_and_scores() {
    #[derive(serde::Deserialize)]
    struct Pick {
        text: String,
        score: String,
    }
    #[derive(serde::Deserialize)]
    struct Seed {
        query: String,
        picks: Vec<Pick>,
    }
    let path = dartboard_tests::workspace_root().join("tests/fixtures/generated/seed_demo.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask test`", path.display()));
    let seed: Seed = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(seed.picks.len(), 3);

    let r = run(dartboard().arg("demo"));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("Query: '{}'", seed.query)), "{}", r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let picks: Vec<(String, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let score = line.split_once(". [Score: ")?.1.strip_suffix(']')?;
            Some((score.to_owned(), lines.get(i + 1)?.trim().to_owned()))
        })
        .collect();
    let expected: Vec<(String, String)> = seed.picks.iter().map(|p| (p.score.clone(), p.text.clone())).collect();
    assert_eq!(picks, expected, "demo output:\n{}", r.stdout);
    assert!(r.stdout.contains("Load time:") && r.stdout.contains("Encode time:"), "{}", r.stdout);
}

#[test]
fn flags_beat_env_and_env_beats_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dartboard.toml"), "device = \"cuda:7\"\nmodel = \"org/does-not-exist\"\n").unwrap();
    // The file alone would fail on both counts; env fixes the model, the flag the device.
    let r = run(dartboard()
        .current_dir(dir.path())
        .env("EMBEDDING_MODEL", "all-MiniLM-L6-v2")
        .args(["embed", "--device", "cpu", "x"]));
    assert!(r.ok, "{}", r.stderr);
    let r = run(dartboard().current_dir(dir.path()).env("EMBEDDING_MODEL_NAME", "all-MiniLM-L6-v2").args(["info"]));
    assert_clean_failure(&r, &["cuda:7"]);
    // A bad env value is irrelevant when the flag sets that key.
    let r = run(dartboard().env("EMBEDDING_DEVICE", "tpu").args(["embed", "--device", "cpu", "x"]));
    assert!(r.ok, "{}", r.stderr);
}

#[test]
fn bad_environment_values() {
    assert_clean_failure(
        &run(dartboard().env("EMBEDDING_DEVICE", "tpu").args(["embed", "x"])),
        &["EMBEDDING_DEVICE", "tpu", "cpu"],
    );
    assert_clean_failure(&run(dartboard().env("EMBEDDING_DIM", "abc").args(["embed", "x"])), &["EMBEDDING_DIM", "abc"]);
    assert_clean_failure(
        &run(dartboard().env("EMBEDDING_DIM", "768").args(["embed", "x"])),
        &["768", "384", "EMBEDDING_DIM"],
    );
    assert_clean_failure(
        &run(dartboard().env("DARTBOARD_CONFIG", "/nonexistent.toml").args(["embed", "x"])),
        &["/nonexistent.toml"],
    );
}

#[test]
fn bad_model_references() {
    assert_clean_failure(
        &run(dartboard().args(["embed", "--model", "/does/not/exist", "x"])),
        &["/does/not/exist", "does not exist"],
    );
    assert_clean_failure(
        &run(dartboard().args(["embed", "--model", "org/../../etc", "x"])),
        &["org/../../etc", "invalid model reference"],
    );
    assert_clean_failure(
        &run(dartboard().args(["embed", "--model", "someone/not-cached", "x"])),
        &["someone/not-cached", "not in the cache"],
    );
    let empty = tempfile::tempdir().unwrap();
    assert_clean_failure(
        &run(dartboard().args(["embed", "--model"]).arg(empty.path()).arg("x")),
        &["config.json", "tokenizer.json", "model.safetensors"],
    );
}

#[test]
fn missing_input_file_and_no_texts() {
    assert_clean_failure(&run(dartboard().args(["embed", "--input", "/no/such/texts.txt"])), &["/no/such/texts.txt"]);
    assert_clean_failure(&run(dartboard().args(["embed"])), &["no texts"]);
    let r = run(dartboard().args(["embed", "--device", "tpu", "x"]));
    assert!(!r.ok && r.stderr.contains("tpu") && !r.stderr.contains("panicked"), "{}", r.stderr);
}

/// A copy of the cached model (weights linked, not copied) to break one file of.
fn model_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(minilm().dir(), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&path, &target);
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            std::os::unix::fs::symlink(path.canonicalize().unwrap(), &target).unwrap();
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn malformed_model_files() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("config.json", "{ not json", &["config.json", "JSON"]),
        ("config.json", r#"{"model_type": "gpt2"}"#, &["gpt2", "bert"]),
        ("config.json", r#"{"model_type": "bert", "hidden_size": 384}"#, &["config.json", "missing field"]),
        (
            "config.json",
            r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": -384, "num_hidden_layers": 6, "num_attention_heads": 12,
                "intermediate_size": 1536, "hidden_act": "gelu", "max_position_embeddings": 512}"#,
            &["hidden_size", "-384"],
        ),
        ("modules.json", "[1, 2", &["modules.json"]),
        ("tokenizer.json", "{\"version\": \"1.0\"}", &["tokenizer.json"]),
        ("1_Pooling/config.json", r#"{"pooling_mode_median_tokens": true}"#, &["median_tokens", "mean"]),
    ];
    for (file, content, needles) in cases {
        let dir = model_copy();
        std::fs::write(dir.path().join(file), content).unwrap();
        let r = run(dartboard().args(["embed", "--model"]).arg(dir.path()).arg("x"));
        assert_clean_failure(&r, needles);
    }
}

#[test]
fn weights_that_do_not_fit_are_listed() {
    let dir = model_copy();
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 8"),
    )
    .unwrap();
    let r = run(dartboard().args(["embed", "--model"]).arg(dir.path()).arg("x"));
    assert_clean_failure(&r, &["missing tensors", "encoder.layer.6.attention.self.query.weight"]);

    let dir = model_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"not a safetensors file").unwrap();
    assert_clean_failure(
        &run(dartboard().args(["embed", "--model"]).arg(dir.path()).arg("x")),
        &["model.safetensors", "safetensors"],
    );
}

#[test]
fn rerank_runs_every_architecture_with_a_classification_head_and_refuses_the_others() {
    let tiny = dartboard_tests::parity::fixtures_dir();
    for name in [
        "xlmr_cross_encoder",
        "mpnet_cross_encoder",
        "distilbert_cross_encoder",
        "modernbert_cross_encoder",
        "deberta_v2_cross_encoder",
    ] {
        let fixture: dartboard_tests::parity::CrossFixture =
            serde_json::from_slice(&std::fs::read(tiny.join(name).with_extension("json")).unwrap()).unwrap();
        let r = run(dartboard()
            .args(["rerank", "--query", &fixture.query, "--model"])
            .arg(tiny.join(name))
            .args(&fixture.passages[..4]));
        assert!(r.ok, "{name}: {}", r.stderr);
        for line in r.stdout.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let index = row["index"].as_u64().unwrap() as usize;
            let score = row["score"].as_f64().unwrap();
            assert!((score - f64::from(fixture.scores[index])).abs() <= 1e-4, "{name} passage {index}: {score}");
        }
    }
    // An embedding-only architecture: a clear error, not a panic.
    let r = run(dartboard().args(["rerank", "--query", "q", "--model"]).arg(tiny.join("qwen3_last_token")).arg("x"));
    assert_clean_failure(&r, &["cannot run as a cross-encoder", "config.json"]);
}

#[test]
fn rerank_and_prompt_flags() {
    let tiny = dartboard_tests::workspace_root().join("tests/fixtures/generated/tiny");
    let r = run(dartboard()
        .args(["rerank", "--query", "How does Dartboard improve RAG?", "--model"])
        .arg(tiny.join("cross_encoder"))
        .args(["Dartboard picks diverse passages", "Bread needs flour", "RAG retrieves documents"]));
    assert!(r.ok, "{}", r.stderr);
    let rows: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    let scores: Vec<f64> = rows.iter().map(|v| v["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    let mut indices: Vec<u64> = rows.iter().map(|v| v["index"].as_u64().unwrap()).collect();
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);

    // The default reranker is not cached here, and tests run offline: a clear error.
    assert_clean_failure(
        &run(dartboard().args(["rerank", "--query", "q", "x"])),
        &["ms-marco-MiniLM-L-12-v2", "not in the cache"],
    );

    let model = tiny.join("bert_prompts");
    let embed = |extra: &[&str]| {
        let r = run(dartboard().args(["embed", "--model"]).arg(&model).args(extra).arg("hello"));
        assert!(r.ok, "{}", r.stderr);
        embeddings_of(&r.stdout).remove(0)
    };
    let default = embed(&[]);
    assert_eq!(default, embed(&["--prompt-name", "query"]), "the default prompt is query");
    assert_eq!(embed(&["--prompt", "query: "]), default);
    assert!(cosine(&embed(&["--no-prompt"]), &default) < 0.9999);
    let r = run(dartboard().args(["embed", "--model"]).arg(&model).args(["--prompt-name", "nope", "x"]));
    assert_clean_failure(&r, &["nope", "passage", "query"]);
}
