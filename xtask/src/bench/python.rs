//! `cargo xtask bench --python`: the `dartboard` wheel against sentence-transformers
//! in one Python process, and the Ray job on a local cluster next to it.
//!
//! Builds the wheel and installs it into the reference venv (what `cargo xtask wheel
//! --install` does), then runs `crates/dartboard-py/bench/compare.py` on the default
//! model and the sentences of STS-B test at batch 32: `dartboard.Embedder` and
//! `SentenceTransformer.encode` alternating in one process (texts/s, and the minimum
//! cosine of our f32 vectors against theirs), then `dartboard.ray.embed` on a local
//! three-node Ray cluster (rows/s, actor start-up included). Writes
//! `target/bench/python.json` and the `python` section of `docs/scale-out.md`.
//!
//! compare.py does the measuring because what is measured is the Python API (the
//! GIL, numpy conversion, Ray's actors) and sentence-transformers has to run in the
//! same process for the comparison to share the machine's state; this file only
//! prepares, runs and reports it.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::machine;
use crate::{data_dir, root, run as run_cmd, setup, wheel};

pub fn run(env: &setup::SetupEnv) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let out_dir = target.join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let sts_test = data_dir().join("stsbenchmark/sts-test.csv");
    if !sts_test.is_file() {
        bail!(
            "STS Benchmark test split not found at {}; restore data/ from git or set DARTBOARD_DATA_DIR to a copy of it",
            sts_test.display()
        );
    }
    let built = wheel::build(env)?;
    wheel::install(env, &built)?;
    let out = out_dir.join("python.json");
    run_cmd(
        Command::new(&env.python)
            .arg(root().join("crates/dartboard-py/bench/compare.py"))
            .arg(&env.model_dir)
            .arg(&sts_test)
            .arg("--ray")
            .arg("--out")
            .arg(&out)
            // The comparison is on the CPU, as the rest of the benchmark is.
            .env("EMBEDDING_DEVICE", "cpu")
            .env("RAY_USAGE_STATS_ENABLED", "0"),
    )
    .context("running crates/dartboard-py/bench/compare.py")?;
    let text = fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let mut result: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", out.display()))?;
    result["machine"] = machine();
    fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    update_scale_out(&render(&result))?;
    eprintln!("xtask: wrote {} and the python section of docs/scale-out.md", out.display());
    Ok(())
}

fn render(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let one = &r["one_process"];
    let ray = &r["ray"];
    let ours = f(&one["dartboard_texts_per_s"]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} ({} cores); {} texts, `cargo xtask bench --python`.\n",
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"],
        one["texts"]
    );
    let _ = writeln!(s, "| in one Python process, batch 32 | texts/s | min cosine vs sentence-transformers (f32) |");
    let _ = writeln!(s, "|---|---:|---:|");
    let threads = &one["torch_threads"];
    let _ = writeln!(
        s,
        "| `dartboard.Embedder` (libtorch, {threads} threads) | {ours:.0} | {} |",
        one["min_cosine_f32"].as_f64().map_or("?".to_owned(), |c| format!("{c:.13}"))
    );
    let _ = writeln!(
        s,
        "| sentence-transformers {} (torch {}, {threads} threads) | {:.0} | |",
        one["sentence_transformers_version"].as_str().unwrap_or("?"),
        one["torch_version"].as_str().unwrap_or("?"),
        f(&one["sentence_transformers_texts_per_s"])
    );
    let _ = writeln!(s, "| ratio | {:.2}× | |\n", f(&one["speedup"]));
    let _ = writeln!(s, "| the same texts | rows/s |");
    let _ = writeln!(s, "|---|---:|");
    let _ = writeln!(
        s,
        "| `dartboard.ray.embed`, local cluster: head without CPUs + {} one-CPU workers, {} actors × {} thread, actor start-up included | {:.0} |",
        ray["nodes"].as_u64().map_or(0, |n| n.saturating_sub(1)),
        ray["actors"],
        ray["threads_per_actor"],
        f(&ray["rows_per_s"])
    );
    let _ = writeln!(s, "| one process (above) | {ours:.0} |");
    s
}

/// Replaces the text between `<!-- python:start -->` and `<!-- python:end -->` in
/// docs/scale-out.md (bench.rs's `update_doc` writes docs/benchmarks.md).
fn update_scale_out(table: &str) -> Result<()> {
    let path = root().join("docs/scale-out.md");
    let doc = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (start, end) = ("<!-- python:start -->", "<!-- python:end -->");
    let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) else {
        bail!("{} lacks the {start} / {end} markers", path.display());
    };
    if b < a {
        bail!("{}: {end} comes before {start}", path.display());
    }
    fs::write(&path, format!("{}{start}\n{table}{}", &doc[..a], &doc[b..]))
        .with_context(|| format!("writing {}", path.display()))
}
