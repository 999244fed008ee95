//! `cargo xtask bench --shapes`: dartboard and sentence-transformers on random-weight
//! models at the real shapes of Qwen3-Embedding-0.6B and ModernBERT-base (the
//! weights, the tokenizer and the texts identical on both sides), 500 STS-B test
//! sentences at batch 32, f32 and bf16; writes `target/bench/shapes.json` and the
//! `shapes` section of `docs/benchmarks.md`.
//!
//! The models are generated once by `xtask/python/shapes_models.py` into
//! `target/bench/shapes/` (about 2.3 GB, never committed) and again only when that
//! script, a module it imports or its inputs change, as the test fixtures are.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{json_of, machine, min_cosine, read_f32, update_doc};
use crate::{data_dir, root, setup};

/// (directory written by `shapes_models.py`, label, embedding dimension).
const SHAPES: [(&str, &str, usize); 2] =
    [("qwen3-0.6b", "Qwen3-Embedding-0.6B shape", 1024), ("modernbert-base", "ModernBERT-base shape", 768)];
const DTYPES: [&str; 2] = ["f32", "bf16"];
const BATCH: &str = "32";
/// Timed passes per process (after a warm-up); the fastest counts.
const REPEAT: &str = "2";

/// `only`: one shape's directory name (`--shape`); its table is printed and saved
/// as `shapes-NAME.json`, and docs/benchmarks.md (which shows both) is left as it is.
pub fn run(env: &setup::SetupEnv, dartboard: &Path, out_dir: &Path, rounds: usize, only: Option<&str>) -> Result<()> {
    let shapes: Vec<(&str, &str, usize)> =
        SHAPES.into_iter().filter(|(name, _, _)| only.is_none_or(|o| o == *name)).collect();
    if shapes.is_empty() {
        let names: Vec<&str> = SHAPES.iter().map(|s| s.0).collect();
        anyhow::bail!("--shape {:?} is not a benchmark shape; pick one of {names:?}", only.unwrap_or_default());
    }
    let models = ensure_models(env, &out_dir.join("shapes"))?;
    let corpus = models.join("sts-test-500.txt");
    // Best texts/s per (shape, dtype, side), over `rounds` rounds that alternate the
    // two sides (and which goes first), so that the shared machine's drift falls on
    // both rather than on whichever ran during a slow minute.
    let mut best: serde_json::Map<String, Value> = serde_json::Map::new();
    for round in 0..rounds {
        for &(name, _, _) in &shapes {
            let model = models.join(name);
            for dtype in DTYPES {
                let ours_emb = out_dir.join(format!("shapes-{name}-{dtype}-dartboard.f32"));
                let theirs_emb = out_dir.join(format!("shapes-{name}-{dtype}-st.f32"));
                let ours = || -> Result<Value> {
                    eprintln!("xtask: bench --shapes round {}: dartboard {name} {dtype}", round + 1);
                    json_of(
                        Command::new(dartboard)
                            .args(["bench", "--model"])
                            .arg(&model)
                            .args(["--dtype", dtype, "--batch-size", BATCH, "--repeat", REPEAT, "--input"])
                            .arg(&corpus)
                            .arg("--embeddings-out")
                            .arg(&ours_emb)
                            .env("HF_HUB_OFFLINE", "1"),
                    )
                };
                let theirs = || -> Result<Value> {
                    eprintln!("xtask: bench --shapes round {}: sentence-transformers {name} {dtype}", round + 1);
                    json_of(
                        Command::new(&env.python)
                            .arg(root().join("xtask/python/st_bench.py"))
                            .arg(&model)
                            .arg(&corpus)
                            .args([BATCH, dtype, REPEAT])
                            .arg(&theirs_emb)
                            .env("HF_HUB_OFFLINE", "1"),
                    )
                };
                let (a, b) = if round % 2 == 0 {
                    let a = ours()?;
                    (a, theirs()?)
                } else {
                    let b = theirs()?;
                    (ours()?, b)
                };
                for (side, run) in [("dartboard", a), ("sentence_transformers", b)] {
                    let key = format!("{name}/{dtype}/{side}");
                    let faster =
                        best.get(&key).is_none_or(|old| run["texts_per_s"].as_f64() > old["texts_per_s"].as_f64());
                    if faster {
                        best.insert(key, run);
                    }
                }
            }
        }
    }

    // Fidelity: every run against sentence-transformers in f32 (the last round's
    // embeddings; every pass computes the same ones).
    let mut fidelity = serde_json::Map::new();
    for &(name, _, dim) in &shapes {
        let st_f32 = read_f32(&out_dir.join(format!("shapes-{name}-f32-st.f32")))?;
        for (label, file) in [
            ("dartboard_f32", format!("shapes-{name}-f32-dartboard.f32")),
            ("dartboard_bf16", format!("shapes-{name}-bf16-dartboard.f32")),
            ("st_bf16", format!("shapes-{name}-bf16-st.f32")),
        ] {
            let other = read_f32(&out_dir.join(file))?;
            anyhow::ensure!(
                other.len() == st_f32.len(),
                "{name} {label}: {} values, ST f32 {}",
                other.len(),
                st_f32.len()
            );
            fidelity.insert(format!("{name}/{label}"), min_cosine(&other, &st_f32, dim).into());
        }
    }
    let results = json!({ "machine": machine(), "rounds": rounds, "best": best, "fidelity_min_cosine": fidelity });
    let table = render(&results, &shapes);
    println!("{table}");
    if let Some(name) = only {
        let json = out_dir.join(format!("shapes-{name}.json"));
        fs::write(&json, serde_json::to_string_pretty(&results)?)?;
        eprintln!("xtask: raw numbers in {} (docs/benchmarks.md left as it is)", json.display());
        return Ok(());
    }
    fs::write(out_dir.join("shapes.json"), serde_json::to_string_pretty(&results)?)?;
    update_doc("shapes", &table)?;
    eprintln!("xtask: raw numbers in {}, summary in docs/benchmarks.md", out_dir.join("shapes.json").display());
    Ok(())
}

