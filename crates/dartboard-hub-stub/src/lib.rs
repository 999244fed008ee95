//! A Hugging Face Hub stand-in for tests: serves model repos from memory on
//! 127.0.0.1 with the protocol the real Hub speaks, and injects faults on demand.
//!
//! What it speaks (as `huggingface_hub` and `hf-hub` expect):
//! - `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: JSON with `sha` and
//!   `siblings` (with `size`, `blobId` and `lfs` when `?blobs=true`);
//! - `GET /api/models/{repo}/tree/{rev}[?recursive=true]`: tree entries (`oid`, `size`,
//!   `lfs.oid`);
//! - `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag` (git blob sha1)
//!   for small files; for LFS files a 302 to a second host name (`localhost` instead of
//!   `127.0.0.1`, on another port) with `X-Linked-Etag: "<sha256>"` and `X-Linked-Size`;
//! - `Range: bytes=N-M` (206 with `Content-Range`);
//! - errors with `X-Error-Code`: `RepoNotFound` (401 without a token, 404 with one,
//!   as the Hub answers), `RevisionNotFound` (404),
//!   `EntryNotFound` (404), `GatedRepo` (403 without the right token).
//!
//! Checked once against the official Python client (huggingface_hub 1.x/2.x):
//! `HF_ENDPOINT=http://127.0.0.1:PORT python -c "from huggingface_hub import snapshot_download;
//! print(snapshot_download('org/name', cache_dir='/tmp/c'))"` downloads every file of a
//! served repo, LFS redirect included (the test `python_client_accepts_the_stub` in
//! `tests/tests/hub_download.rs` runs exactly that).
//!
//! It also answers absolute-form requests (`GET http://host/path`), so it can stand in
//! for an HTTP proxy too.
//!
//! Faults ([`Faults`]): fail the first N requests with 500, drop the connection after N
//! body bytes, corrupt a file's body, answer slowly. Every request is logged
//! ([`HubStub::requests`]) so tests can assert that nothing was sent.
//!
//! The server runs on background threads and stops when the [`HubStub`] is dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha1::Digest as _;

/// One file of a served repo.
#[derive(Clone)]
pub struct StubFile {
    /// Path inside the repo.
    pub path: String,
    /// Content.
    pub bytes: Arc<Vec<u8>>,
    /// Whether the Hub would store it in LFS (then it is served through the redirect).
    pub lfs: bool,
}

impl StubFile {
    /// Git blob sha1 (the ETag of a regular file, the `blobId` of every file).
    pub fn git_sha1(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", self.bytes.len()).as_bytes());
        h.update(self.bytes.as_slice());
        hex::encode(h.finalize())
    }

    /// sha256 of the content (the ETag of an LFS file).
    pub fn sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.bytes.as_slice()))
    }

    /// What the Hub reports as the file's ETag.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }
}

/// A served model repo.
#[derive(Clone)]
pub struct StubRepo {
    /// `org/name`.
    pub id: String,
    /// The commit every ref points to.
    pub commit: String,
    /// Branches and tags (`main` at least).
    pub refs: Vec<String>,
    /// Files.
    pub files: Vec<StubFile>,
    /// Requires `Authorization: Bearer <token>`; without it, answers 401/403 GatedRepo.
    pub gated_token: Option<String>,
}

