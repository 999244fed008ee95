//! `dartboard serve` end to end on 127.0.0.1: the real binary with the real
//! all-MiniLM-L6-v2, spoken to over plain HTTP/1.1 sockets (so a test can hold a
//! request half-sent) and by the official `openai` Python client.
//!
//! Every server is a [`Server`] guard that kills the process on drop; every wait
//! (the listening line, readiness, a response, the exit) has a deadline. The tests
//! take one lock, so servers do not compete for the CPU with each other (the
//! throughput comparison needs the machine to itself as far as this file goes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dartboard_hub_stub::{HubStub, StubRepo};
use dartboard_tests::parity::{fixtures_dir, CrossFixture};
use dartboard_tests::{cosine, dartboard, dartboard_online, minilm, reference, venv_python};
use serde_json::{json, Value};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running `dartboard serve`; killed (if still running) when dropped.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `dartboard serve --hostname 127.0.0.1 --port 0 ARGS` and waits (at most
    /// 60 s) for its `listening on http://ADDR` line; not for the model.
    fn spawn(mut cmd: Command, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        // The listening line is logged at info: a RUST_LOG in the caller's shell must not hide it.
        if !cmd.get_envs().any(|(key, _)| key == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .args(["serve", "--hostname", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("dartboard starts");
        let mut server = Server { child, addr: String::new(), log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = server.log();
            if let Some(at) = text.find("listening on http://") {
                let rest = &text[at + "listening on http://".len()..];
                server.addr = rest.split_whitespace().next().unwrap().to_owned();
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("dartboard serve exited ({status}) before listening:\n{text}");
            }
            assert!(Instant::now() < deadline, "no listening line after 60 s:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server on the cached MiniLM and waits until it is ready.
    fn start(args: &[&str]) -> Server {
        let server = Server::spawn(dartboard(), args);
        server.wait_ready(Duration::from_secs(120));
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `GET /health` until 200, at most `limit`.
    fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(reply) = try_http(&self.addr, "GET", "/health", &[], b"") {
                if reply.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "not ready after {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let reply = http(&self.addr, "POST", path, &[], body.to_string().as_bytes());
        (reply.status, reply.json())
    }

    fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"")
    }

    /// The value of one sample line of `/metrics` (`name{labels}` exactly as written).
    fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (at most `limit`) for the process to exit and returns its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {}: body is not JSON ({e}): {}\n{}", self.status, self.head, self.text())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

fn request_head(method: &str, path: &str, headers: &[(&str, &str)], length: usize) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {length}\r\n");
    if length > 0 {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Reads a whole `Connection: close` response (Content-Length or chunked).
fn read_reply(mut stream: TcpStream) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {:?}", String::from_utf8_lossy(&raw))))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    let reply = Reply { status, head, body: Vec::new() };
    if reply.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = decoded;
    }
    Ok(Reply { body, ..reply })
}

fn try_http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
    let mut stream = connect(addr)?;
    stream.write_all(request_head(method, path, headers, body.len()).as_bytes())?;
    stream.write_all(body)?;
    read_reply(stream)
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn rows(value: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(value.clone()).unwrap()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| cosine(x, y)).fold(1.0, f64::min)
}

/// What the official client and sentence-transformers give for the same texts.
const OPENAI_CLIENT: &str = r#"
import base64, json, sys
import numpy as np
from openai import OpenAI
from sentence_transformers import SentenceTransformer

base_url, api_key, model_dir, texts_file = sys.argv[1:5]
texts = json.load(open(texts_file))
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
def vectors(response):
    return [list(map(float, item.embedding)) for item in sorted(response.data, key=lambda d: d.index)]
# Without encoding_format the client asks for base64 itself and decodes it.
default = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
as_float = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
# Asked for explicitly, base64 comes back as strings: decode them as OpenAI documents it.
as_base64 = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="base64")
decoded = [np.frombuffer(base64.b64decode(item.embedding), dtype="<f4").astype(float).tolist() for item in as_base64.data]
dims = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, dimensions=64, encoding_format="float")
single = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], encoding_format="float")

