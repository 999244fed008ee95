//! `dartboard embed` at corpus scale: windows in input order with the numbers of one
//! `encode` call, the three output formats as numpy and pyarrow read them, the three
//! input formats, resume after SIGKILL byte for byte, and progress lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dartboard_embeddings::{LoadOptions, SentenceEmbedder};
use dartboard_tests::{cosine, dartboard, minilm, run, sts, venv_python, Run};

/// The first `n` STS-B test sentences (repeated if needed), one per line.
fn corpus(dir: &Path, n: usize) -> (PathBuf, Vec<String>) {
    let sentences: Vec<String> = sts("test").into_iter().flat_map(|(_, a, b)| [a, b]).collect();
    let texts: Vec<String> = sentences.iter().cycle().take(n).cloned().collect();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, texts.join("\n") + "\n").unwrap();
    (path, texts)
}

fn jsonl_rows(path: &Path) -> Vec<Vec<f32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["embedding"].clone()).unwrap()
        })
        .collect()
}

fn ok(r: Run) -> Run {
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

#[test]
fn windows_keep_input_order_and_the_numbers_of_one_encode_call() {
    let dir = tempfile::tempdir().unwrap();
    let (input, texts) = corpus(dir.path(), 61);
    let out = dir.path().join("out.jsonl");
    // Windows of 7: eight full ones and a short last one, each sorted by length inside.
    ok(run(dartboard().args(["embed", "--window", "7", "-q", "--input"]).arg(&input).arg("--output").arg(&out)));
    let rows = jsonl_rows(&out);
    assert_eq!(rows.len(), texts.len());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let whole = SentenceEmbedder::load(&minilm(), LoadOptions::default()).unwrap().encode(&refs).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let c = cosine(row, whole.row(i));
        assert!(c > 0.999999, "text {i} ({:?}): cosine {c} with the single encode call", texts[i]);
        let max_diff = row.iter().zip(whole.row(i)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-5, "text {i}: max difference {max_diff}");
    }
    assert!(!dir.path().join("out.jsonl.partial").exists(), "the partial state is removed when done");
    // The same texts streamed to stdout give the same lines.
    let r = ok(run(dartboard().args(["embed", "--window", "5", "-q", "--input"]).arg(&input)));
    assert_eq!(r.stdout, std::fs::read_to_string(&out).unwrap());
}

#[test]
fn npy_and_parquet_read_back_in_numpy_and_pyarrow_as_the_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (input, texts) = corpus(dir.path(), 23);
    let paths: Vec<PathBuf> = ["out.jsonl", "out.npy", "out.parquet"].iter().map(|n| dir.path().join(n)).collect();
    for (format, path) in ["jsonl", "npy", "parquet"].iter().zip(&paths) {
        let mut cmd = dartboard();
        cmd.args(["embed", "--window", "10", "-q", "--format", format, "--input"])
            .arg(&input)
            .arg("--output")
            .arg(path);
        if *format == "parquet" {
            cmd.arg("--keep-text");
        }
        ok(run(&mut cmd));
    }
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    for path in &paths {
        assert_eq!(mode(path), mode(&plain), "{} gets the umask", path.display());
    }
    let script = r#"
import json, sys
import numpy as np
import pyarrow.parquet as pq
jsonl, npy, parquet, texts = sys.argv[1:5]
j = np.array([json.loads(l)["embedding"] for l in open(jsonl)], dtype=np.float32)
n = np.load(npy, mmap_mode="r")
assert n.dtype == np.float32 and n.shape == j.shape, (n.dtype, n.shape, j.shape)
assert np.array_equal(n, j)
t = pq.read_table(parquet)
assert t.column_names == ["index", "text", "embedding"], t.column_names
assert t.column("index").to_pylist() == list(range(len(j)))
assert t.column("text").to_pylist() == open(texts).read().splitlines()
p = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
assert np.array_equal(p, j)
print("ok", j.shape)
"#;
    let out = Command::new(venv_python()).arg("-c").arg(script).args(&paths).arg(&input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ok ({}, 384)", texts.len()));
}

#[test]
fn jsonl_and_parquet_inputs_give_the_same_embeddings_as_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (input, texts) = corpus(dir.path(), 12);
    let jsonl = dir.path().join("in.jsonl");
    let lines: Vec<String> = texts.iter().map(|t| serde_json::json!({ "id": 1, "body": t }).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let parquet = dir.path().join("in.parquet");
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
                  texts = open(sys.argv[1]).read().splitlines()\n\
                  pq.write_table(pa.table({'n': list(range(len(texts))), 'passage': texts}), sys.argv[2])";
    let out = Command::new(venv_python()).arg("-c").arg(script).arg(&input).arg(&parquet).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let reference = ok(run(dartboard().args(["embed", "-q", "--input"]).arg(&input))).stdout;
    let r = ok(run(dartboard()
        .args(["embed", "-q", "--input-format", "jsonl", "--text-field", "body", "--input"])
        .arg(&jsonl)));
    assert_eq!(r.stdout, reference);
    let r = ok(run(dartboard()
        .args(["embed", "-q", "--input-format", "parquet", "--text-column", "passage", "--input"])
        .arg(&parquet)));
    assert_eq!(r.stdout, reference);

    // Wrong field or column names say which exist / what to pass.
    let r = run(dartboard().args(["embed", "--input-format", "jsonl", "--input"]).arg(&jsonl));
    assert!(!r.ok && r.stderr.contains("has no field \"text\"") && r.stderr.contains("--text-field"), "{}", r.stderr);
    let r =
        run(dartboard().args(["embed", "--input-format", "parquet", "--text-column", "nope", "--input"]).arg(&parquet));
    assert!(!r.ok && r.stderr.contains("no column \"nope\"") && r.stderr.contains("passage"), "{}", r.stderr);
    let r = run(dartboard().args(["embed", "--format", "npy", "a text"]));
    assert!(!r.ok && r.stderr.contains("needs --output"), "{}", r.stderr);
}