impl StubRepo {
    /// A repo with the given files on `main`, LFS decided by extension and size as
    /// the Hub's default `.gitattributes` does.
    pub fn new(id: &str, commit: &str, files: Vec<(String, Vec<u8>)>) -> Self {
        let files = files
            .into_iter()
            .map(|(path, bytes)| {
                let lfs = bytes.len() >= 10 * 1024 * 1024
                    || [".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".model"]
                        .iter()
                        .any(|s| path.ends_with(s));
                StubFile { path, bytes: Arc::new(bytes), lfs }
            })
            .collect();
        StubRepo {
            id: id.to_owned(),
            commit: commit.to_owned(),
            refs: vec!["main".to_owned()],
            files,
            gated_token: None,
        }
    }

    /// Reads every file under `dir` (recursively) into a repo.
    pub fn from_dir(id: &str, commit: &str, dir: &std::path::Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        files.sort();
        Ok(Self::new(id, commit, files))
    }

    fn file(&self, path: &str) -> Option<&StubFile> {
        self.files.iter().find(|f| f.path == path)
    }

    fn resolves(&self, rev: &str) -> bool {
        rev == self.commit || self.refs.iter().any(|r| r == rev)
    }
}

fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// Faults to inject; all counters count down as they fire.
#[derive(Default)]
pub struct Faults {
    /// Answer this many upcoming requests (of any kind) with 500.
    pub fail_next: AtomicUsize,
    /// Answer this many upcoming requests with 503 and `Retry-After`.
    pub unavailable_next: AtomicUsize,
    /// For this many upcoming file bodies longer than `drop_after_bytes`, close the
    /// connection after that many bytes.
    pub drop_next_bodies: AtomicUsize,
    /// See `drop_next_bodies`.
    pub drop_after_bytes: AtomicUsize,
    /// Flip a byte in the body of every file whose path is listed.
    pub corrupt: Mutex<Vec<String>>,
    /// Sleep this many milliseconds before every response.
    pub delay_ms: AtomicUsize,
    /// Answer everything with a 200 HTML page, as a web server that is not a Hub would.
    pub not_a_hub: AtomicBool,
    /// Ignore `Range` headers (always send the whole body with 200).
    pub ignore_range: AtomicBool,
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

struct State {
    repos: Mutex<BTreeMap<String, StubRepo>>,
    faults: Faults,
    log: Mutex<Vec<LoggedRequest>>,
    cdn_port: u16,
    stop: AtomicBool,
}

/// A running Hub stand-in. Dropping it stops the server.
pub struct HubStub {
    state: Arc<State>,
    api_port: u16,
    threads: Vec<JoinHandle<()>>,
}

impl HubStub {
    /// Starts the stand-in on two random loopback ports (API and "CDN").
    pub fn start(repos: Vec<StubRepo>) -> Self {
        let api = TcpListener::bind("127.0.0.1:0").expect("bind api port");
        let cdn = TcpListener::bind("127.0.0.1:0").expect("bind cdn port");
        let state = Arc::new(State {
            repos: Mutex::new(repos.into_iter().map(|r| (r.id.clone(), r)).collect()),
            faults: Faults::default(),
            log: Mutex::default(),
            cdn_port: cdn.local_addr().unwrap().port(),
            stop: AtomicBool::new(false),
        });
        let api_port = api.local_addr().unwrap().port();
        let threads = [api, cdn]
            .into_iter()
            .map(|listener| {
                let state = state.clone();
                std::thread::spawn(move || accept_loop(listener, state))
            })
            .collect();
        HubStub { state, api_port, threads }
    }

    /// The endpoint to use as `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Fault switches.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Adds or replaces a repo.
    pub fn add_repo(&self, repo: StubRepo) {
        self.state.repos.lock().unwrap().insert(repo.id.clone(), repo);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.lock().unwrap().clone()
    }
}

impl Drop for HubStub {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake both accept loops so they see the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.api_port));
        let _ = TcpStream::connect(("127.0.0.1", self.state.cdn_port));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let state = state.clone();
        std::thread::spawn(move || {
            let _ = serve_connection(stream, &state);
        });
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    if let Some(len) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
    }
    // A proxied request carries the absolute URL: serve it as the origin would,
    // which makes the stub usable as an HTTP proxy in tests.
    let target = match target.strip_prefix("http://").and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())) {
        Some(path) => path,
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    Ok(Some(Request { method, path: percent_decode(&path), query, headers }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// A file slice; `corrupt` flips one byte, `drop_after` cuts the connection.
    File {
        bytes: Arc<Vec<u8>>,
        start: usize,
        end: usize,
        corrupt: bool,
        drop_after: Option<usize>,
    },
}

impl Response {
    fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Body::Empty }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    fn json(value: serde_json::Value) -> Self {
        Response::new(200).header("Content-Type", "application/json").body(value.to_string().into_bytes())
    }

    fn body(mut self, bytes: Vec<u8>) -> Self {
        self.body = Body::Bytes(bytes);
        self
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        Response::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "error": message }).to_string().into_bytes())
    }
}

fn serve_connection(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader)? {
        state.log.lock().unwrap().push(LoggedRequest {
            method: request.method.clone(),
            target: if request.query.is_empty() {
                request.path.clone()
            } else {
                format!("{}?{}", request.path, request.query)
            },
            authorization: request.headers.get("authorization").cloned(),
            range: request.headers.get("range").cloned(),
        });
        let delay = state.faults.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay as u64));
        }
        let response = respond(&request, state);
        let keep_alive = write_response(&mut writer, &request, response)?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}

