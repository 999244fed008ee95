//! `cargo xtask bench --serve`: `dartboard serve` and infinity-emb (a Python embedding
//! server with dynamic batching, on the same torch and the same model directory)
//! under the same load: clients on loopback, each sending one STS-B test sentence per
//! request and the next as soon as the answer arrives, 1 client (the one-at-a-time
//! rate) and 32 (where batching across requests pays). Reports texts/s and p50/p99
//! latency; writes `target/bench/serve.json` and the `serve` section of
//! `docs/benchmarks.md`.
//!
//! The load generator is here, in Rust (tokio + reqwest on one thread), so that the
//! client costs both servers the same and never becomes the bottleneck the way a
//! Python client on a 2-core machine would. Each server runs alone (started, measured
//! at every client count, stopped) and the two alternate over the rounds, so that the
//! shared machine's drift falls on both; the fastest round of each counts.
//!
//! infinity-emb pins versions of numpy, sentence-transformers, rich and typer older
//! than the reference stack's, so it is not installed into the reference venv (that
//! would downgrade them): it gets a venv of its own next to it, with
//! `xtask/python/requirements-serve-bench.txt` installed without dependencies and a
//! `.pth` file putting the reference venv's packages (torch, transformers,
//! sentence-transformers, numpy) behind its own.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{machine, update_doc};
use crate::setup;

/// The model both servers load: the one the rest of the benchmark uses.
const MODEL_NAME: &str = "all-MiniLM-L6-v2";
const DIM: usize = 384;
/// (concurrent clients, at most this many requests, at most this long).
const LOADS: [(usize, usize, Duration); 2] = [(1, 500, Duration::from_secs(30)), (32, 2758, Duration::from_secs(60))];
/// Requests sent (32 at a time) after the server reports healthy and before timing:
/// first-call allocations and the thread pools' start-up are not what is measured.
const WARMUP_REQUESTS: usize = 128;
/// Model loading on a busy 2-core machine (infinity-emb also warms its model up).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Dartboard,
    Infinity,
}

impl Server {
    fn key(self) -> &'static str {
        match self {
            Server::Dartboard => "dartboard",
            Server::Infinity => "infinity_emb",
        }
    }

    fn embeddings_path(self) -> &'static str {
        match self {
            Server::Dartboard => "/v1/embeddings",
            Server::Infinity => "/embeddings",
        }
    }
}

