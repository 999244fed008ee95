//! A Hugging Face Hub stand-in for tests: serves model repos from memory on
//! 127.0.0.1 with the protocol the real Hub speaks, accepts uploads as the Hub does,
//! and injects faults on demand.
//!
//! What it speaks for downloads (as `huggingface_hub` and `hf-hub` expect;
//! `download.rs`):
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
//! What it speaks for uploads (the official client's HTTP, non-Xet path; `upload.rs`):
//! - `POST /api/repos/create` (409 when it exists; a new repo starts, as on the Hub,
//!   with one commit holding the default `.gitattributes`), `GET /api/models/{repo}/refs`,
//!   `POST /api/models/{repo}/branch/{branch}` and `/tag/{rev}` (409 when it exists),
//!   `POST /api/validate-yaml`;
//! - `POST /api/models/{repo}/preupload/{rev}`: `regular` or `lfs` per file by the Hub's
//!   rules (default `.gitattributes`, 10 MiB, binary sample);
//! - `POST /{repo}.git/info/lfs/objects/batch` (operation `upload`): objects the repo
//!   already has get no `actions`; others get a `basic` upload URL, or `multipart`
//!   (`chunk_size` and one URL per part, completion URL as `href`) when
//!   [`Faults::multipart_chunk_size`] is set; and a `verify` action. The upload URLs are
//!   on the second host and, like presigned S3 URLs, take no token; a stored object's
//!   sha256 must equal its oid (else 400);
//! - `POST /api/models/{repo}/commit/{branch}`: NDJSON (`header`, `file`, `lfsFile`,
//!   `deletedFile`, `deletedFolder`); 412 when `parentCommit` is not the branch head,
//!   400 for a tag or a commit id, 404 `RevisionNotFound` for a missing branch. The
//!   download endpoints then serve the new commit ([`HubStub::commits`] lists them).
//! - Tokens ([`HubStub::add_token`]): writes need a write token (none: 401, unknown:
//!   401 "Invalid credentials in Authorization header", read-only: 403); a private repo
//!   is readable with any registered token.
//!
//! Checked against the official Python client (huggingface_hub 2.x):
//! `snapshot_download` of a served repo, LFS redirect included (the test
//! `python_client_accepts_the_stub` in `tests/tests/hub_download.rs`), and
//! `HfApi.upload_folder` with `HF_HUB_DISABLE_XET=1`, basic and multipart, then read back
//! (`tests/tests/hub_upload_stub.rs`).
//!
//! It also answers absolute-form requests (`GET http://host/path`), so it can stand in
//! for an HTTP proxy too. Request bodies may come with `Content-Length` or chunked.
//!
//! Faults ([`Faults`]): fail the first N requests with 500 (or 503), drop the connection
//! after N body bytes, corrupt a file's body, answer slowly; for uploads: cut N upload
//! bodies after some bytes, lose the reply of N commits after applying them. Every
//! request is logged ([`HubStub::requests`]) so tests can assert that nothing was sent.
//!
//! The server runs on background threads and stops when the [`HubStub`] is dropped. A
//! malformed request gets a 4xx; a bug in a handler gets a 500 (and its panic message
//! on stderr), never a silently dead connection thread.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

mod download;
mod http;
mod repo;
mod upload;

use http::{BodyError, Request, Response};
pub use repo::{StubCommit, StubFile, StubRepo};

/// The largest request body read into memory (a commit with its regular files inlined).
const MAX_BODY: u64 = 256 * 1024 * 1024;
/// How much of a refused upload's body is still read before answering.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

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
    /// For this many upcoming LFS upload bodies (object PUT or part PUT) longer than
    /// `drop_upload_after_bytes`: read that many bytes, then close the connection
    /// unanswered.
    pub drop_next_uploads: AtomicUsize,
    /// See `drop_next_uploads`.
    pub drop_upload_after_bytes: AtomicUsize,
    /// When non-zero, the LFS batch answer offers multipart (`chunk_size` = this, one URL
    /// per part, a completion URL) for objects larger than this; else basic.
    pub multipart_chunk_size: AtomicUsize,
    /// This many upcoming commit POSTs are applied, then the connection is closed
    /// unanswered (a reply lost after the server applied the commit).
    pub fail_next_commits: AtomicUsize,
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

