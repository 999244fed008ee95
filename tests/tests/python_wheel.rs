//! The `dartboard` Python wheel (`crates/dartboard-py`), as `pip install` leaves it:
//! its pytest suites run in the reference venv, where `cargo xtask test` (or
//! `cargo xtask wheel --install`) has installed the freshly built wheel beside the
//! torch 2.13.0 it links.
//!
//! - `test_embedder.py`: `dartboard.Embedder` against sentence-transformers (f32
//!   minimum cosine >= 0.99999 on all-MiniLM-L6-v2) and the CLI, a model by name
//!   from the cache the CLI and sentence-transformers share, prompts,
//!   `truncate_dim`, errors, the GIL released during `encode`, `CrossEncoder`,
//!   `compat.SentenceTransformerModel`, and `import dartboard` with no
//!   `LD_LIBRARY_PATH`, torch imported first or not.
//! - `test_ray.py`: a local four-node Ray cluster embedding 3,000 Parquet rows,
//!   through a killed actor and a removed node, and the negative control (the same
//!   kill with restarts and retries off must fail the job).
//!
//! Each pytest run has a hard timeout: past it the whole process group (pytest,
//! and any Ray processes it started) is killed and the test fails. The suites run
//! one at a time (a lock), so a Ray cluster never competes with the other suite for
//! this machine's cores.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dartboard_tests::{cache_dir, dartboard_bin, data_dir, minilm, venv_python, workspace_root};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `pytest <selection>` from `crates/dartboard-py/tests` and fails on any
/// failure, or when it has not finished after `secs`.
fn pytest(selection: &[&str], secs: u64) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let python = venv_python();
    let tests_dir = workspace_root().join("crates/dartboard-py/tests");
    let installed = Command::new(&python).args(["-c", "import dartboard, sys; print(dartboard.__file__)"]).output();
    let installed = installed.expect("the venv's Python starts");
    assert!(
        installed.status.success(),
        "the dartboard wheel is not installed in {}: run `cargo xtask wheel --install` (cargo xtask test does)\n{}",
        python.display(),
        String::from_utf8_lossy(&installed.stderr)
    );
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"])
        .args(selection)
        .current_dir(&tests_dir)
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap());
    // What the suites read, and nothing from the developer's shell that could change
    // what they see: no EMBEDDING_*/HF_* settings, offline, no library path.
    for (key, _) in std::env::vars() {
        if key.starts_with("EMBEDDING_") || key.starts_with("HF_") || key == "DARTBOARD_CONFIG" {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("LD_LIBRARY_PATH")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("SENTENCE_TRANSFORMERS_HOME", cache_dir())
        .env("DARTBOARD_TEST_MINILM", minilm().dir())
        .env("DARTBOARD_TEST_TINY", workspace_root().join("tests/fixtures/generated/tiny"))
        .env("DARTBOARD_BIN", dartboard_bin())
        .env("DARTBOARD_DATA_DIR", data_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("RAY_USAGE_STATS_ENABLED", "0");
    // A group of its own, so that a timeout can stop every process it started.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("pytest starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting on pytest") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    let tail: String = output.chars().rev().take(20_000).collect::<Vec<_>>().into_iter().rev().collect();
    match status {
        None => panic!("pytest {selection:?} still running after {secs} s (killed with its process group)\n{tail}"),
        Some(status) => assert!(status.success(), "pytest {selection:?} failed ({status})\n{tail}"),
    }
    // The summary lines, for whoever runs `cargo test -- --nocapture`.
    for line in output.lines().filter(|l| l.starts_with("PASSED") || l.contains("rows/s")) {
        println!("{line}");
    }
}

fn suite(file: &str) -> String {
    let path: PathBuf = workspace_root().join("crates/dartboard-py/tests").join(file);
    assert!(path.is_file(), "{} is missing", path.display());
    file.to_owned()
}

#[test]
fn python_embedder_equals_sentence_transformers_and_the_cli() {
    pytest(&[&suite("test_embedder.py")], 900);
}

#[test]
fn python_ray_cluster_embeds_through_actor_and_node_failures() {
    // Four nodes start, five jobs run; each pytest test also has its own alarm
    // (TIMEOUT in test_ray.py). The faults, the negative control's included, are
    // injected by an actor into itself in the middle of a batch, so every run hits
    // work in progress (see test_ray.py's header).
    pytest(&[&suite("test_ray.py")], 1200);
}