st = SentenceTransformer(model_dir, device="cpu")
features = st.tokenize(texts)
print(json.dumps({
    "default": vectors(default),
    "float": vectors(as_float),
    "base64": decoded,
    "dims": vectors(dims),
    "single": vectors(single),
    "object": as_float.object,
    "model": as_float.model,
    "usage": [as_float.usage.prompt_tokens, as_float.usage.total_tokens],
    "st": st.encode(texts).tolist(),
    "st_dims": st.encode(texts, truncate_dim=64).tolist(),
    "st_tokens": [int(n) for n in features["attention_mask"].sum(dim=1)],
}))
"#;

fn long_text() -> String {
    "Dartboard balances relevance and diversity when it picks passages. ".repeat(60)
}

#[test]
fn openai_client_gets_sentence_transformers_vectors() {
    let _one = one_at_a_time();
    let server = Server::start(&["--api-key", "test-key-openai"]);
    let mut texts: Vec<String> = reference().texts[..12].to_vec();
    texts.push(long_text());
    texts.push("A man is playing guitar.".into());
    let dir = tempfile::tempdir().unwrap();
    let texts_file = dir.path().join("texts.json");
    std::fs::write(&texts_file, serde_json::to_vec(&texts).unwrap()).unwrap();
    let base_url = format!("http://{}/v1", server.addr);
    let out = Command::new(venv_python())
        .args(["-c", OPENAI_CLIENT, &base_url, "test-key-openai"])
        .arg(minilm().dir())
        .arg(&texts_file)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = rows(&r["st"]);
    for key in ["default", "float", "base64"] {
        let got = rows(&r[key]);
        let worst = min_cosine(&got, &st);
        println!("/v1/embeddings {key}: min cosine vs sentence-transformers {worst:.8}");
        assert!(worst >= 0.99999, "{key}: {worst}");
        assert!(got.iter().all(|v| v.len() == 384));
    }
    // float and base64 carry the same f32 values.
    assert_eq!(rows(&r["float"]), rows(&r["base64"]));
    assert!(min_cosine(&rows(&r["single"]), &st[..1]) >= 0.99999);

    // dimensions = sentence-transformers' truncate_dim: the first 64 values, not renormalised.
    let (dims, st_dims) = (rows(&r["dims"]), rows(&r["st_dims"]));
    assert!(dims.iter().all(|v| v.len() == 64));
    let worst = min_cosine(&dims, &st_dims);
    println!("/v1/embeddings dimensions=64: min cosine vs truncate_dim=64 {worst:.8}");
    assert!(worst >= 0.99999, "{worst}");
    for (ours, theirs) in dims.iter().zip(&st_dims) {
        assert!((norm(ours) - norm(theirs)).abs() < 1e-5, "norms {} vs {}", norm(ours), norm(theirs));
        assert!(norm(ours) < 0.999, "a truncated unit vector is shorter than 1 unless renormalised");
    }

    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], "all-MiniLM-L6-v2");
    let st_tokens: Vec<usize> = serde_json::from_value(r["st_tokens"].clone()).unwrap();
    assert_eq!(st_tokens[12], 256, "the long text is cut to max_seq_length");
    let total: usize = st_tokens.iter().sum();
    assert_eq!(r["usage"], json!([total, total]), "usage counts the tokens embedded");
}