type Hook = Arc<dyn Fn(&str) + Send + Sync>;

struct State {
    repos: Mutex<BTreeMap<String, StubRepo>>,
    faults: Faults,
    log: Mutex<Vec<LoggedRequest>>,
    api_port: u16,
    cdn_port: u16,
    stop: AtomicBool,
    /// Token -> may write.
    tokens: Mutex<BTreeMap<String, bool>>,
    commits: Mutex<Vec<StubCommit>>,
    lfs: Mutex<upload::LfsStore>,
    on_lfs_upload: Mutex<Option<Hook>>,
    /// Makes every commit id unique, even for identical contents.
    commit_counter: AtomicUsize,
}

impl State {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

/// Locks a mutex even if a handler panicked while holding it: the data is still the
/// stub's best knowledge, and one bug must not turn every later request into a panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        let api_port = api.local_addr().expect("api port").port();
        let state = Arc::new(State {
            repos: Mutex::new(repos.into_iter().map(|r| (r.id.clone(), r)).collect()),
            faults: Faults::default(),
            log: Mutex::default(),
            api_port,
            cdn_port: cdn.local_addr().expect("cdn port").port(),
            stop: AtomicBool::new(false),
            tokens: Mutex::default(),
            commits: Mutex::default(),
            lfs: Mutex::default(),
            on_lfs_upload: Mutex::default(),
            commit_counter: AtomicUsize::new(0),
        });
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
        lock(&self.state.repos).insert(repo.id.clone(), repo);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// Registers a token. `write: true` may create repos, branches and commit; a read token gets 403 on writes.
    /// Writes without a token, or with an unknown one, get 401.
    pub fn add_token(&self, token: &str, write: bool) {
        lock(&self.state.tokens).insert(token.to_owned(), write);
    }

    /// Every successful commit so far, in order (tests assert "exactly one commit").
    pub fn commits(&self) -> Vec<StubCommit> {
        lock(&self.state.commits).clone()
    }

    /// The repo as served now (after commits), if it exists (its files = its `main` branch).
    pub fn repo(&self, id: &str) -> Option<StubRepo> {
        lock(&self.state.repos).get(id).cloned()
    }