/// Starts a run, SIGKILLs it once `windows_before_kill` windows are stored, and
/// returns whether it was still running (so the resume really had work left).
fn kill_mid_run(cmd: &mut Command, partial: &Path, windows_before_kill: u64) -> bool {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let chunk = partial.join(format!("chunk-{:010}.bin", windows_before_kill - 1));
    while !chunk.exists() && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    running
}

#[test]
fn sigkill_then_resume_gives_the_same_bytes_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = corpus(dir.path(), 300);
    for format in ["jsonl", "npy", "parquet"] {
        let embed = |out: &Path| {
            let mut cmd = dartboard();
            cmd.args(["embed", "--window", "10", "--progress-every", "0", "--format", format]);
            if format != "npy" {
                cmd.arg("--keep-text");
            }
            cmd.arg("--input").arg(&input).arg("--output").arg(out);
            cmd
        };
        let whole = dir.path().join(format!("whole.{format}"));
        ok(run(&mut embed(&whole)));

        let resumed = dir.path().join(format!("resumed.{format}"));
        let partial = dir.path().join(format!("resumed.{format}.partial"));
        assert!(kill_mid_run(&mut embed(&resumed), &partial, 3), "{format}: the run ended before it could be killed");
        assert!(!resumed.exists(), "{format}: no output before the run completes");
        assert!(partial.join("chunk-0000000002.bin").exists());

        // Without --resume the partial run is not silently thrown away.
        let r = run(&mut embed(&resumed));
        assert!(!r.ok && r.stderr.contains("--resume"), "{}", r.stderr);
        // Other settings cannot resume it.
        let r = run(embed(&resumed).arg("--resume").args(["--dtype", "bf16"]));
        assert!(!r.ok && r.stderr.contains("dtype"), "{}", r.stderr);

        let r = ok(run(embed(&resumed).arg("--resume")));
        let line =
            r.stderr.lines().rev().find(|l| l.contains("dartboard: embedded") && l.contains(" in ")).unwrap_or("");
        let resumed_count: u64 = line
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no closing line in {}", r.stderr));
        assert!(
            resumed_count > 0 && resumed_count <= 270,
            "{format}: the resumed run embedded {resumed_count}: {line}"
        );
        let (a, b) = (std::fs::read(&whole).unwrap(), std::fs::read(&resumed).unwrap());
        assert!(
            a == b,
            "{format}: resumed output differs from the uninterrupted one ({} vs {} bytes)",
            b.len(),
            a.len()
        );
        assert!(!partial.exists());
    }
}

#[test]
fn progress_lines_when_stderr_is_not_a_terminal_and_quiet_silences_them() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = corpus(dir.path(), 40);
    let r = ok(run(dartboard().args(["embed", "--window", "10", "--progress-every", "0", "--input"]).arg(&input)));
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("dartboard: embedded")).collect();
    assert!(
        lines.iter().any(|l| l.contains("/40 texts") && l.contains("texts/s") && l.contains("ETA")),
        "{}",
        r.stderr
    );
    assert!(lines.last().is_some_and(|l| l.contains("embedded 40 texts in") && l.contains("peak RSS")), "{}", r.stderr);
    let r =
        ok(run(dartboard().args(["embed", "--window", "10", "--progress-every", "0", "-q", "--input"]).arg(&input)));
    assert!(!r.stderr.contains("dartboard: embedded"), "{}", r.stderr);
}

#[test]
fn ctrl_c_stops_between_windows_and_leaves_a_resumable_run() {
    let dir = tempfile::tempdir().unwrap();
    let (input, texts) = corpus(dir.path(), 300);
    let output = dir.path().join("out.jsonl");
    let partial = dir.path().join("out.jsonl.partial");
    let embed = || {
        let mut cmd = dartboard();
        cmd.args(["embed", "--window", "10", "--progress-every", "0", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output);
        cmd
    };
    let child = embed().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !partial.join("chunk-0000000001.bin").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after") && stderr.contains("--resume"), "{stderr}");
    assert!(!output.exists() && partial.is_dir());
    let r = ok(run(embed().arg("--resume")));
    assert!(!partial.exists(), "{}", r.stderr);
    assert_eq!(jsonl_rows(&output).len(), texts.len());
}