#[test]
fn tei_embed_and_rerank_match_sentence_transformers() {
    let _one = one_at_a_time();
    let cross = fixtures_dir().join("cross_encoder");
    let server = Server::start(&["--reranker", cross.to_str().unwrap()]);
    let reference = reference();

    // /embed on every reference text, 32 per request (the default client batch limit);
    // the empty ones are left out, since TEI's API refuses empty inputs (tested below).
    let (texts, expected): (Vec<&String>, Vec<Vec<f32>>) = reference
        .texts
        .iter()
        .zip(&reference.embeddings)
        .filter(|(t, _)| !t.is_empty())
        .map(|(t, e)| (t, e.clone()))
        .unzip();
    assert!(texts.len() > 250);
    let mut got = Vec::new();
    for chunk in texts.chunks(32) {
        let (status, body) = server.post("/embed", &json!({ "inputs": chunk }));
        assert_eq!(status, 200, "{body}");
        got.extend(rows(&body));
    }
    let worst = min_cosine(&got, &expected);
    println!("/embed: {} texts, min cosine vs sentence-transformers {worst:.8}", got.len());
    assert!(worst >= 0.99999, "{worst}");

    // A single string is a batch of one.
    let (status, body) = server.post("/embed", &json!({ "inputs": reference.texts[3] }));
    assert_eq!(status, 200);
    assert!(cosine(&rows(&body)[0], &reference.embeddings[3]) >= 0.99999);

    // TEI truncates to `dimensions` first, then normalises (normalize defaults to true).
    let texts = &reference.texts[..4];
    let (_, body) = server.post("/embed", &json!({ "inputs": texts, "dimensions": 64 }));
    for (ours, theirs) in rows(&body).iter().zip(&reference.embeddings) {
        assert_eq!(ours.len(), 64);
        assert!((norm(ours) - 1.0).abs() < 1e-5, "normalised after truncation: {}", norm(ours));
        assert!(cosine(ours, &theirs[..64]) >= 0.99999);
    }
    let (_, body) = server.post("/embed", &json!({ "inputs": texts, "dimensions": 64, "normalize": false }));
    for (ours, theirs) in rows(&body).iter().zip(&reference.embeddings) {
        assert!((norm(ours) - norm(&theirs[..64])).abs() < 1e-5, "not renormalised");
    }
    // Truncation is on by default; `truncate: false` refuses the long text.
    let (status, _) = server.post("/embed", &json!({ "inputs": [long_text()] }));
    assert_eq!(status, 200);
    let (status, body) = server.post("/embed", &json!({ "inputs": ["short", long_text()], "truncate": false }));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error_type"], "Validation");
    assert!(body["error"].as_str().unwrap().contains("text 1"), "{body}");

    // /rerank against CrossEncoder.predict's scores.
    let fixture: CrossFixture = serde_json::from_slice(&std::fs::read(cross.with_extension("json")).unwrap()).unwrap();
    let request = json!({ "query": fixture.query, "texts": fixture.passages, "return_text": true });
    let (status, body) = server.post("/rerank", &request);
    assert_eq!(status, 200, "{body}");
    let ranks = body.as_array().unwrap();
    assert_eq!(ranks.len(), fixture.passages.len());
    let mut seen = vec![false; ranks.len()];
    let mut previous = f64::INFINITY;
    let mut worst = 0f64;
    for rank in ranks {
        let index = rank["index"].as_u64().unwrap() as usize;
        let score = rank["score"].as_f64().unwrap();
        assert!(score <= previous, "sorted best first: {body}");
        previous = score;
        seen[index] = true;
        worst = worst.max((score - f64::from(fixture.scores[index])).abs());
        assert_eq!(rank["text"], fixture.passages[index].as_str());
    }
    println!("/rerank: max |score - CrossEncoder.predict| {worst:e}");
    assert!(worst <= 1e-4, "{worst}");
    assert!(seen.iter().all(|s| *s));
    // raw_scores are the logits: the sigmoid of each is the activated score; no text unless asked.
    let (status, body) =
        server.post("/rerank", &json!({ "query": fixture.query, "texts": fixture.passages, "raw_scores": true }));
    assert_eq!(status, 200, "{body}");
    for rank in body.as_array().unwrap() {
        let index = rank["index"].as_u64().unwrap() as usize;
        let raw = rank["score"].as_f64().unwrap();
        assert!(rank.get("text").is_none());
        assert!((1.0 / (1.0 + (-raw).exp()) - f64::from(fixture.scores[index])).abs() <= 1e-4, "{raw}");
        assert!((raw - f64::from(fixture.scores[index])).abs() > 1e-3, "raw scores are not the activated ones");
    }

    // /info and /health.
    let info = server.get("/info").json();
    assert_eq!(info["model_id"], "all-MiniLM-L6-v2");
    assert_eq!(info["embedding_dim"], 384);
    assert_eq!(info["max_input_length"], 256);
    assert_eq!(info["model_dtype"], "f32");
    assert_eq!(info["device"], "cpu");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["reranker"]["model_id"], cross.to_str().unwrap());
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn every_bad_request_is_a_json_4xx_in_the_apis_shape() {
    let _one = one_at_a_time();
    let server = Server::start(&["--max-client-batch-size", "4", "--payload-limit", "20000"]);
    let tei = |path: &str, body: &[u8], status: u16, needle: &str| {
        let reply = http(&server.addr, "POST", path, &[], body);
        assert_eq!(reply.status, status, "{path} {}: {}", String::from_utf8_lossy(body), reply.text());
        assert!(reply.header("content-type").unwrap().starts_with("application/json"), "{}", reply.head);
        let value = reply.json();
        assert!(value["error_type"].is_string(), "TEI shape: {value}");
        let message = value["error"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    };
    let openai = |body: &[u8], status: u16, needle: &str| {
        let reply = http(&server.addr, "POST", "/v1/embeddings", &[], body);
        assert_eq!(reply.status, status, "{}: {}", String::from_utf8_lossy(body), reply.text());
        let value = reply.json();
        let error = &value["error"];
        for key in ["message", "type", "param", "code"] {
            assert!(error.get(key).is_some(), "OpenAI shape has {key}: {value}");
        }
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    };
    let too_big = serde_json::to_vec(&json!({ "inputs": "x".repeat(30_000) })).unwrap();

    tei("/embed", b"{\"inputs\": [\"a\"", 400, "not valid JSON");
    tei("/embed", b"not json at all", 400, "not valid JSON");
    tei("/embed", b"{\"input\": \"a\"}", 422, "inputs");
    tei("/embed", b"{\"inputs\": \"a\", \"normalize\": \"yes\"}", 422, "invalid request");
    tei("/embed", b"{\"inputs\": []}", 400, "cannot be empty");
    tei("/embed", b"{\"inputs\": \"\"}", 422, "empty string");
    tei("/embed", b"{\"inputs\": [\"a\", \"\"]}", 422, "inputs[1]");
    tei("/embed", b"{\"inputs\": [[101, 102]]}", 422, "token");
    tei("/embed", b"{\"inputs\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", 413, "--max-client-batch-size");
    tei("/embed", b"{\"inputs\": \"a\", \"dimensions\": 0}", 422, "dimensions");
    tei("/embed", b"{\"inputs\": \"a\", \"dimensions\": 385}", 422, "from 1 to 384");
    tei("/embed", b"{\"inputs\": \"a\", \"prompt_name\": \"query\"}", 422, "no prompt named");
    tei("/embed", b"{\"inputs\": \"a\", \"truncation_direction\": \"left\"}", 422, "left");
    tei("/embed", &too_big, 413, "--payload-limit");
    tei("/rerank", b"{\"query\": \"q\", \"texts\": [\"a\"]}", 424, "--reranker");
    tei("/rerank", b"{\"query\": \"q\", \"texts\": []}", 400, "cannot be empty");
    tei("/rerank", b"{\"query\": \"q\"}", 422, "texts");

    openai(b"{\"input\": ", 400, "not valid JSON");
    openai(b"{\"model\": \"m\"}", 422, "input");
    openai(b"{\"input\": [1, 2, 3]}", 422, "token");
    openai(b"{\"input\": [[1, 2], [3]]}", 422, "token");
    openai(b"{\"input\": []}", 400, "cannot be empty");
    openai(b"{\"input\": \"\"}", 422, "empty string");
    openai(b"{\"input\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", 413, "--max-client-batch-size");
    openai(b"{\"input\": \"a\", \"encoding_format\": \"int8\"}", 422, "encoding_format");
    openai(b"{\"input\": \"a\", \"dimensions\": 1000}", 422, "dimensions");
    openai(&serde_json::to_vec(&json!({ "input": "x".repeat(30_000) })).unwrap(), 413, "--payload-limit");

    // Unknown routes and wrong methods: JSON too.
    let reply = server.get("/nope");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error_type"], "NotFound");
    let reply = server.get("/v1/models");
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"]["message"].is_string());
    let reply = server.get("/embed");
    assert_eq!(reply.status, 405);
    assert!(reply.json()["error"].as_str().unwrap().contains("POST"));

    // Nothing above was a server error, and the metrics counted each refusal.
    assert!(!server.log().contains("panicked"));
    assert_eq!(server.metric("dartboard_http_requests_total{route=\"/embed\",status=\"413\"}"), Some(2.0));
    assert_eq!(server.metric("dartboard_http_requests_total{route=\"/v1/embeddings\",status=\"422\"}"), Some(6.0));
    let metrics = server.get("/metrics").text();
    assert!(
        // (/health answered 503 while the model loaded, as it should.)
        !metrics.lines().any(|l| l.starts_with("dartboard_http_requests_total")
            && l.contains("status=\"5")
            && !l.contains("route=\"/health\"")),
        "{metrics}"
    );
}

#[test]
fn health_is_503_until_the_model_is_downloaded_and_loaded() {
    let _one = one_at_a_time();
    let repo = StubRepo::from_dir(
        "org/slow-model",
        "0123456789abcdef0123456789abcdef01234567",
        &fixtures_dir().join("bert_mean_norm"),
    )
    .unwrap();
    let stub = HubStub::start(vec![repo]);
    // Every Hub response takes 400 ms: the download spans several seconds, during which
    // the server must already answer.
    stub.faults().delay_ms.store(400, std::sync::atomic::Ordering::SeqCst);
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = dartboard_online(&stub.endpoint());
    cmd.env("SENTENCE_TRANSFORMERS_HOME", cache.path()).env("HF_HOME", cache.path().join("hf"));
    let server = Server::spawn(cmd, &["--model", "org/slow-model"]);
    let reply = server.get("/health");
    assert_eq!(reply.status, 503, "{}", server.log());
    assert_eq!(reply.json()["error_type"], "Unhealthy");
    let (status, body) = server.post("/embed", &json!({ "inputs": "early" }));
    assert_eq!(status, 503, "{body}");
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": "early" }));
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(server.metric("dartboard_ready"), Some(0.0));
    server.wait_ready(Duration::from_secs(120));
    let (status, body) = server.post("/embed", &json!({ "inputs": "now" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric("dartboard_ready"), Some(1.0));
    assert!(server.log().contains("Initializing embedding model: org/slow-model"), "{}", server.log());
}

#[test]
fn a_model_that_cannot_load_stops_the_server_with_an_error() {
    let _one = one_at_a_time();
    let missing = tempfile::tempdir().unwrap();
    let mut server = Server::spawn(dartboard(), &["--model", missing.path().join("nothing").to_str().unwrap()]);
    assert_eq!(server.wait_exit(Duration::from_secs(60)), Some(1));
    let log = server.log();
    assert!(log.contains("cannot load model"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let r = dartboard_tests::run_within(dartboard().args(["serve", "--port", "0", "--api-key", " "]), 60);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("API key is empty"), "{}", r.stderr);
}

/// Opens `POST path` with a Content-Length of `body` and sends all but the last
/// 10 bytes: the server has admitted the request and waits for the rest.
fn half_sent(addr: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut stream = connect(addr).unwrap();
    stream.write_all(request_head("POST", path, &[], body.len()).as_bytes()).unwrap();
    stream.write_all(&body[..body.len() - 10]).unwrap();
    stream.flush().unwrap();
    stream
}

fn finish(mut stream: TcpStream, body: &[u8]) -> Reply {
    stream.write_all(&body[body.len() - 10..]).unwrap();
    read_reply(stream).unwrap()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn over_the_concurrency_limit_is_429_at_once() {
    let _one = one_at_a_time();
    let server = Server::start(&["--max-concurrent-requests", "1"]);
    let body = serde_json::to_vec(&json!({ "inputs": ["held in flight"] })).unwrap();
    let held = half_sent(&server.addr, "/embed", &body);
    wait_until(Duration::from_secs(30), "the held request takes the slot", || {
        server.metric("dartboard_requests_in_flight") == Some(1.0)
    });
    let started = Instant::now();
    let (status, refused) = server.post("/embed", &json!({ "inputs": ["one too many"] }));
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error_type"], "Overloaded");
    assert!(refused["error"].as_str().unwrap().contains("--max-concurrent-requests"));
    let (status, refused) = server.post("/v1/embeddings", &json!({ "input": "one too many" }));
    assert_eq!(status, 429);
    assert_eq!(refused["error"]["code"], "rate_limit_exceeded");
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once, not queued: {:?}", started.elapsed());
    // Health and metrics are not model routes: they still answer.
    assert_eq!(server.get("/health").status, 200);

    let reply = finish(held, &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_until(Duration::from_secs(30), "the slot is free again", || {
        server.metric("dartboard_requests_in_flight") == Some(0.0)
    });
    let (status, _) = server.post("/embed", &json!({ "inputs": ["after"] }));
    assert_eq!(status, 200);
    assert_eq!(server.metric("dartboard_http_requests_total{route=\"/embed\",status=\"429\"}"), Some(1.0));
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let _one = one_at_a_time();
    let mut server = Server::start(&[]);
    let body = serde_json::to_vec(&json!({ "input": ["finished after SIGTERM"] })).unwrap();
    let held = half_sent(&server.addr, "/v1/embeddings", &body);
    wait_until(Duration::from_secs(30), "the request is in flight", || {
        server.metric("dartboard_requests_in_flight") == Some(1.0)
    });
    server.signal("TERM");
    wait_until(Duration::from_secs(30), "the shutdown is logged", || server.log().contains("shutting down"));
    // No new connections once shutting down.
    wait_until(Duration::from_secs(10), "the listener is closed", || TcpStream::connect(&server.addr).is_err());
    let reply = finish(held, &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0), "{}", server.log());
}

#[test]
fn a_client_that_never_finishes_does_not_hold_the_exit_past_the_drain_limit() {
    let _one = one_at_a_time();
    let mut server = Server::start(&[]);
    let body = serde_json::to_vec(&json!({ "input": ["never finished"] })).unwrap();
    let _held = half_sent(&server.addr, "/v1/embeddings", &body);
    wait_until(Duration::from_secs(30), "the request is in flight", || {
        server.metric("dartboard_requests_in_flight") == Some(1.0)
    });
    let signalled = std::time::Instant::now();
    server.signal("TERM");
    // The drain limit is 25 s; the process must be gone soon after, never later.
    assert_eq!(server.wait_exit(Duration::from_secs(40)), Some(0), "{}", server.log());
    let waited = signalled.elapsed();
    assert!(waited >= Duration::from_secs(20), "exited after {waited:?}: the request in flight was not waited for");
    assert!(server.log().contains("exiting without them"), "{}", server.log());
}

#[test]
fn api_key_is_required_and_never_logged() {
    let _one = one_at_a_time();
    let key = "sk-serve-test-7f3a9c1e";
    let mut cmd = dartboard();
    cmd.env("DARTBOARD_API_KEY", key).env("RUST_LOG", "debug");
    let server = Server::spawn(cmd, &[]);
    server.wait_ready(Duration::from_secs(120));
    let body = br#"{"inputs": "secret stuff"}"#;

    let reply = http(&server.addr, "POST", "/embed", &[], body);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(reply.json()["error_type"], "Unauthorized");
    let reply = http(&server.addr, "POST", "/embed", &[("Authorization", "Bearer sk-serve-test-7f3a9c1f")], body);
    assert_eq!(reply.status, 401);
    let reply = http(&server.addr, "POST", "/embed", &[("Authorization", key)], body);
    assert_eq!(reply.status, 401, "the Bearer scheme is required");
    let reply = http(&server.addr, "POST", "/v1/embeddings", &[], br#"{"input": "x"}"#);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["code"], "invalid_api_key");
    assert_eq!(server.get("/info").status, 401);

    let bearer = format!("Bearer {key}");
    let reply = http(&server.addr, "POST", "/embed", &[("Authorization", &bearer)], body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = http(&server.addr, "POST", "/embed", &[("authorization", &format!("bearer {key}"))], body);
    assert_eq!(reply.status, 200, "the scheme is case-insensitive");
    assert_eq!(http(&server.addr, "GET", "/info", &[("Authorization", &bearer)], b"").status, 200);
    // Probes stay open.
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.get("/metrics").status, 200);

    let log = server.log();
    assert!(log.contains("DEBUG"), "the log ran at debug level: {log}");
    assert!(!log.contains(key), "the key is in the log:\n{log}");
    assert!(!log.contains("7f3a9c1"), "part of the key is in the log:\n{log}");
}

/// One thread per client, each sending `per_client` single-text requests back to
/// back; returns the wall time.
fn load(addr: &str, clients: usize, per_client: usize, texts: &[String]) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            scope.spawn(move || {
                for i in 0..per_client {
                    let text = &texts[(c * per_client + i) % texts.len()];
                    let body = serde_json::to_vec(&json!({ "inputs": text })).unwrap();
                    let reply = http(addr, "POST", "/embed", &[], &body);
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            });
        }
    });
    started.elapsed()
}

#[test]
fn concurrent_clients_are_batched_together() {
    let _one = one_at_a_time();
    let server = Server::start(&[]);
    let texts: Vec<String> = dartboard_tests::sts("test").into_iter().map(|(_, a, _)| a).take(256).collect();
    load(&server.addr, 1, 8, &texts); // warm up
    let before = server.metric("dartboard_batch_size_count").unwrap();
    let before_single = server.metric("dartboard_batch_size_bucket{le=\"1\"}").unwrap();
    let requests = 128;
    let one_at_a_time = load(&server.addr, 1, requests, &texts);
    let after_serial = server.metric("dartboard_batch_size_count").unwrap();
    assert_eq!(after_serial - before, requests as f64, "one client: one batch per request");
    let concurrent = load(&server.addr, 32, requests / 32, &texts);
    let batches = server.metric("dartboard_batch_size_count").unwrap() - after_serial;
    let singles = server.metric("dartboard_batch_size_bucket{le=\"1\"}").unwrap() - before_single - requests as f64;
    let ratio = one_at_a_time.as_secs_f64() / concurrent.as_secs_f64();
    println!(
        "{requests} single-text requests: one client {:.2} s ({:.0}/s), 32 clients {:.2} s ({:.0}/s), {ratio:.2}x; \
         32 clients ran {batches} batches ({:.1} texts each on average, {singles} of one text)",
        one_at_a_time.as_secs_f64(),
        requests as f64 / one_at_a_time.as_secs_f64(),
        concurrent.as_secs_f64(),
        requests as f64 / concurrent.as_secs_f64(),
        requests as f64 / batches,
    );
    assert!(batches < requests as f64, "32 clients must share batches: {batches} batches for {requests} requests");
    let histogram = server.get("/metrics").text();
    let multi = histogram
        .lines()
        .filter_map(|l| l.strip_prefix("dartboard_batch_size_bucket{le=\"+Inf\"} "))
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap()
        - server.metric("dartboard_batch_size_bucket{le=\"1\"}").unwrap();
    assert!(multi >= 1.0, "the batch-size histogram shows batches larger than one:\n{histogram}");
}