    /// Called with the repo path of each LFS object upload (PUT of a whole object or of its first part)
    /// when its body starts arriving, before it is stored. Tests use it to change a source file mid-upload.
    ///
    /// The path is the one a preupload request named for a file of that size whose sample
    /// starts the body; without such a request, the object's oid (sha256) is passed. It is
    /// called on every attempt (a retried upload calls it again), on the connection's thread.
    pub fn on_lfs_upload(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *lock(&self.state.on_lfs_upload) = Some(Arc::new(hook));
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

fn serve_connection(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request = match http::read_head(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let response = Response::bad_request(&format!("malformed request: {e}")).closing();
                let _ = http::write_response(&mut writer, "GET", response);
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        lock(&state.log).push(LoggedRequest {
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
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(&mut request, &mut reader, &mut writer, state)
        }));
        let response = match handled {
            Ok(Ok(response)) => response,
            // The body could not be read (cut, timed out): nobody is left to answer.
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                Response::error(500, "", &format!("hub stub bug: {message}")).closing()
            }
        };
        let keep_alive = http::write_response(&mut writer, &request.method, response)?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Reads the request's body as its route needs and answers it.
fn handle(
    request: &mut Request,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    state: &State,
) -> std::io::Result<Response> {
    let framing = match http::framing(&request.headers) {
        Ok(framing) => framing,
        Err(message) => return Ok(Response::bad_request(&message).closing()),
    };
    let has_body = framing != http::Framing::Length(0);
    if has_body && request.headers.get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if let Some(fault) = injected_fault(state) {
        // Drain what the client sends so it reads the answer, not a reset.
        let drained = std::io::copy(&mut http::BodyReader::new(reader, framing).take(MAX_BODY), &mut std::io::sink());
        return Ok(if drained.is_ok() { fault } else { fault.closing() });
    }
    if upload::is_object_upload(request) {
        let mut body = http::BodyReader::new(reader, framing);
        let response = match upload::receive_object(request, &mut body, state) {
            Ok(response) => response,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Response::bad_request(&e.to_string()),
            Err(e) => return Err(e),
        };
        if !body.is_done() && !response.hang_up {
            // A refusal before the body was read: take in the rest of a small body, so
            // the client reads the answer rather than a reset connection.
            let _ = std::io::copy(&mut (&mut body).take(DRAIN_LIMIT), &mut std::io::sink());
        }
        // An answer before the whole body was read cannot keep the connection.
        return Ok(if body.is_done() { response } else { response.closing() });
    }
    match http::read_body(reader, framing, MAX_BODY) {
        Ok(body) => request.body = body,
        Err(BodyError::TooLarge(limit)) => {
            return Ok(Response::error(413, "", &format!("request body over {limit} bytes")).closing())
        }
        Err(BodyError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Ok(Response::bad_request(&format!("malformed request body: {e}")).closing())
        }
        Err(BodyError::Io(e)) => return Err(e),
    }
    Ok(respond(request, state))
}

fn take(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// The faults that replace any answer.
fn injected_fault(state: &State) -> Option<Response> {
    let faults = &state.faults;
    if faults.not_a_hub.load(Ordering::SeqCst) {
        return Some(
            Response::new(200)
                .header("Content-Type", "text/html")
                .body(b"<html><body>It works!</body></html>".to_vec()),
        );
    }
    if take(&faults.fail_next) {
        return Some(Response::new(500).body(b"internal error".to_vec()));
    }
    if take(&faults.unavailable_next) {
        return Some(Response::new(503).header("Retry-After", "0").body(b"try again".to_vec()));
    }
    None
}

fn respond(request: &Request, state: &State) -> Response {
    let path = request.path.trim_start_matches('/');
    if let Some(sha) = path.strip_prefix("lfs/") {
        return download::serve_lfs(request, state, sha);
    }
    if let Some(response) = upload::route(request, state, path) {
        return response;
    }
    let repos = lock(&state.repos);
    if let Some(rest) = path.strip_prefix("api/models/") {
        return download::api(request, state, &repos, rest);
    }
    // {org}/{name}/resolve/{rev}/{file...}
    let parts: Vec<&str> = path.splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let id = format!("{}/{}", parts[0], parts[1]);
        return download::resolve(request, state, &repos, &id, parts[3], parts[4]);
    }
    Response::error(404, "EntryNotFound", "no such route")
}

/// As the Hub: an unknown repo is 401 to an anonymous request (it might be private)
/// and 404 to an authenticated one, `X-Error-Code: RepoNotFound` either way, on every
/// route (the revision endpoint included, where a bare 404 would suggest a missing
/// revision).
fn find_repo<'a>(request: &Request, repos: &'a BTreeMap<String, StubRepo>, id: &str) -> Result<&'a StubRepo, Response> {
    let status = if request.headers.contains_key("authorization") { 404 } else { 401 };
    repos.get(id).ok_or_else(|| Response::error(status, "RepoNotFound", "Repository not found"))
}

const INVALID_CREDENTIALS: &str = "Invalid credentials in Authorization header";

/// Whether the request may read `repo`: private repos need a registered token (as the
/// Hub hides them: 401 RepoNotFound anonymously), gated ones their token.
fn read_access(request: &Request, state: &State, repo: &StubRepo) -> Option<Response> {
    if repo.private {
        match request.token() {
            None => return Some(Response::error(401, "RepoNotFound", "Repository not found")),
            Some(t) if !lock(&state.tokens).contains_key(t) => {
                return Some(Response::error(401, "", INVALID_CREDENTIALS))
            }
            Some(_) => {}
        }
    }
    let token = repo.gated_token.as_ref()?;
    match request.headers.get("authorization") {
        Some(h) if h == &format!("Bearer {token}") => None,
        Some(_) => Some(Response::error(403, "GatedRepo", "Access to this model is restricted")),
        None => Some(Response::error(401, "GatedRepo", "Access to this model is restricted; log in")),
    }
}

