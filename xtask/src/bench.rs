//! `cargo xtask bench`: dartboard and sentence-transformers side by side on this
//! machine (same libtorch, same thread count), reported as ratios, because absolute
//! times on shared machines drift and ratios taken in one run do not.
//!
//! - default: all-MiniLM-L6-v2 on STS-B test and passages, every batch size, then the
//!   corpus run (`--quick`: batch 32 only);
//! - `--corpus`: only the corpus run (`dartboard embed` as a whole process);
//! - `--shapes`: only the real shapes of Qwen3-Embedding-0.6B and ModernBERT-base with
//!   random weights (`bench/shapes.rs`); `--shape NAME` one of them;
//! - `--serve`: only the serving run, `dartboard serve` against infinity-emb under 1
//!   and 32 concurrent clients (`bench/serve.rs`);
//! - `--python`: only the Python wheel against sentence-transformers in one process,
//!   and the Ray job on a local cluster (`bench/python.rs`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{cargo, data_dir, root, run, setup};

mod python;
mod serve;
mod shapes;

const BATCHES: [usize; 4] = [1, 8, 32, 128];
const DTYPES: [&str; 2] = ["f32", "bf16"];

pub fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let corpus_only = args.iter().any(|a| a == "--corpus");
    // `--shape NAME` (implies --shapes): one shape only, e.g. qwen3-0.6b.
    let shape = match args.iter().position(|a| a == "--shape") {
        Some(i) => Some(args.get(i + 1).cloned().context("--shape needs a name, e.g. --shape qwen3-0.6b")?),
        None => None,
    };
    let shapes_only = args.iter().any(|a| a == "--shapes") || shape.is_some();
    let serve_only = args.iter().any(|a| a == "--serve");
    let python_only = args.iter().any(|a| a == "--python");
    if let Some(other) = args.iter().enumerate().find(|&(i, a)| {
        !matches!(a.as_str(), "--quick" | "--corpus" | "--shapes" | "--shape" | "--serve" | "--python")
            && (i == 0 || args[i - 1] != "--shape")
    }) {
        bail!(
            "unknown option {}; cargo xtask bench [--quick] [--corpus | --shapes [--shape NAME] | --serve | --python]",
            other.1
        );
    }
    if [corpus_only, shapes_only, serve_only, python_only].iter().filter(|&&on| on).count() > 1 {
        bail!("--corpus, --shapes, --serve and --python are separate runs; pick one");
    }
    let env = setup::run()?;
    setup::reference_stack(&env)?;
    if python_only {
        return python::run(&env);
    }
    run(cargo().args(["build", "--release", "--package", "dartboard-cli"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let dartboard = target.join("release/dartboard");
    let out_dir = target.join("bench");
    fs::create_dir_all(&out_dir)?;
    if shapes_only {
        // --quick: one round instead of three (no alternation to cancel drift).
        return shapes::run(&env, &dartboard, &out_dir, if quick { 1 } else { 3 }, shape.as_deref());
    }

    let sts = out_dir.join("sts-test-sentences.txt");
    fs::write(&sts, sts_sentences(&data_dir().join("stsbenchmark/sts-test.csv"))?)?;
    if serve_only {
        // --quick: one round of each server instead of three.
        return serve::run(&env, &dartboard, &out_dir, &sts, if quick { 1 } else { 3 });
    }
    if corpus_only {
        return corpus_bench(&dartboard, &env, &out_dir, &sts);
    }
    let corpora = [("sts-test", sts.clone()), ("passages", data_dir().join("passages.txt"))];
    let batches: &[usize] = if quick { &[32] } else { &BATCHES };

    let peak = json_of(Command::new(&dartboard).args(["bench", "--gemm-peak"]))?;
    let mut runs = Vec::new();
    for (name, corpus) in &corpora {
        for dtype in DTYPES {
            for &batch in batches {
                let repeat = if batch == 1 { "1" } else { "2" };
                let ours_emb = out_dir.join(format!("{name}-{dtype}-{batch}-dartboard.f32"));
                let theirs_emb = out_dir.join(format!("{name}-{dtype}-{batch}-st.f32"));
                eprintln!("xtask: bench {name} {dtype} batch {batch}");
                let ours = json_of(
                    Command::new(&dartboard)
                        .args([
                            "bench",
                            "--dtype",
                            dtype,
                            "--batch-size",
                            &batch.to_string(),
                            "--repeat",
                            repeat,
                            "--input",
                        ])
                        .arg(corpus)
                        .arg("--embeddings-out")
                        .arg(&ours_emb),
                )?;
                let theirs = json_of(
                    Command::new(&env.python)
                        .arg(root().join("xtask/python/st_bench.py"))
                        .arg(&env.model_dir)
                        .arg(corpus)
                        .args([&batch.to_string(), dtype, repeat])
                        .arg(&theirs_emb)
                        .env("HF_HUB_OFFLINE", "1"),
                )?;
                runs.push(json!({ "corpus": name, "dtype": dtype, "batch_size": batch, "dartboard": ours, "sentence_transformers": theirs }));
            }
        }
    }

    // Fidelity at batch 32: everything against sentence-transformers in f32.
    let mut fidelity = serde_json::Map::new();
    for (name, _) in &corpora {
        let st_f32 = read_f32(&out_dir.join(format!("{name}-f32-32-st.f32")))?;
        for (label, file) in [
            ("dartboard_f32", format!("{name}-f32-32-dartboard.f32")),
            ("dartboard_bf16", format!("{name}-bf16-32-dartboard.f32")),
            ("st_bf16", format!("{name}-bf16-32-st.f32")),
        ] {
            fidelity
                .insert(format!("{name}/{label}"), min_cosine(&read_f32(&out_dir.join(file))?, &st_f32, 384).into());
        }
    }

    let cold = json!({
        "dartboard_s": best_wall(3, || Command::new(&dartboard).args(["embed", "hi"]).env("HF_HUB_OFFLINE", "1").output())?,
        "sentence_transformers_s": best_wall(3, || Command::new(&env.python)
            .arg(root().join("xtask/python/st_bench.py")).arg("--cold-start").arg(&env.model_dir)
            .env("HF_HUB_OFFLINE", "1").output())?,
    });

    let results = json!({ "machine": machine(), "gemm_peak": peak, "runs": runs, "fidelity_min_cosine": fidelity, "cold_start": cold });
    fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    let table = render(&results);
    println!("{table}");
    update_doc("bench", &table)?;
    eprintln!("xtask: raw numbers in {}, summary in docs/benchmarks.md", out_dir.join("results.json").display());
    corpus_bench(&dartboard, &env, &out_dir, &sts)
}

/// The corpus run: whole-process `dartboard embed` on 110,320 texts (the STS-B test
/// sentences 40 times over) in every output format and at several window sizes,
/// against the in-process encode time of `dartboard bench` on the same texts, and
/// sentence-transformers encoding them and saving a `.npy`; bf16, batch 32.
fn corpus_bench(dartboard: &Path, env: &setup::SetupEnv, out_dir: &Path, sts: &Path) -> Result<()> {
    let corpus = out_dir.join("corpus-110k.txt");
    let sentences = fs::read_to_string(sts)?;
    fs::write(&corpus, sentences.repeat(40))?;
    let texts = sentences.repeat(40).lines().count();
    let timed = |cmd: &mut Command| -> Result<(f64, String, String)> {
        let started = Instant::now();
        let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
        let wall = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok((wall, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
    };
    eprintln!("xtask: corpus bench: in-process encode of {texts} texts");
    let (_, stdout, _) = timed(
        Command::new(dartboard)
            .args(["bench", "--dtype", "bf16", "--batch-size", "32", "--repeat", "1", "--input"])
            .arg(&corpus),
    )?;
    let inproc: Value =
        serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{')).context("no JSON from bench")?)?;
    let mut runs = Vec::new();
    for (format, window) in [("jsonl", 8192), ("npy", 8192), ("parquet", 8192), ("jsonl", 1024), ("jsonl", 32768)] {
        eprintln!("xtask: corpus bench: dartboard embed --format {format} --window {window}");
        let output = out_dir.join(format!("corpus-out.{format}"));
        let (wall, _, stderr) = timed(
            Command::new(dartboard)
                .args(["embed", "--dtype", "bf16", "--batch-size", "32", "--progress-every", "100000"])
                .args(["--format", format, "--window", &window.to_string(), "--input"])
                .arg(&corpus)
                .arg("--output")
                .arg(&output),
        )?;
        let rss_mb: Option<f64> = stderr
            .lines()
            .rev()
            .find_map(|l| l.split("peak RSS ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok());
        runs.push(json!({ "format": format, "window": window, "wall_s": wall, "peak_rss_mb": rss_mb,
            "bytes": fs::metadata(&output).map(|m| m.len()).unwrap_or(0) }));
        let _ = fs::remove_file(&output);
    }
    eprintln!("xtask: corpus bench: sentence-transformers encode + np.save");
    let st_out = out_dir.join("corpus-st.npy");
    let (st_wall, stdout, _) = timed(
        Command::new(&env.python)
            .arg(root().join("xtask/python/st_bench.py"))
            .arg("--corpus-npy")
            .arg(&env.model_dir)
            .arg(&corpus)
            .args(["bf16"])
            .arg(&st_out)
            .env("HF_HUB_OFFLINE", "1"),
    )?;
    let _ = fs::remove_file(&st_out);
    let st: Value =
        serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{')).context("no JSON from st_bench")?)?;
    let results = json!({ "texts": texts, "in_process": inproc, "embed": runs, "sentence_transformers": { "wall_s": st_wall, "run": st } });
    fs::write(out_dir.join("corpus.json"), serde_json::to_string_pretty(&results)?)?;
    let table = render_corpus(&results);
    println!("{table}");
    update_doc("corpus", &table)?;
    Ok(())
}

fn render_corpus(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let encode = f(&r["in_process"]["seconds"]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} texts, all-MiniLM-L6-v2, bf16, batch 32. In-process encode (`dartboard bench`): {encode:.1} s ({:.0} texts/s), peak RSS {:.0} MB.\n",
        r["texts"],
        f(&r["in_process"]["texts_per_s"]),
        f(&r["in_process"]["peak_rss_kb"]) / 1024.0
    );
    let _ = writeln!(s, "| run | wall time | vs in-process encode | peak RSS | output size |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for run in r["embed"].as_array().cloned().unwrap_or_default() {
        let wall = f(&run["wall_s"]);
        let _ = writeln!(
            s,
            "| `dartboard embed --format {} --window {}` | {wall:.1} s | {:.2}× | {:.0} MB | {:.0} MB |",
            run["format"].as_str().unwrap_or("?"),
            run["window"],
            wall / encode,
            f(&run["peak_rss_mb"]),
            f(&run["bytes"]) / 1e6
        );
    }
    let st = &r["sentence_transformers"];
    let _ = writeln!(
        s,
        "| sentence-transformers `encode` + `np.save` (whole process) | {:.1} s | {:.2}× | {:.0} MB | |",
        f(&st["wall_s"]),
        f(&st["wall_s"]) / encode,
        f(&st["run"]["peak_rss_kb"]) / 1024.0
    );
    s
}

fn sts_sentences(csv: &Path) -> Result<String> {
    let text = fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut out = String::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 7 {
            bail!("{}: a line with fewer than 7 columns", csv.display());
        }
        writeln!(out, "{}\n{}", cols[5], cols[6])?;
    }
    Ok(out)
}

fn json_of(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("no JSON in the output")?;
    Ok(serde_json::from_str(line)?)
}

fn best_wall(times: usize, mut f: impl FnMut() -> std::io::Result<std::process::Output>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..times {
        let started = Instant::now();
        let out = f()?;
        if !out.status.success() {
            bail!("cold-start run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn min_cosine(a: &[f32], b: &[f32], dim: usize) -> f64 {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum();
            let nx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| f64::from(*q).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .fold(f64::INFINITY, f64::min)
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    json!({ "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) })
}

fn render(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let peak32 = f(&r["gemm_peak"]["f32_gflops"]);
    let peak16 = f(&r["gemm_peak"]["bf16_gflops"]);
    let mkl32 = f(&r["gemm_peak"]["f32_matmul_gflops"]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} ({} cores). GEMM peak measured in the same run (2048², the kernels the model uses): f32 {peak32:.0} GFLOP/s, bf16 {peak16:.0} GFLOP/s; f32 through plain `matmul` (MKL, what PyTorch's f32 `nn.Linear` uses): {mkl32:.0} GFLOP/s.\n",
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"]
    );
    let _ = writeln!(s, "| corpus | dtype | batch | dartboard texts/s | ST texts/s | ratio | vs ST f32 | dartboard GFLOP/s (% of peak) |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    let runs = r["runs"].as_array().cloned().unwrap_or_default();
    for run in &runs {
        let ours = f(&run["dartboard"]["texts_per_s"]);
        let theirs = f(&run["sentence_transformers"]["texts_per_s"]);
        let st_f32 = runs
            .iter()
            .find(|o| o["corpus"] == run["corpus"] && o["batch_size"] == run["batch_size"] && o["dtype"] == "f32")
            .map(|o| f(&o["sentence_transformers"]["texts_per_s"]))
            .unwrap_or(f64::NAN);
        let gflops = f(&run["dartboard"]["gflops"]);
        let peak = if run["dtype"] == "bf16" { peak16 } else { peak32 };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {ours:.0} | {theirs:.0} | {:.2}× | {:.2}× | {gflops:.0} ({:.0}%) |",
            run["corpus"].as_str().unwrap_or("?"),
            run["dtype"].as_str().unwrap_or("?"),
            run["batch_size"],
            ours / theirs,
            ours / st_f32,
            100.0 * gflops / peak
        );
    }
    let cold_ours = f(&r["cold_start"]["dartboard_s"]);
    let cold_st = f(&r["cold_start"]["sentence_transformers_s"]);
    let _ = writeln!(s, "\nCold start (process start to first embedding, model cached, best of 3): dartboard {cold_ours:.2} s, sentence-transformers {cold_st:.2} s ({:.2}×).", cold_ours / cold_st);
    if let Some(run) = runs.iter().find(|r| r["corpus"] == "passages" && r["dtype"] == "f32" && r["batch_size"] == 32) {
        let _ = writeln!(
            s,
            "Peak RSS (passages, f32, batch 32): dartboard {:.0} MB, sentence-transformers {:.0} MB.",
            f(&run["dartboard"]["peak_rss_kb"]) / 1024.0,
            f(&run["sentence_transformers"]["peak_rss_kb"]) / 1024.0
        );
    }
    let _ = writeln!(s, "\nMin cosine vs sentence-transformers f32 (batch 32):");
    if let Some(map) = r["fidelity_min_cosine"].as_object() {
        for (k, v) in map {
            let _ = writeln!(s, "- {k}: {:.6}", f(v));
        }
    }
    s
}

/// Replaces the text between `<!-- {section}:start -->` and `<!-- {section}:end -->`.
fn update_doc(section: &str, table: &str) -> Result<()> {
    let path = root().join("docs/benchmarks.md");
    let doc = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (start, end) = (format!("<!-- {section}:start -->"), format!("<!-- {section}:end -->"));
    let (Some(a), Some(b)) = (doc.find(&start), doc.find(&end)) else {
        bail!("{} lacks the {start} / {end} markers", path.display());
    };
    let updated = format!("{}{start}\n{table}{}", &doc[..a], &doc[b..]);
    fs::write(&path, updated)?;
    Ok(())
}
