//! Shared helpers for the integration tests: where things are, the reference outputs
//! of sentence-transformers, the built `dartboard` binary, and the statistics the
//! tests compare with.
//!
//! `cargo xtask test` guarantees what these helpers need (the default model in the
//! cache, the reference JSON, the CLI binary); each helper's panic message says how
//! to get it when the tests are run some other way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use dartboard_config::{EmbeddingConfig, Env, Overrides};
use dartboard_hub::{ModelFiles, ModelRef, ModelStore};
use serde::Deserialize;

pub mod parity;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The test data directory (STS Benchmark, passages): `DARTBOARD_DATA_DIR`, else
/// the repository's `data/`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("DARTBOARD_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("data"))
}

/// The model cache the user's environment points at (where setup put the default
/// model). Only the cache variables are read, so a broken EMBEDDING_* variable in a
/// developer's shell cannot hide it.
pub fn cache_dir() -> PathBuf {
    let cache_vars = ["SENTENCE_TRANSFORMERS_HOME", "TORCH_HOME", "XDG_CACHE_HOME"];
    let env = Env::from_pairs(cache_vars.iter().filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))))
        .with_home(std::env::var_os("HOME").map(PathBuf::from));
    EmbeddingConfig::load_from(&Overrides::default(), &env).expect("a cache directory").cache_dir
}

/// The real all-MiniLM-L6-v2, as `cargo xtask setup` cached it.
pub fn minilm() -> ModelFiles {
    ModelStore::new(cache_dir())
        .resolve(&ModelRef::parse("all-MiniLM-L6-v2").unwrap())
        .expect("all-MiniLM-L6-v2 is not cached: run `cargo xtask setup`")
}

/// sentence-transformers' outputs for the parity texts.
#[derive(Deserialize)]
pub struct Reference {
    pub sentence_transformers: String,
    pub max_seq_length: usize,
    pub sts_dev_spearman: f64,
    pub texts: Vec<String>,
    pub embeddings: Vec<Vec<f32>>,
}

/// The reference file `cargo xtask test` generates with the venv's sentence-transformers.
pub fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = workspace_root().join("tests/fixtures/generated/minilm_reference.json");
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask test`, which generates it", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    })
}

/// The reference venv's Python (`cargo xtask test` passes it in `DARTBOARD_VENV_PYTHON`).
pub fn venv_python() -> PathBuf {
    let python = std::env::var_os("DARTBOARD_VENV_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("DARTBOARD_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dartboard"));
        home.join("torch-2.13.0/bin/python")
    });
    assert!(python.is_file(), "{} not found: run `cargo xtask setup`", python.display());
    python
}

/// The `dartboard` binary next to the test executables (`cargo xtask test` builds it).
pub fn dartboard_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("dartboard");
    assert!(bin.is_file(), "{} not found: run `cargo build -p dartboard-cli` (cargo xtask test does)", bin.display());
    bin
}

/// A `dartboard` command with the EMBEDDING_* and HF_* variables of the caller
/// removed, so a developer's shell settings cannot change what a test sees, and
/// offline: tests never reach beyond loopback ([`dartboard_online`] is for the Hub
/// stand-in).
pub fn dartboard() -> Command {
    let mut cmd = Command::new(dartboard_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("EMBEDDING_") || key.starts_with("HF_") || key == "DARTBOARD_CONFIG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("SENTENCE_TRANSFORMERS_HOME", cache_dir());
    // Port 9 (discard) on loopback: should offline mode ever be bypassed, the
    // request fails locally instead of leaving the machine.
    cmd.env("HF_HUB_OFFLINE", "1").env("HF_ENDPOINT", "http://127.0.0.1:9");
    cmd
}

/// A `dartboard` command that may download, from `endpoint` only.
pub fn dartboard_online(endpoint: &str) -> Command {
    let mut cmd = dartboard();
    cmd.env_remove("HF_HUB_OFFLINE").env("HF_ENDPOINT", endpoint);
    cmd
}

/// Output of a command as text, for assertions.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs a command and captures its output.
pub fn run(cmd: &mut Command) -> Run {
    cmd.output().expect("command starts").into()
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Spearman rank correlation (ties get their average rank, as scipy does).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// STS Benchmark rows: (score, sentence 1, sentence 2).
pub fn sts(split: &str) -> Vec<(f64, String, String)> {
    let path = data_dir().join(format!("stsbenchmark/sts-{split}.csv"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; set DARTBOARD_DATA_DIR", path.display()));
    text.lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            (cols[4].parse().unwrap(), cols[5].to_owned(), cols[6].to_owned())
        })
        .collect()
}

/// Runs a command like [`run`], but fails the test if it has not finished after
/// `secs` seconds (the child is killed): for commands that must not hang. Output goes
/// to files, so a chatty child cannot block on a full pipe.
pub fn run_within(cmd: &mut Command, secs: u64) -> Run {
    let (stdout, stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child =
        cmd.stdout(stdout.try_clone().unwrap()).stderr(stderr.try_clone().unwrap()).spawn().expect("command starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting on the command") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {secs} s (killed): {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut bytes).unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Run { ok: status.success(), code: status.code(), stdout: read(stdout), stderr: read(stderr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        assert!((spearman(&[1., 2., 3., 4.], &[10., 20., 30., 40.]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1., 2., 3., 4.], &[4., 3., 2., 1.]) + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).correlation == 0.9486832980505139 (measured)
        assert!((spearman(&[1., 2., 2., 3.], &[1., 3., 2., 4.]) - 0.9486832980505139).abs() < 1e-12);
    }
}