/// The token's right to write: `Ok(true)` write, `Ok(false)` read only; 401 without a
/// registered token.
fn authenticate(request: &Request, state: &State) -> Result<bool, Response> {
    match request.token() {
        None => Err(Response::error(401, "", "Authorization required: pass a write token (Authorization: Bearer ...)")),
        Some(t) => lock(&state.tokens).get(t).copied().ok_or_else(|| Response::error(401, "", INVALID_CREDENTIALS)),
    }
}

fn forbidden_write(what: &str) -> Response {
    Response::error(403, "", &format!("You don't have the rights to {what}: use a token with write access"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one raw request (then closes the writing side) and returns the status and
    /// the whole answer.
    fn exchange(port: u16, raw: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(raw).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, answer)
    }

    fn post_json(port: u16, path: &str, token: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let body = body.to_string();
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) = exchange(port, raw.as_bytes());
        let json = answer.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok());
        (status, json.unwrap_or_default())
    }

    fn chunked_put(port: u16, path: &str, data: &[u8]) -> (u16, String) {
        let (a, b) = data.split_at(data.len() / 2);
        let mut raw = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
        for chunk in [a, b] {
            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            raw.extend_from_slice(chunk);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        exchange(port, &raw)
    }

    #[test]
    fn a_put_whose_sha256_differs_from_its_oid_is_refused() {
        let stub = HubStub::start(Vec::new());
        stub.add_token("w", true);
        let (api, cdn) = (stub.api_port, stub.state.cdn_port);
        let (status, _) =
            post_json(api, "/api/repos/create", "w", &serde_json::json!({"name": "r", "organization": "org"}));
        assert_eq!(status, 200);
        let data = b"the weights";
        let oid = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        let batch = serde_json::json!({
            "operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": data.len()}],
        });
        let (status, answer) = post_json(api, "/org/r.git/info/lfs/objects/batch", "w", &batch);
        assert_eq!(status, 200);
        let href = answer["objects"][0]["actions"]["upload"]["href"].as_str().unwrap().to_owned();
        let path = href.split_once(&format!(":{cdn}")).unwrap().1.to_owned();
        assert_eq!(path, format!("/lfs-upload/org/r/{oid}"));

        let (status, answer) = chunked_put(cdn, &path, b"not weights");
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("not the object id"), "{answer}");
        let (status, answer) = chunked_put(cdn, &path, data);
        assert_eq!(status, 200, "{answer}");
        // Stored now: the next batch offers no upload for it.
        let (_, answer) = post_json(api, "/org/r.git/info/lfs/objects/batch", "w", &batch);
        assert!(answer["objects"][0].get("actions").is_none(), "{answer}");
        assert_eq!(answer["objects"][0]["oid"], oid.as_str());
    }

    #[test]
    fn malformed_requests_get_400_and_the_server_keeps_serving() {
        let stub = HubStub::start(vec![StubRepo::new("org/r", "c0", vec![("a.txt".into(), b"hi".to_vec())])]);
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"POST /api/repos/create HTTP/1.1\r\nContent-Length: nine\r\n\r\n",
            b"POST /api/repos/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"PUT /lfs-upload/org/r/abc HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        ] {
            let (status, answer) = exchange(stub.api_port, raw);
            assert!((400..500).contains(&status), "{}: {answer}", String::from_utf8_lossy(raw));
        }
        let (status, answer) = exchange(stub.api_port, b"GET /org/r/resolve/main/a.txt HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200, "{answer}");
        assert!(answer.ends_with("\r\n\r\nhi"), "{answer}");
    }
}