fn take(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

fn write_response(w: &mut TcpStream, request: &Request, response: Response) -> std::io::Result<bool> {
    let reason = match response.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let (bytes, cut) = match &response.body {
        Body::Empty => (Vec::new(), None),
        Body::Bytes(b) => (b.clone(), None),
        Body::File { bytes, start, end, corrupt, drop_after } => {
            let mut slice = bytes[*start..*end].to_vec();
            if *corrupt && !slice.is_empty() {
                let mid = slice.len() / 2;
                slice[mid] ^= 0xff;
            }
            (slice, *drop_after)
        }
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", response.status);
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
    head.push_str("Connection: keep-alive\r\n\r\n");
    w.write_all(head.as_bytes())?;
    if request.method == "HEAD" {
        w.flush()?;
        return Ok(true);
    }
    match cut {
        Some(n) if n < bytes.len() => {
            w.write_all(&bytes[..n])?;
            w.flush()?;
            Ok(false)
        }
        _ => {
            w.write_all(&bytes)?;
            w.flush()?;
            Ok(true)
        }
    }
}

fn respond(request: &Request, state: &State) -> Response {
    let faults = &state.faults;
    if faults.not_a_hub.load(Ordering::SeqCst) {
        return Response::new(200)
            .header("Content-Type", "text/html")
            .body(b"<html><body>It works!</body></html>".to_vec());
    }
    if take(&faults.fail_next) {
        return Response::new(500).body(b"internal error".to_vec());
    }
    if take(&faults.unavailable_next) {
        return Response::new(503).header("Retry-After", "0").body(b"try again".to_vec());
    }
    let path = request.path.trim_start_matches('/');
    if let Some(sha) = path.strip_prefix("lfs/") {
        return serve_lfs(request, state, sha);
    }
    let repos = state.repos.lock().unwrap();
    if let Some(rest) = path.strip_prefix("api/models/") {
        return api(request, &repos, rest);
    }
    // {org}/{name}/resolve/{rev}/{file...}
    let parts: Vec<&str> = path.splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let id = format!("{}/{}", parts[0], parts[1]);
        return resolve(request, state, &repos, &id, parts[3], parts[4]);
    }
    Response::error(404, "EntryNotFound", "no such route")
}

fn authorize(request: &Request, repo: &StubRepo) -> Option<Response> {
    let token = repo.gated_token.as_ref()?;
    match request.headers.get("authorization") {
        Some(h) if h == &format!("Bearer {token}") => None,
        Some(_) => Some(Response::error(403, "GatedRepo", "Access to this model is restricted")),
        None => Some(Response::error(401, "GatedRepo", "Access to this model is restricted; log in")),
    }
}

/// As the Hub: an unknown repo is 401 to an anonymous request (it might be private)
/// and 404 to an authenticated one, `X-Error-Code: RepoNotFound` either way, on every
/// route (the revision endpoint included, where a bare 404 would suggest a missing
/// revision).
fn find_repo<'a>(request: &Request, repos: &'a BTreeMap<String, StubRepo>, id: &str) -> Result<&'a StubRepo, Response> {
    let status = if request.headers.contains_key("authorization") { 404 } else { 401 };
    repos.get(id).ok_or_else(|| Response::error(status, "RepoNotFound", "Repository not found"))
}