pub fn run(env: &setup::SetupEnv, dartboard: &Path, out_dir: &Path, sts: &Path, rounds: usize) -> Result<()> {
    let texts: Arc<Vec<String>> = Arc::new(
        fs::read_to_string(sts)
            .with_context(|| format!("reading {}", sts.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    );
    if texts.is_empty() {
        bail!("{} holds no sentences; delete it and run the benchmark again", sts.display());
    }
    // infinity-emb is the comparison, not the subject: if it cannot be installed or
    // started here, dartboard is still measured and the reason is written down.
    let infinity = match infinity_venv(env) {
        Ok(venv) => Ok(venv),
        Err(e) => {
            eprintln!("xtask: bench --serve: infinity-emb unavailable ({e:#}); measuring dartboard alone");
            Err(format!("{e:#}"))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the load generator's tokio runtime")?;
    let client =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).no_proxy().build().context("building the HTTP client")?;

    let mut best: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut first_embedding: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut infinity_error = infinity.as_ref().err().cloned();
    for round in 0..rounds {
        let order =
            if round % 2 == 0 { [Server::Dartboard, Server::Infinity] } else { [Server::Infinity, Server::Dartboard] };
        for server in order {
            let started = match (server, &infinity) {
                (Server::Dartboard, _) => start_dartboard(dartboard, &env.model_dir, out_dir),
                (Server::Infinity, Ok(venv)) if infinity_error.is_none() => {
                    start_infinity(venv, &env.model_dir, out_dir)
                }
                (Server::Infinity, _) => continue,
            };
            let mut guard = match started {
                Ok(guard) => guard,
                Err(e) if server == Server::Infinity => {
                    eprintln!("xtask: bench --serve: infinity-emb did not start ({e:#}); measuring dartboard alone");
                    infinity_error = Some(format!("{e:#}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let url = format!("http://{}{}", guard.addr, server.embeddings_path());
            let measured = runtime.block_on(async {
                wait_healthy(&client, &mut guard).await?;
                let embedding = embed_one(&client, &url, &texts[0]).await?;
                load(&client, &url, &texts, 32, WARMUP_REQUESTS, Duration::from_secs(60)).await?;
                let mut runs = Vec::new();
                for (clients, requests, limit) in LOADS {
                    eprintln!("xtask: bench --serve round {}: {} with {clients} client(s)", round + 1, server.key());
                    let before = batch_metrics(&client, server, guard.addr).await;
                    let mut run = load(&client, &url, &texts, clients, requests, limit).await?;
                    if let (Some(a), Some(b)) = (before, batch_metrics(&client, server, guard.addr).await) {
                        // How the server batched this load: texts per model batch, and
                        // the share of the wall time its model worker was running.
                        let batches = b[1] - a[1];
                        run["mean_batch_texts"] = json!((b[0] - a[0]) / batches.max(1.0));
                        run["model_busy"] = json!((b[2] - a[2]) / run["wall_s"].as_f64().unwrap_or(f64::NAN));
                    }
                    runs.push((clients, run));
                }
                anyhow::Ok((embedding, runs))
            });
            let peak_rss_kb = guard.peak_rss_kb();
            drop(guard);
            let (embedding, runs) = match measured {
                Ok(m) => m,
                Err(e) if server == Server::Infinity => {
                    eprintln!("xtask: bench --serve: infinity-emb failed ({e:#}); measuring dartboard alone");
                    infinity_error = Some(format!("{e:#}"));
                    continue;
                }
                Err(e) => return Err(e.context("benchmarking dartboard serve")),
            };
            first_embedding.insert(server.key().to_owned(), json!(embedding));
            for (clients, mut run) in runs {
                run["peak_rss_kb"] = json!(peak_rss_kb);
                let key = format!("{}/{clients}", server.key());
                let faster = best.get(&key).is_none_or(|old| run["texts_per_s"].as_f64() > old["texts_per_s"].as_f64());
                if faster {
                    best.insert(key, run);
                }
            }
        }
    }
    // The two servers must be computing the same thing for the speeds to compare.
    let cosine = match (first_embedding.get("dartboard"), first_embedding.get("infinity_emb")) {
        (Some(a), Some(b)) => Some(cosine(&floats(a), &floats(b))),
        _ => None,
    };
    let results = json!({
        "machine": machine(),
        "rounds": rounds,
        "texts": texts.len(),
        "best": best,
        "infinity_emb_error": infinity_error,
        "first_text_cosine": cosine,
    });
    fs::write(out_dir.join("serve.json"), serde_json::to_string_pretty(&results)?)?;
    let table = render(&results);
    println!("{table}");
    update_doc("serve", &table)?;
    eprintln!("xtask: raw numbers in {}, summary in docs/benchmarks.md", out_dir.join("serve.json").display());
    Ok(())
}

/// The infinity-emb venv (installed the first time, and again when the requirements
/// file changes), next to the reference venv, reading torch and the model stack from
/// it.
fn infinity_venv(env: &setup::SetupEnv) -> Result<PathBuf> {
    let name = env.venv.file_name().context("the reference venv has no directory name")?.to_string_lossy();
    let venv = env.venv.with_file_name(format!("{name}-serve-bench"));
    let reference_site = python_purelib(&env.python)?;
    if !venv.join("bin/python").is_file() {
        // The reference venv's interpreter, so both venvs run the same Python.
        crate::run(Command::new(&env.python).args(["-m", "venv"]).arg(&venv))
            .with_context(|| format!("creating {}", venv.display()))?;
    }
    let own_site = python_purelib(&venv.join("bin/python"))?;
    let pth = own_site.join("dartboard-reference.pth");
    // pip must not see the reference packages while it installs (it would consider
    // replacing them); they are linked in afterwards.
    let _ = fs::remove_file(&pth);
    // --no-deps: infinity-emb's declared pins (numpy<2, sentence-transformers<4) would
    // otherwise pull older copies of what the reference stack provides; it runs on the
    // reference versions (checked by the first-text cosine below).
    setup::pip_install(
        &venv,
        "requirements-serve-bench.txt",
        "serve-bench",
        &["--no-deps"],
        "infinity-emb and its server packages (~20 MB, once; torch comes from the reference venv)",
    )?;
    fs::write(&pth, format!("{}\n", reference_site.display()))?;
    Ok(venv)
}

fn python_purelib(python: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{} could not name its site-packages directory", python.display());
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A server process that is killed and reaped when dropped, whatever happens to the
/// benchmark in between.
struct Running {
    child: Child,
    addr: SocketAddr,
    what: &'static str,
    log: PathBuf,
}

impl Running {
    /// Peak resident memory of the server process (Linux `VmHWM`), if readable.
    fn peak_rss_kb(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port: bound, read, released. Another process could take it in
/// between; the server then fails to bind and the health wait reports its log.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?)
}

fn spawn(mut cmd: Command, addr: SocketAddr, what: &'static str, log: PathBuf) -> Result<Running> {
    let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    eprintln!("xtask: starting {what} on {addr} (log {})", log.display());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("HF_HUB_OFFLINE", "1")
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(Running { child, addr, what, log })
}

fn start_dartboard(dartboard: &Path, model_dir: &Path, out_dir: &Path) -> Result<Running> {
    let addr = free_port()?;
    let mut cmd = Command::new(dartboard);
    cmd.arg("serve")
        .arg("--model")
        .arg(model_dir)
        .args(["--device", "cpu", "--dtype", "f32", "--hostname", "127.0.0.1", "--port"])
        .arg(addr.port().to_string());
    spawn(cmd, addr, "dartboard serve", out_dir.join("serve-dartboard.log"))
}

fn start_infinity(venv: &Path, model_dir: &Path, out_dir: &Path) -> Result<Running> {
    let addr = free_port()?;
    let mut cmd = Command::new(venv.join("bin/infinity_emb"));
    cmd.args(["v2", "--model-id"])
        .arg(model_dir)
        .args(["--served-model-name", MODEL_NAME, "--engine", "torch", "--device", "cpu", "--dtype", "float32"])
        // Its default batch size; said here so that the comparison states it.
        .args(["--batch-size", "32", "--no-compile", "--no-bettertransformer", "--no-vector-disk-cache"])
        // Its start-up warm-up counts tokens with `batch_encode_plus`, which transformers
        // 5 removed (AttributeError, the server exits); serving does not call it (token
        // counts come from `len()` unless --lengths-via-tokenize). The benchmark's own
        // warm-up requests stand in for it.
        .arg("--no-model-warmup")
        .args(["--host", "127.0.0.1", "--log-level", "warning", "--port"])
        .arg(addr.port().to_string())
        // No usage statistics sent (posthog is not installed either).
        .env("INFINITY_ANONYMOUS_USAGE_STATS", "0")
        .env("DO_NOT_TRACK", "1");
    spawn(cmd, addr, "infinity-emb", out_dir.join("serve-infinity.log"))
}

/// Polls `/health` until it answers 200, the process exits, or `HEALTH_TIMEOUT`.
async fn wait_healthy(client: &reqwest::Client, server: &mut Running) -> Result<()> {
    let url = format!("http://{}/health", server.addr);
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("{} exited with {status} before it was healthy; its log ends:\n{}", server.what, server.log_tail());
        }
        if let Ok(resp) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
            if resp.status().is_success() {
                eprintln!("xtask: {} healthy after {:.1} s", server.what, started.elapsed().as_secs_f64());
                return Ok(());
            }
        }
        if started.elapsed() > HEALTH_TIMEOUT {
            bail!(
                "{} was not healthy at {url} after {} s; its log ends:\n{}",
                server.what,
                HEALTH_TIMEOUT.as_secs(),
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `dartboard serve`'s batch counters from `/metrics`: texts batched, batches, model
/// seconds (None for infinity-emb, whose metrics say nothing of its batches, or when
/// they cannot be read).
async fn batch_metrics(client: &reqwest::Client, server: Server, addr: SocketAddr) -> Option<[f64; 3]> {
    if server != Server::Dartboard {
        return None;
    }
    let text = client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some([
        value("dartboard_batch_size_sum")?,
        value("dartboard_batch_size_count")?,
        value("dartboard_batch_duration_seconds_sum")?,
    ])
}

fn request_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "input": [text], "model": MODEL_NAME })).expect("a JSON value serializes")
}

/// One request, its answer checked: one embedding of the model's dimension.
async fn embed_one(client: &reqwest::Client, url: &str, text: &str) -> Result<Vec<f32>> {
    let resp = client.post(url).header("content-type", "application/json").body(request_body(text)).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!("POST {url} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
    }
    let value: Value = serde_json::from_slice(&body).with_context(|| format!("POST {url} answered no JSON"))?;
    let embedding = floats(&value["data"][0]["embedding"]);
    if embedding.len() != DIM || value["data"].as_array().map(Vec::len) != Some(1) {
        let answer: String = value.to_string().chars().take(200).collect();
        bail!("POST {url} did not answer one {DIM}-dimensional embedding: {answer}");
    }
    Ok(embedding)
}

/// `clients` concurrent clients, each sending the next sentence as soon as its last
/// answer arrived, until `max_requests` were sent or `limit` passed. Every answer must
/// be a success; anything else fails the run (a benchmark of errors means nothing).
async fn load(
    client: &reqwest::Client,
    url: &str,
    texts: &Arc<Vec<String>>,
    clients: usize,
    max_requests: usize,
    limit: Duration,
) -> Result<Value> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url, texts, next) = (client.clone(), url.to_owned(), Arc::clone(texts), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_requests || Instant::now() >= deadline {
                    return anyhow::Ok(latencies);
                }
                let sent = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(request_body(&texts[i % texts.len()]))
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                let body = resp.bytes().await.with_context(|| format!("reading the answer of POST {url}"))?;
                if !status.is_success() {
                    bail!("POST {url} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
                }
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.context("a load-generator task panicked")??);
    }
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |q: f64| -> f64 {
        // Nearest rank: the smallest latency at or above a fraction q of all requests.
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    Ok(json!({
        "clients": clients,
        "requests": latencies.len(),
        "wall_s": wall,
        "texts_per_s": latencies.len() as f64 / wall,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
    }))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect()).unwrap_or_default()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn render(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} ({} cores). all-MiniLM-L6-v2, f32, CPU; one STS-B test sentence per request; best of {} alternating round(s).\n",
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"],
        r["rounds"]
    );
    let _ = writeln!(s, "| server | clients | requests | texts/s | p50 ms | p99 ms | server peak RSS |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (server, label) in [("dartboard", "`dartboard serve`"), ("infinity_emb", "infinity-emb 0.0.78 (torch engine)")]
    {
        for (clients, _, _) in LOADS {
            let run = &r["best"][format!("{server}/{clients}")];
            if run.is_null() {
                continue;
            }
            let _ = writeln!(
                s,
                "| {label} | {clients} | {} | {:.1} | {:.1} | {:.1} | {:.0} MB |",
                run["requests"],
                f(&run["texts_per_s"]),
                f(&run["p50_ms"]),
                f(&run["p99_ms"]),
                f(&run["peak_rss_kb"]) / 1024.0
            );
        }
    }
    s.push('\n');
    for (clients, _, _) in LOADS {
        let ours = &r["best"][format!("dartboard/{clients}")];
        let theirs = &r["best"][format!("infinity_emb/{clients}")];
        if ours.is_null() || theirs.is_null() {
            continue;
        }
        let target = if clients == 32 { " (target ≥ 2× at an equal or lower p99)" } else { "" };
        let _ = writeln!(
            s,
            "- {clients} client(s): dartboard / infinity-emb throughput {:.2}×{target}, p99 {:.1} ms vs {:.1} ms.",
            f(&ours["texts_per_s"]) / f(&theirs["texts_per_s"]),
            f(&ours["p99_ms"]),
            f(&theirs["p99_ms"])
        );
    }
    for (clients, _, _) in LOADS {
        let run = &r["best"][format!("dartboard/{clients}")];
        if let (Some(texts), Some(busy)) = (run["mean_batch_texts"].as_f64(), run["model_busy"].as_f64()) {
            let _ = writeln!(
                s,
                "- `dartboard serve`, {clients} client(s) (its `/metrics`): {texts:.1} texts per model batch on average, the model running {:.0}% of the wall time.",
                100.0 * busy
            );
        }
    }
    if let Some(c) = r["first_text_cosine"].as_f64() {
        let _ = writeln!(s, "- Cosine between the two servers' embeddings of the first sentence: {c:.6}.");
    }
    if let Some(e) = r["infinity_emb_error"].as_str() {
        // The first line says what failed, the last exception line (a Python traceback's
        // end) why.
        let first = e.lines().next().unwrap_or(e).trim();
        let cause = e.lines().rev().map(str::trim).find(|l| l.contains("Error") && *l != first);
        let because = cause.map(|c| format!(" ({c})")).unwrap_or_default();
        let _ = writeln!(s, "- infinity-emb was not measured in this run: {first}{because}");
    }
    s
}