/// `target/bench/shapes/`, regenerated when its fingerprint (the generator, the
/// Python modules it imports, the tokenizer source model and the STS-B files)
/// differs from the one stored beside it.
fn ensure_models(env: &setup::SetupEnv, dir: &Path) -> Result<PathBuf> {
    let python_dir = root().join("xtask/python");
    let mut stamp = String::new();
    for file in ["shapes_models.py", "arch_qwen3.py", "arch_modernbert.py", "make_fixtures.py", "stsb.py"] {
        writeln!(stamp, "{file} {}", dartboard_hub::sha256_file(&python_dir.join(file))?)?;
    }
    for csv in ["sts-dev.csv", "sts-test.csv"] {
        writeln!(stamp, "{csv} {}", dartboard_hub::sha256_file(&data_dir().join("stsbenchmark").join(csv))?)?;
    }
    writeln!(stamp, "{}", env.model_dir.display())?;
    let stamp_path = dir.with_extension("stamp");
    if dir.join("sts-test-500.txt").is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(dir.to_path_buf());
    }
    eprintln!("xtask: generating the random-weight Qwen3-0.6B and ModernBERT-base shaped models (~2.3 GB, once)");
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    crate::run(
        Command::new(&env.python)
            .arg(python_dir.join("shapes_models.py"))
            .arg(&env.model_dir)
            .arg(data_dir())
            .arg(&tmp)
            .env("HF_HUB_OFFLINE", "1")
            .env("PYTHONHASHSEED", "0"),
    )
    .context("generating the benchmark models with transformers and sentence-transformers")?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    fs::write(&stamp_path, stamp)?;
    Ok(dir.to_path_buf())
}

fn render(r: &Value, shapes: &[(&str, &str, usize)]) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} ({} cores). 500 STS-B test sentences, batch 32, best of {} alternating rounds of {REPEAT} timed passes each side.\n",
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"],
        r["rounds"]
    );
    let _ = writeln!(
        s,
        "| shape | dtype | tokens | dartboard texts/s | ST texts/s | ratio (target ≥ 1.5×) | min cosine vs ST f32 |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for &(name, label, _) in shapes {
        for dtype in DTYPES {
            let ours = &r["best"][format!("{name}/{dtype}/dartboard")];
            let theirs = &r["best"][format!("{name}/{dtype}/sentence_transformers")];
            let (a, b) = (f(&ours["texts_per_s"]), f(&theirs["texts_per_s"]));
            let cosine = f(&r["fidelity_min_cosine"][format!("{name}/dartboard_{dtype}")]);
            let _ = writeln!(
                s,
                "| {label} | {dtype} | {} | {a:.1} | {b:.1} | {:.2}× | {cosine:.6} |",
                ours["tokens"],
                a / b
            );
        }
    }
    let _ = writeln!(s, "\nsentence-transformers' own bf16 against its f32 (min cosine), for scale:");
    for &(name, label, _) in shapes {
        let _ = writeln!(s, "- {label}: {:.6}", f(&r["fidelity_min_cosine"][format!("{name}/st_bf16")]));
    }
    s
}