fn api(request: &Request, repos: &BTreeMap<String, StubRepo>, rest: &str) -> Response {
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    if parts.len() < 2 {
        return Response::error(404, "RepoNotFound", "Repository not found");
    }
    let id = format!("{}/{}", parts[0], parts[1]);
    let repo = match find_repo(request, repos, &id) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(denied) = authorize(request, repo) {
        return denied;
    }
    let (kind, rev) = match (parts.get(2), parts.get(3)) {
        (None, _) => ("info", "main"),
        (Some(&"revision"), Some(rev)) => ("info", *rev),
        (Some(&"tree"), Some(rev)) => ("tree", rev.split('/').next().unwrap_or("main")),
        _ => return Response::error(404, "EntryNotFound", "no such route"),
    };
    if !repo.resolves(rev) {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    let blobs = request.query.split('&').any(|q| q == "blobs=true");
    if kind == "tree" {
        let entries: Vec<_> = repo
            .files
            .iter()
            .map(|f| {
                let mut e =
                    serde_json::json!({ "type": "file", "oid": f.git_sha1(), "size": f.bytes.len(), "path": f.path });
                if f.lfs {
                    e["lfs"] = serde_json::json!({ "oid": f.sha256(), "size": f.bytes.len(), "pointerSize": 134 });
                }
                e
            })
            .collect();
        return Response::json(serde_json::Value::Array(entries));
    }
    let siblings: Vec<_> = repo
        .files
        .iter()
        .map(|f| {
            let mut s = serde_json::json!({ "rfilename": f.path });
            if blobs {
                s["size"] = f.bytes.len().into();
                s["blobId"] = f.git_sha1().into();
                if f.lfs {
                    s["lfs"] = serde_json::json!({ "sha256": f.sha256(), "size": f.bytes.len(), "pointerSize": 134 });
                }
            }
            s
        })
        .collect();
    Response::json(serde_json::json!({
        "_id": "0", "id": repo.id, "modelId": repo.id, "sha": repo.commit, "private": false,
        "gated": repo.gated_token.is_some(), "disabled": false, "tags": [], "siblings": siblings,
    }))
}

fn resolve(
    request: &Request,
    state: &State,
    repos: &BTreeMap<String, StubRepo>,
    id: &str,
    rev: &str,
    file: &str,
) -> Response {
    let repo = match find_repo(request, repos, id) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(denied) = authorize(request, repo) {
        return denied;
    }
    if !repo.resolves(rev) {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    let Some(f) = repo.file(file) else {
        return Response::error(404, "EntryNotFound", &format!("{file} does not exist on \"{rev}\""))
            .header("X-Repo-Commit", repo.commit.clone());
    };
    if f.lfs {
        return Response::new(302)
            .header("Location", format!("http://localhost:{}/lfs/{}", state.cdn_port, f.sha256()))
            .header("X-Repo-Commit", repo.commit.clone())
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256()))
            .header("X-Linked-Size", f.bytes.len().to_string())
            .header("ETag", format!("\"{}\"", f.git_sha1()));
    }
    file_response(request, state, f)
        .header("X-Repo-Commit", repo.commit.clone())
        .header("ETag", format!("\"{}\"", f.git_sha1()))
}

fn serve_lfs(request: &Request, state: &State, sha: &str) -> Response {
    let repos = state.repos.lock().unwrap();
    let found = repos.values().flat_map(|r| r.files.iter()).find(|f| f.lfs && f.sha256() == sha).cloned();
    drop(repos);
    match found {
        Some(f) => file_response(request, state, &f).header("ETag", format!("\"{sha}\"")),
        None => Response::new(404).body(b"NoSuchKey".to_vec()),
    }
}

fn file_response(request: &Request, state: &State, f: &StubFile) -> Response {
    let faults = &state.faults;
    let len = f.bytes.len();
    let corrupt = faults.corrupt.lock().unwrap().iter().any(|p| p == &f.path);
    let range = request
        .headers
        .get("range")
        .filter(|_| !faults.ignore_range.load(Ordering::SeqCst))
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap_or(0), b.parse::<usize>().map(|e| e + 1).unwrap_or(len).min(len)));
    // Only bodies longer than the cut point count: small files pass untouched.
    let cut = faults.drop_after_bytes.load(Ordering::SeqCst);
    let body_len = range.map_or(len, |(start, end)| end.saturating_sub(start));
    let drop_after = (request.method == "GET" && body_len > cut && take(&faults.drop_next_bodies)).then_some(cut);
    match range {
        Some((start, _)) if start >= len && len > 0 => {
            Response::new(416).header("Content-Range", format!("bytes */{len}"))
        }
        Some((start, end)) => Response {
            status: 206,
            headers: vec![("Content-Range".into(), format!("bytes {start}-{}/{len}", end.saturating_sub(1)))],
            body: Body::File { bytes: f.bytes.clone(), start, end, corrupt, drop_after },
        },
        None => Response {
            status: 200,
            headers: Vec::new(),
            body: Body::File { bytes: f.bytes.clone(), start: 0, end: len, corrupt, drop_after },
        },
    }
}
