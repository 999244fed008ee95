//! The Hub's upload endpoints, as the official client's HTTP (non-Xet) path uses them:
//! create a repo, branches and tags, preupload (regular or LFS per file), the Git LFS
//! batch API (basic or multipart transfer, verify), the object uploads themselves, and
//! the NDJSON commit.
//!
//! LFS objects live in [`LfsStore`], per repo, from their upload until a commit names
//! them (`lfsFile`); only an object whose bytes hash to its oid is ever stored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use sha1::Digest as _;

use crate::http::{BodyReader, Request, Response};
use crate::repo::{default_gitattributes, git_sha1, gitattributes_lfs, Change, StubCommit, StubFile, StubRepo};
use crate::{authenticate, find_repo, forbidden_write, lock, read_access, take, State};

/// The largest LFS object the stub accepts (it keeps objects in memory).
const MAX_OBJECT: u64 = 2 * 1024 * 1024 * 1024;
/// The Hub's sample: the first bytes of a file, sent with the preupload request.
const SAMPLE: usize = 512;
/// How many preupload announcements are remembered (to name files for the upload hook).
const MAX_ANNOUNCED: usize = 10_000;

/// Routes the upload endpoints (all but the object PUTs, which [`receive_object`]
/// streams); `None` for other routes.
pub(crate) fn route(request: &Request, state: &State, path: &str) -> Option<Response> {
    let post = request.method == "POST";
    if post && path == "api/repos/create" {
        return Some(create_repo(request, state));
    }
    if post && path == "api/validate-yaml" {
        // The client validates a README's metadata before committing it; the stub has no opinion.
        return Some(Response::json(json!({ "errors": [], "warnings": [] })));
    }
    if let (true, Some(rest)) = (post, path.strip_prefix("lfs-complete/")) {
        return Some(complete(request, state, rest));
    }
    if let Some(rest) = path.strip_prefix("api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if parts.len() >= 3 {
            let id = format!("{}/{}", parts[0], parts[1]);
            let arg = parts.get(3).copied().unwrap_or_default();
            return match (request.method.as_str(), parts[2]) {
                ("GET", "refs") if parts.len() == 3 => Some(refs(request, state, &id)),
                ("POST", "branch") => Some(create_ref(request, state, &id, arg, false)),
                ("POST", "tag") => Some(create_ref(request, state, &id, arg, true)),
                ("POST", "preupload") => Some(preupload(request, state, &id, arg)),
                ("POST", "commit") => Some(commit(request, state, &id, arg)),
                _ => None,
            };
        }
    }
    // {org}/{name}.git/info/lfs/objects/{batch,verify}
    let parts: Vec<&str> = path.splitn(3, '/').collect();
    if let (true, [org, name, rest]) = (post, parts.as_slice()) {
        if let Some(name) = name.strip_suffix(".git") {
            let id = format!("{org}/{name}");
            return match *rest {
                "info/lfs/objects/batch" => Some(batch(request, state, &id)),
                "info/lfs/objects/verify" => Some(verify(request, state, &id)),
                _ => None,
            };
        }
    }
    None
}

fn json_body(request: &Request) -> Result<Value, Response> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Response::bad_request("the request body must be a JSON object")),
        Err(e) => Err(Response::bad_request(&format!("the request body is not JSON: {e}"))),
    }
}

/// Authenticates, then finds the repo (404 `RepoNotFound`), then checks the right to write.
fn writable<'a>(
    request: &Request,
    state: &State,
    repos: &'a mut BTreeMap<String, StubRepo>,
    id: &str,
    what: &str,
) -> Result<&'a mut StubRepo, Response> {
    let write = authenticate(request, state)?;
    let repo = repos.get_mut(id).ok_or_else(|| Response::error(404, "RepoNotFound", "Repository not found"))?;
    if !write {
        return Err(forbidden_write(what));
    }
    Ok(repo)
}

fn commit_id(parts: &[&str]) -> String {
    hex::encode(sha1::Sha1::digest(parts.join("\n").as_bytes()))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The Hub's repo name rules.
fn check_name(part: &str) -> Result<(), String> {
    let ok = !part.is_empty()
        && part.len() <= 96
        && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !part.contains("--")
        && !part.contains("..")
        && !part.starts_with(['-', '.'])
        && !part.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid repo name {part:?}: use letters, digits, '-', '_' and '.' (not '--' or '..', not at either end), \
             at most 96 characters"
        ))
    }
}

/// Git's ref name rules (the parts a client can get wrong), and no 40-hex names, which
/// would shadow commit ids.
fn check_ref_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.contains("..")
        && !name.contains("//")
        && !name.starts_with('/')
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
        && !is_hex(name, 40);
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid reference name {name:?}"))
    }
}

/// A path inside a repo: relative, `/`-separated, no `.`/`..`/empty segments, not in `.git`.
fn check_path(path: &str) -> Result<String, String> {
    let ok = !path.is_empty()
        && path.len() <= 1024
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
        && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && path.split('/').next() != Some(".git");
    if ok {
        Ok(path.to_owned())
    } else {
        Err(format!("Invalid path in repo {path:?}: use a relative path with `/` and no `.`, `..` or empty parts"))
    }
}

/// Whether a sample looks binary to the Hub (then the file must go through LFS): a NUL
/// byte, or bytes that are not UTF-8 (a sequence cut by the sample's end is fine).
fn is_binary(sample: &[u8]) -> bool {
    sample.contains(&0) || std::str::from_utf8(sample).is_err_and(|e| e.error_len().is_some())
}

/// The Hub's preupload decision for a file.
fn stores_in_lfs(path: &str, size: u64, sample: &[u8]) -> bool {
    size > 0 && (gitattributes_lfs(path, size) || is_binary(&sample[..sample.len().min(SAMPLE)]))
}

fn create_repo(request: &Request, state: &State) -> Response {
    match authenticate(request, state) {
        Ok(true) => {}
        Ok(false) => return forbidden_write("create a repo"),
        Err(e) => return e,
    }
    let body = match json_body(request) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Response::bad_request("`name` (a string) is required");
    };
    let Some(org) = body.get("organization").and_then(Value::as_str) else {
        return Response::bad_request("`organization` is required: the stub has no user namespace, create `org/name`");
    };
    match body.get("type").and_then(Value::as_str) {
        None | Some("model") => {}
        Some(other) => return Response::bad_request(&format!("the stub serves model repos only, not {other:?}")),
    }
    let private = body.get("private").and_then(Value::as_bool).unwrap_or(false)
        || body.get("visibility").and_then(Value::as_str) == Some("private");
    if let Err(message) = check_name(org).and_then(|()| check_name(name)) {
        return Response::bad_request(&message);
    }
    let id = format!("{org}/{name}");
    let url = format!("{}/{id}", state.endpoint());
    let mut repos = lock(&state.repos);
    if repos.contains_key(&id) {
        let message = "You already created this model repo";
        return Response::error(409, "", message)
            .body(json!({ "error": message, "url": url }).to_string().into_bytes());
    }
    let n = state.commit_counter.fetch_add(1, Ordering::SeqCst).to_string();
    let commit = commit_id(&[&id, "initial commit", &n]);
    let mut repo = StubRepo::new(&id, &commit, vec![(".gitattributes".into(), default_gitattributes().into_bytes())]);
    repo.private = private;
    repos.insert(id.clone(), repo);
    Response::json(json!({ "url": url, "name": id, "id": id }))
}

fn refs(request: &Request, state: &State, id: &str) -> Response {
    let repos = lock(&state.repos);
    let repo = match find_repo(request, &repos, id) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(denied) = read_access(request, state, repo) {
        return denied;
    }
    let entry = |name: &String, kind: &str| {
        let commit = repo.lookup(name).map_or(repo.commit.as_str(), |(c, _)| c);
        json!({ "name": name, "ref": format!("refs/{kind}/{name}"), "targetCommit": commit })
    };
    Response::json(json!({
        "branches": repo.refs.iter().map(|r| entry(r, "heads")).collect::<Vec<_>>(),
        "tags": repo.tags.iter().map(|t| entry(t, "tags")).collect::<Vec<_>>(),
        "converts": [],
        "pullRequests": [],
    }))
}

/// `POST /api/models/{repo}/branch/{branch}` (`{"startingPoint": rev}`) or
/// `/tag/{rev}` (`{"tag": name}`).
fn create_ref(request: &Request, state: &State, id: &str, arg: &str, tag: bool) -> Response {
    // The Hub authenticates before it reads the request.
    if let Err(e) = authenticate(request, state) {
        return e;
    }
    let body = match json_body(request) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut repos = lock(&state.repos);
    let repo = match writable(request, state, &mut repos, id, if tag { "create a tag" } else { "create a branch" }) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let (name, start) = if tag {
        match body.get("tag").and_then(Value::as_str) {
            Some(name) => (name, arg),
            None => return Response::bad_request("`tag` (a string) is required"),
        }
    } else {
        (arg, body.get("startingPoint").and_then(Value::as_str).unwrap_or("main"))
    };
    if let Err(message) = check_ref_name(name) {
        return Response::bad_request(&message);
    }
    if repo.is_branch(name) || repo.is_tag(name) {
        return Response::error(409, "", &format!("Reference already exists: {name}"));
    }
    let Some((commit, _)) = repo.lookup(start) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {start}"));
    };
    let commit = commit.to_owned();
    repo.add_ref(name, &commit, tag);
    Response::json(json!({}))
}

fn preupload(request: &Request, state: &State, id: &str, rev: &str) -> Response {
    // The Hub authenticates before it reads the request.
    if let Err(e) = authenticate(request, state) {
        return e;
    }
    if request.query_param("create_pr").is_some_and(|v| v == "1") {
        return Response::bad_request("the hub stub does not support pull requests (create_pr)");
    }
    let body = match json_body(request) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut repos = lock(&state.repos);
    let repo = match writable(request, state, &mut repos, id, "upload files") {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some((_, existing)) = repo.lookup(rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let Some(files) = body.get("files").and_then(Value::as_array) else {
        return Response::bad_request("`files` (a list of {path, sample, size}) is required");
    };
    let mut answers = Vec::new();
    let mut announced = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = f.get("path").and_then(Value::as_str).ok_or_else(|| format!("files[{i}]: `path` is required"));
        let size = f.get("size").and_then(Value::as_u64).ok_or_else(|| format!("files[{i}]: `size` is required"));
        let sample = f
            .get("sample")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("files[{i}]: `sample` (base64) is required"))
            .and_then(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| format!("files[{i}]: `sample` is not base64: {e}"))
            });
        let (path, size, sample) = match (path.and_then(check_path), size, sample) {
            (Ok(p), Ok(s), Ok(sample)) => (p, s, sample),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Response::bad_request(&e),
        };
        let lfs = stores_in_lfs(&path, size, &sample);
        let mut answer =
            json!({ "path": path, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false });
        // The client compares this with its own oid (sha256 for LFS, git sha1 otherwise)
        // and leaves unchanged files out of the commit.
        if let Some(old) = existing.iter().find(|e| e.path == path) {
            answer["oid"] = (if old.lfs { old.sha256() } else { old.git_sha1() }).into();
        }
        answers.push(answer);
        if lfs {
            announced.push(Announced { repo: id.to_owned(), path, size, sample });
        }
    }
    drop(repos);
    lock(&state.lfs).remember(announced);
    Response::json(json!({ "files": answers }))
}

fn batch(request: &Request, state: &State, id: &str) -> Response {
    // The Hub authenticates before it reads the request.
    if let Err(e) = authenticate(request, state) {
        return e;
    }
    let body = match json_body(request) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut repos = lock(&state.repos);
    let repo = match writable(request, state, &mut repos, id, "upload LFS objects") {
        Ok(r) => r,
        Err(e) => return e,
    };
    match body.get("operation").and_then(Value::as_str) {
        Some("upload") => {}
        other => {
            return Response::bad_request(&format!("operation {other:?}: the stub's batch API takes `upload` only"))
        }
    }
    if body.get("hash_algo").is_some_and(|h| h != "sha256") {
        return Response::bad_request("hash_algo: only sha256 is supported");
    }
    let Some(objects) = body.get("objects").and_then(Value::as_array) else {
        return Response::bad_request("`objects` (a list of {oid, size}) is required");
    };
    let client_multipart = body
        .get("transfers")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t.as_str() == Some("multipart")));
    let chunk = state.faults.multipart_chunk_size.load(Ordering::SeqCst) as u64;
    let offered = |size: u64| (client_multipart && chunk > 0 && size > chunk).then_some(chunk);
    let in_repo: BTreeSet<String> = repo.all_files().filter(|f| f.lfs).map(StubFile::sha256).collect();
    drop(repos);

    let cdn = format!("http://localhost:{}", state.cdn_port);
    let api = state.endpoint();
    let mut store = lock(&state.lfs);
    let mut answers = Vec::new();
    let mut any_multipart = false;
    for object in objects {
        let (oid, size) = match (object.get("oid").and_then(Value::as_str), object.get("size").and_then(Value::as_u64))
        {
            (Some(oid), Some(size)) if is_hex(oid, 64) && size <= MAX_OBJECT => (oid, size),
            _ => {
                let message = format!(
                    "Invalid object {object}: `oid` must be a lowercase sha256 and `size` at most {MAX_OBJECT} bytes"
                );
                let oid = object.get("oid").and_then(Value::as_str).unwrap_or_default();
                let size = object.get("size").and_then(Value::as_u64).unwrap_or_default();
                answers.push(json!({ "oid": oid, "size": size, "error": { "code": 422, "message": message } }));
                continue;
            }
        };
        if in_repo.contains(oid) || store.object(id, oid).is_some_and(|o| o.len() as u64 == size) {
            answers.push(json!({ "oid": oid, "size": size }));
            continue;
        }
        let object_url = format!("{cdn}/lfs-upload/{id}/{oid}");
        let upload = match offered(size) {
            Some(chunk) => {
                any_multipart = true;
                let mut header = json!({ "chunk_size": chunk.to_string() });
                for n in 1..=size.div_ceil(chunk) {
                    header[n.to_string()] = format!("{object_url}?partNumber={n}").into();
                }
                json!({ "href": format!("{api}/lfs-complete/{id}/{oid}"), "header": header })
            }
            None => json!({ "href": object_url }),
        };
        store.announce(id, oid, size, offered(size));
        answers.push(json!({
            "oid": oid, "size": size, "authenticated": true,
            "actions": { "upload": upload, "verify": { "href": format!("{api}/{id}.git/info/lfs/objects/verify") } },
        }));
    }
    let transfer = if any_multipart { "multipart" } else { "basic" };
    Response::new(200)
        .header("Content-Type", "application/vnd.git-lfs+json")
        .body(json!({ "transfer": transfer, "objects": answers, "hash_algo": "sha256" }).to_string().into_bytes())
}

fn verify(request: &Request, state: &State, id: &str) -> Response {
    // The Hub authenticates before it reads the request.
    if let Err(e) = authenticate(request, state) {
        return e;
    }
    let body = match json_body(request) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if let Err(e) = writable(request, state, &mut lock(&state.repos), id, "upload LFS objects") {
        return e;
    }
    let (Some(oid), Some(size)) = (body.get("oid").and_then(Value::as_str), body.get("size").and_then(Value::as_u64))
    else {
        return Response::bad_request("`oid` and `size` are required");
    };
    match lock(&state.lfs).object(id, oid) {
        Some(o) if o.len() as u64 == size => Response::json(json!({})),
        Some(o) => Response::error(422, "", &format!("object {oid} is stored with {} bytes, not {size}", o.len())),
        None => Response::error(404, "", &format!("object {oid} is not stored in {id}")),
    }
}

/// `POST /lfs-complete/{repo}/{oid}` with `{"oid", "parts": [{"partNumber", "etag"}]}`:
/// no token, as the client sends none there.
fn complete(request: &Request, state: &State, rest: &str) -> Response {
    let Some((id, oid)) = rest.rsplit_once('/') else {
        return Response::error(404, "", "no such upload");
    };
    let body = match json_body(request) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if body.get("oid").and_then(Value::as_str) != Some(oid) {
        return Response::bad_request(&format!("the completion's `oid` must be {oid}"));
    }
    let parts: Option<Vec<(u64, String)>> = body.get("parts").and_then(Value::as_array).and_then(|parts| {
        parts.iter().map(|p| Some((p.get("partNumber")?.as_u64()?, p.get("etag")?.as_str()?.to_owned()))).collect()
    });
    let Some(parts) = parts else {
        return Response::bad_request("`parts` (a list of {partNumber, etag}) is required");
    };
    match lock(&state.lfs).complete(id, oid, &parts) {
        Ok(()) => Response::json(json!({ "success": true })),
        Err(message) => Response::bad_request(&message),
    }
}

pub(crate) fn is_object_upload(request: &Request) -> bool {
    request.method == "PUT" && request.path.starts_with("/lfs-upload/")
}

/// `PUT /lfs-upload/{repo}/{oid}[?partNumber=N]`: streams the body, calling the upload
/// hook once its first bytes are in, and stores it if its hash is right. No token, as
/// for presigned S3 URLs. Errors are I/O errors (the connection is gone).
pub(crate) fn receive_object<R: BufRead>(
    request: &Request,
    body: &mut BodyReader<'_, R>,
    state: &State,
) -> io::Result<Response> {
    let rest = request.path.trim_start_matches('/').trim_start_matches("lfs-upload/");
    let Some((id, oid)) = rest.rsplit_once('/') else {
        return Ok(Response::error(404, "", "no such upload"));
    };
    let part = match request.query_param("partNumber").map(|n| n.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Ok(Response::bad_request("partNumber must be a number")),
    };
    let (expected, total) = match lock(&state.lfs).expected(id, oid, part) {
        Ok(lengths) => lengths,
        Err(message) => return Ok(Response::error(403, "", &message)),
    };
    if let Some(len) = request.headers.get("content-length") {
        if len.trim().parse::<u64>().ok() != Some(expected) {
            return Ok(Response::bad_request(&format!(
                "Content-Length {len} does not match the {expected} bytes announced for this upload"
            )));
        }
    }
    let faults = &state.faults;
    let cut = faults.drop_upload_after_bytes.load(Ordering::SeqCst) as u64;
    let dropping = expected > cut && take(&faults.drop_next_uploads);
    let first = (SAMPLE as u64).min(expected).min(if dropping { cut } else { u64::MAX });
    let mut data = Vec::with_capacity(expected.min(64 * 1024 * 1024) as usize);
    body.by_ref().take(first).read_to_end(&mut data)?;
    if part.unwrap_or(1) == 1 {
        let hook = lock(&state.on_lfs_upload).clone();
        if let Some(hook) = hook {
            let name = lock(&state.lfs).path_for(id, total, &data).unwrap_or_else(|| oid.to_owned());
            hook(name.as_str());
        }
    }
    if dropping {
        body.by_ref().take(cut - data.len() as u64).read_to_end(&mut data)?;
        return Ok(Response::hang_up());
    }
    body.by_ref().take(expected + 1 - data.len() as u64).read_to_end(&mut data)?;
    if data.len() as u64 != expected {
        return Ok(Response::bad_request(&format!(
            "the body has {}{} bytes, {expected} were announced for this upload",
            data.len(),
            if data.len() as u64 > expected { " or more" } else { "" }
        )));
    }
    let mut store = lock(&state.lfs);
    let response = match part {
        None => match store.put_object(id, oid, data) {
            Ok(()) => Response::new(200),
            Err(message) => Response::bad_request(&message),
        },
        Some(n) => match store.put_part(id, oid, n, data) {
            Ok(etag) => Response::new(200).header("ETag", etag),
            Err(message) => Response::bad_request(&message),
        },
    };
    Ok(response)
}

fn commit(request: &Request, state: &State, id: &str, rev: &str) -> Response {
    // The Hub authenticates before it reads the request.
    if let Err(e) = authenticate(request, state) {
        return e;
    }
    if request.query_param("create_pr").is_some_and(|v| v == "1") {
        return Response::bad_request("the hub stub does not support pull requests (create_pr)");
    }
    let parsed = match parse_commit(&request.body) {
        Ok(p) => p,
        Err(message) => return Response::bad_request(&message),
    };
    // The uploaded objects the commit names (the store only grows, so reading it first is safe).
    let store = lock(&state.lfs);
    let uploaded: Vec<Option<Arc<Vec<u8>>>> = parsed
        .ops
        .iter()
        .map(|op| if let Op::LfsFile { oid, .. } = op { store.object(id, oid) } else { None })
        .collect();
    drop(store);
    let mut repos = lock(&state.repos);
    let repo = match writable(request, state, &mut repos, id, "commit") {
        Ok(r) => r,
        Err(e) => return e,
    };
    if !repo.is_branch(rev) {
        return if repo.is_tag(rev) || repo.lookup(rev).is_some() {
            Response::bad_request(&format!("Revision '{rev}' is not a branch: commits can only be made on a branch"))
        } else {
            Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"))
        };
    }
    let Some((head, files)) = repo.lookup(rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    if parsed.parent.as_deref().is_some_and(|p| p != head) {
        return Response::error(412, "", "A commit has happened since. Please refresh and try again.");
    }
    let mut changes = Vec::new();
    let mut paths = Vec::new();
    for (op, uploaded) in parsed.ops.into_iter().zip(uploaded) {
        match op {
            Op::File { path, content } => {
                if stores_in_lfs(&path, content.len() as u64, &content) {
                    return Response::bad_request(&format!(
                        "{path}: the Hub stores this file in LFS (by its name, size or binary content); upload it \
                         through the LFS batch API and commit it as an `lfsFile`"
                    ));
                }
                paths.push(path.clone());
                changes.push(Change::Put(StubFile { path, bytes: Arc::new(content), lfs: false }));
            }
            Op::LfsFile { path, oid, size } => {
                // An object of this repo's history also counts (a copy within the repo).
                let bytes =
                    uploaded.or_else(|| repo.all_files().find(|f| f.lfs && f.sha256() == oid).map(|f| f.bytes.clone()));
                let Some(bytes) = bytes else {
                    return Response::bad_request(&format!("{path}: LFS object {oid} was never uploaded to {id}"));
                };
                if size.is_some_and(|s| s != bytes.len() as u64) {
                    return Response::bad_request(&format!(
                        "{path}: LFS object {oid} has {} bytes, the commit says {}",
                        bytes.len(),
                        size.unwrap_or_default()
                    ));
                }
                paths.push(path.clone());
                changes.push(Change::Put(StubFile { path, bytes, lfs: true }));
            }
            Op::DeletedFile(path) => {
                if !files.iter().any(|f| f.path == path) {
                    return Response::error(
                        404,
                        "EntryNotFound",
                        &format!("A file with this name doesn't exist: {path}"),
                    );
                }
                changes.push(Change::DeleteFile(path));
            }
            Op::DeletedFolder(path) => {
                let prefix = format!("{path}/");
                if !files.iter().any(|f| f.path.starts_with(&prefix)) {
                    return Response::error(
                        404,
                        "EntryNotFound",
                        &format!("A folder with this name doesn't exist: {path}"),
                    );
                }
                changes.push(Change::DeleteFolder(path));
            }
        }
    }
    let n = state.commit_counter.fetch_add(1, Ordering::SeqCst).to_string();
    let oid = commit_id(&[id, rev, head, &parsed.summary, &n]);
    repo.apply(rev, &oid, changes);
    drop(repos);
    lock(&state.commits).push(StubCommit {
        repo: id.to_owned(),
        branch: rev.to_owned(),
        oid: oid.clone(),
        summary: parsed.summary,
        paths,
    });
    if take(&state.faults.fail_next_commits) {
        return Response::hang_up();
    }
    Response::json(json!({
        "success": true,
        "commitOid": oid,
        "commitUrl": format!("{}/{id}/commit/{oid}", state.endpoint()),
        "hookOutput": "",
        "pullRequestUrl": null,
    }))
}

/// A parsed commit request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CommitRequest {
    pub summary: String,
    pub description: String,
    pub parent: Option<String>,
    pub ops: Vec<Op>,
}

/// One operation line of a commit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op {
    File { path: String, content: Vec<u8> },
    LfsFile { path: String, oid: String, size: Option<u64> },
    DeletedFile(String),
    DeletedFolder(String),
}

/// Parses the commit NDJSON: a `header` line first (`summary`, `description`,
/// `parentCommit`), then one line per operation. Errors name the line.
pub(crate) fn parse_commit(body: &[u8]) -> Result<CommitRequest, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the commit body is not UTF-8 NDJSON".to_owned())?;
    let mut header: Option<(String, String, Option<String>)> = None;
    let mut ops = Vec::new();
    let mut added = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let item: Value = serde_json::from_str(line).map_err(|e| format!("line {n} is not JSON: {e}"))?;
        let key = item.get("key").and_then(Value::as_str).ok_or_else(|| format!("line {n} has no string `key`"))?;
        let value =
            item.get("value").filter(|v| v.is_object()).ok_or_else(|| format!("line {n} has no object `value`"))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("line {n} ({key}): `{name}` (a string) is required"))
        };
        if header.is_none() && key != "header" {
            return Err(format!("line {n}: the first line must be the `header`, not {key:?}"));
        }
        let mut add_path = |path: &str| {
            let path = check_path(path).map_err(|e| format!("line {n} ({key}): {e}"))?;
            if !added.insert(path.clone()) {
                return Err(format!("line {n} ({key}): {path} appears twice in the commit"));
            }
            Ok(path)
        };
        match key {
            "header" => {
                if header.is_some() {
                    return Err(format!("line {n}: a second `header`"));
                }
                let summary = field("summary")?;
                if summary.trim().is_empty() {
                    return Err("the header's `summary` (the commit message) is empty".to_owned());
                }
                let description = value.get("description").and_then(Value::as_str).unwrap_or_default();
                let parent = match value.get("parentCommit") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(p)) if is_hex(p, 40) => Some(p.clone()),
                    Some(other) => return Err(format!("line {n}: `parentCommit` {other} is not a 40-hex commit id")),
                };
                header = Some((summary.to_owned(), description.to_owned(), parent));
            }
            "file" => {
                let path = add_path(field("path")?)?;
                let content = field("content")?;
                let content = match value.get("encoding").and_then(Value::as_str).unwrap_or("utf-8") {
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .map_err(|e| format!("line {n} (file {path}): `content` is not base64: {e}"))?,
                    "utf-8" => content.as_bytes().to_vec(),
                    other => return Err(format!("line {n} (file {path}): unknown encoding {other:?}")),
                };
                ops.push(Op::File { path, content });
            }
            "lfsFile" => {
                let path = add_path(field("path")?)?;
                let oid = field("oid")?;
                if !is_hex(oid, 64) {
                    return Err(format!("line {n} (lfsFile {path}): `oid` {oid:?} is not a lowercase sha256"));
                }
                if value.get("algo").is_some_and(|a| a != "sha256") {
                    return Err(format!("line {n} (lfsFile {path}): `algo` must be sha256"));
                }
                let size = match value.get("size") {
                    None | Some(Value::Null) => None,
                    Some(s) => {
                        Some(s.as_u64().ok_or_else(|| format!("line {n} (lfsFile {path}): `size` {s} is not a size"))?)
                    }
                };
                ops.push(Op::LfsFile { path, oid: oid.to_owned(), size });
            }
            "deletedFile" => ops.push(Op::DeletedFile(add_path(field("path")?)?)),
            // The client sends folders with a trailing `/`.
            "deletedFolder" => ops.push(Op::DeletedFolder(add_path(field("path")?.trim_end_matches('/'))?)),
            other => {
                return Err(format!(
                    "line {n}: unknown key {other:?} (expected header, file, lfsFile, deletedFile or deletedFolder)"
                ))
            }
        }
    }
    let (summary, description, parent) =
        header.ok_or_else(|| "the commit body is empty: its first line must be the `header`".to_owned())?;
    Ok(CommitRequest { summary, description, parent, ops })
}

/// A file a preupload request announced as LFS (to name it for the upload hook).
pub(crate) struct Announced {
    repo: String,
    path: String,
    size: u64,
    sample: Vec<u8>,
}

/// An object the batch API has offered to upload, not stored yet.
struct Pending {
    size: u64,
    /// `Some(chunk)` for a multipart upload.
    chunk: Option<u64>,
    /// Part number -> (ETag, bytes).
    parts: BTreeMap<u64, (String, Vec<u8>)>,
}

/// LFS objects per repo: uploaded ones, and the uploads the batch API has offered.
#[derive(Default)]
pub(crate) struct LfsStore {
    objects: BTreeMap<(String, String), Arc<Vec<u8>>>,
    pending: BTreeMap<(String, String), Pending>,
    announced: Vec<Announced>,
}

fn key(repo: &str, oid: &str) -> (String, String) {
    (repo.to_owned(), oid.to_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

impl LfsStore {
    pub fn object(&self, repo: &str, oid: &str) -> Option<Arc<Vec<u8>>> {
        self.objects.get(&key(repo, oid)).cloned()
    }

    fn remember(&mut self, announced: Vec<Announced>) {
        self.announced.extend(announced);
        let excess = self.announced.len().saturating_sub(MAX_ANNOUNCED);
        self.announced.drain(..excess);
    }

    /// The path of the latest announced file of `repo` with this size whose sample
    /// agrees with the body's first bytes.
    fn path_for(&self, repo: &str, size: u64, start: &[u8]) -> Option<String> {
        self.announced
            .iter()
            .rev()
            .find(|a| {
                let n = a.sample.len().min(start.len());
                a.repo == repo && a.size == size && a.sample[..n] == start[..n]
            })
            .map(|a| a.path.clone())
    }

    /// Offers an upload. Parts already received stay if the offer is the same, so a
    /// client may resume a multipart upload after a cut.
    pub fn announce(&mut self, repo: &str, oid: &str, size: u64, chunk: Option<u64>) {
        let same = self.pending.get(&key(repo, oid)).is_some_and(|p| p.size == size && p.chunk == chunk);
        if !same {
            self.pending.insert(key(repo, oid), Pending { size, chunk, parts: BTreeMap::new() });
        }
    }

    /// The length of the body to expect for the object (`part: None`) or one of its
    /// parts, and the object's size.
    pub fn expected(&self, repo: &str, oid: &str, part: Option<u64>) -> Result<(u64, u64), String> {
        let p = self
            .pending
            .get(&key(repo, oid))
            .ok_or_else(|| format!("no upload of {oid} to {repo} was offered: a batch request comes first"))?;
        match (part, p.chunk) {
            (None, None) => Ok((p.size, p.size)),
            (None, Some(_)) => Err(format!("{oid} was offered as a multipart upload: PUT its parts (?partNumber=N)")),
            (Some(_), None) => Err(format!("{oid} was offered as a single upload, not in parts")),
            (Some(n), Some(chunk)) => {
                let count = p.size.div_ceil(chunk);
                if n == 0 || n > count {
                    return Err(format!("part {n} out of range: {oid} has parts 1 to {count}"));
                }
                Ok((chunk.min(p.size - (n - 1) * chunk), p.size))
            }
        }
    }

    /// Stores a whole object if its sha256 is its oid.
    pub fn put_object(&mut self, repo: &str, oid: &str, body: Vec<u8>) -> Result<(), String> {
        let (expected, _) = self.expected(repo, oid, None)?;
        if body.len() as u64 != expected {
            return Err(format!("the body has {} bytes, {expected} were announced for {oid}", body.len()));
        }
        let actual = sha256_hex(&body);
        if actual != oid {
            return Err(format!("the body's sha256 is {actual}, not the object id {oid}: refused"));
        }
        self.pending.remove(&key(repo, oid));
        self.objects.insert(key(repo, oid), Arc::new(body));
        Ok(())
    }

    /// Keeps one part of a multipart upload; returns its ETag.
    pub fn put_part(&mut self, repo: &str, oid: &str, n: u64, body: Vec<u8>) -> Result<String, String> {
        let (expected, _) = self.expected(repo, oid, Some(n))?;
        if body.len() as u64 != expected {
            return Err(format!("part {n} has {} bytes, {expected} were expected", body.len()));
        }
        let etag = format!("\"{}\"", git_sha1(&body));
        if let Some(p) = self.pending.get_mut(&key(repo, oid)) {
            p.parts.insert(n, (etag.clone(), body));
        }
        Ok(etag)
    }

    /// Completes a multipart upload: every part, in order, with the ETags the part
    /// uploads returned; stores the object if its sha256 is its oid.
    pub fn complete(&mut self, repo: &str, oid: &str, parts: &[(u64, String)]) -> Result<(), String> {
        let p = self
            .pending
            .get(&key(repo, oid))
            .ok_or_else(|| format!("no multipart upload of {oid} to {repo} is under way"))?;
        let Some(chunk) = p.chunk else {
            return Err(format!("{oid} was offered as a single upload, not in parts"));
        };
        let count = p.size.div_ceil(chunk);
        if parts.len() as u64 != count || parts.iter().zip(1..).any(|((n, _), want)| *n != want) {
            return Err(format!("the completion must list parts 1 to {count} in order"));
        }
        let mut body = Vec::with_capacity(p.size.min(64 * 1024 * 1024) as usize);
        for (n, etag) in parts {
            match p.parts.get(n) {
                Some((stored, bytes)) if stored.trim_matches('"') == etag.trim_matches('"') => {
                    body.extend_from_slice(bytes)
                }
                Some(_) => return Err(format!("part {n}: the ETag {etag} is not the one its upload returned")),
                None => return Err(format!("part {n} of {oid} was never uploaded")),
            }
        }
        let actual = sha256_hex(&body);
        if actual != oid {
            return Err(format!("the parts' sha256 is {actual}, not the object id {oid}: refused"));
        }
        self.pending.remove(&key(repo, oid));
        self.objects.insert(key(repo, oid), Arc::new(body));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn commit_ndjson_as_the_python_client_sends_it() {
        let oid = sha256_hex(b"weights");
        let body = format!(
            "{}\n{}\n{}\n{}\n{}\n",
            json!({"key": "header", "value": {"summary": "Upload", "description": "", "parentCommit": "0123456789abcdef0123456789abcdef01234567"}}),
            json!({"key": "file", "value": {"content": b64(b"{\"a\": 1}"), "path": "1_Pooling/config.json", "encoding": "base64"}}),
            json!({"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": oid, "size": 7}}),
            json!({"key": "deletedFile", "value": {"path": "old.txt"}}),
            json!({"key": "deletedFolder", "value": {"path": "onnx/"}}),
        );
        let parsed = parse_commit(body.as_bytes()).unwrap();
        assert_eq!(parsed.summary, "Upload");
        assert_eq!(parsed.parent.as_deref(), Some("0123456789abcdef0123456789abcdef01234567"));
        assert_eq!(
            parsed.ops,
            vec![
                Op::File { path: "1_Pooling/config.json".into(), content: b"{\"a\": 1}".to_vec() },
                Op::LfsFile { path: "model.safetensors".into(), oid, size: Some(7) },
                Op::DeletedFile("old.txt".into()),
                Op::DeletedFolder("onnx".into()),
            ]
        );
        // CRLF lines and no trailing newline parse the same.
        let crlf = body.trim_end().replace('\n', "\r\n");
        assert_eq!(parse_commit(crlf.as_bytes()).unwrap(), parsed);
    }

    #[test]
    fn malformed_commits_are_refused_with_the_line() {
        let header = json!({"key": "header", "value": {"summary": "s"}}).to_string();
        let cases = [
            (String::new(), "empty"),
            (
                json!({"key": "file", "value": {"path": "a", "content": ""}}).to_string(),
                "first line must be the `header`",
            ),
            (format!("{header}\nnot json"), "line 2 is not JSON"),
            (format!("{header}\n{header}"), "a second `header`"),
            (json!({"key": "header", "value": {"summary": " "}}).to_string(), "summary"),
            (json!({"key": "header", "value": {"summary": "s", "parentCommit": "main"}}).to_string(), "parentCommit"),
            (format!("{header}\n{}", json!({"key": "file", "value": {"path": "../x", "content": ""}})), "Invalid path"),
            (
                format!(
                    "{header}\n{}",
                    json!({"key": "file", "value": {"path": "a", "content": "!!", "encoding": "base64"}})
                ),
                "not base64",
            ),
            (
                format!("{header}\n{}", json!({"key": "lfsFile", "value": {"path": "a", "oid": "abc"}})),
                "not a lowercase sha256",
            ),
            (format!("{header}\n{}", json!({"key": "copyFile", "value": {"path": "a"}})), "unknown key"),
            (format!("{header}\n{}", json!({"key": "file", "value": "a"})), "no object `value`"),
            (
                format!(
                    "{header}\n{}\n{}",
                    json!({"key": "file", "value": {"path": "a", "content": ""}}),
                    json!({"key": "deletedFile", "value": {"path": "a"}})
                ),
                "appears twice",
            ),
        ];
        for (body, wanted) in cases {
            let err = parse_commit(body.as_bytes()).unwrap_err();
            assert!(err.contains(wanted), "{body:?}: {err}");
        }
        assert!(parse_commit(b"\xff\xfe").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn an_object_whose_sha256_is_not_its_oid_is_refused() {
        let mut store = LfsStore::default();
        let oid = sha256_hex(b"the real bytes");
        store.announce("org/r", &oid, 14, None);
        let err = store.put_object("org/r", &oid, b"other bytes!!!".to_vec()).unwrap_err();
        assert!(err.contains("not the object id"), "{err}");
        assert!(store.object("org/r", &oid).is_none());
        // The upload is still offered: the right bytes are then stored.
        store.put_object("org/r", &oid, b"the real bytes".to_vec()).unwrap();
        assert_eq!(store.object("org/r", &oid).unwrap().as_slice(), b"the real bytes");
        // Not offered: refused.
        assert!(store.put_object("org/other", &oid, b"the real bytes".to_vec()).is_err());
    }

    #[test]
    fn multipart_parts_are_checked_and_assembled() {
        let data: Vec<u8> = (0..10u8).collect();
        let oid = sha256_hex(&data);
        let mut store = LfsStore::default();
        store.announce("org/r", &oid, 10, Some(4));
        assert_eq!(store.expected("org/r", &oid, Some(3)), Ok((2, 10)));
        assert!(store.expected("org/r", &oid, Some(4)).is_err());
        assert!(store.expected("org/r", &oid, None).is_err());
        let e1 = store.put_part("org/r", &oid, 1, data[..4].to_vec()).unwrap();
        let e2 = store.put_part("org/r", &oid, 2, data[4..8].to_vec()).unwrap();
        assert!(store
            .complete("org/r", &oid, &[(1, e1.clone()), (2, e2.clone())])
            .unwrap_err()
            .contains("parts 1 to 3"));
        assert!(store.complete("org/r", &oid, &[(1, e1.clone()), (2, e2.clone()), (3, "\"x\"".into())]).is_err());
        // A repeated offer (a retry) keeps the parts received.
        store.announce("org/r", &oid, 10, Some(4));
        let e3 = store.put_part("org/r", &oid, 3, data[8..].to_vec()).unwrap();
        assert!(store.complete("org/r", &oid, &[(1, e2.clone()), (2, e1.clone()), (3, e3.clone())]).is_err());
        store.complete("org/r", &oid, &[(1, e1), (2, e2), (3, e3)]).unwrap();
        assert_eq!(store.object("org/r", &oid).unwrap().as_slice(), data.as_slice());

        // Parts whose bytes do not hash to the oid are refused.
        let oid = sha256_hex(b"abcdefgh");
        store.announce("org/r", &oid, 8, Some(4));
        let e1 = store.put_part("org/r", &oid, 1, b"abcd".to_vec()).unwrap();
        let e2 = store.put_part("org/r", &oid, 2, b"XXXX".to_vec()).unwrap();
        assert!(store.complete("org/r", &oid, &[(1, e1), (2, e2)]).unwrap_err().contains("not the object id"));
        assert!(store.object("org/r", &oid).is_none());
    }

    #[test]
    fn preupload_rules_and_hook_names() {
        assert!(stores_in_lfs("model.safetensors", 10, b"{}"));
        assert!(stores_in_lfs("weights.dat", 3, b"\x00\x01\x02"));
        assert!(stores_in_lfs("weights.dat", 2, b"\xff\xfe"));
        assert!(!stores_in_lfs("vocab.txt", 3, "é".as_bytes()));
        // A multibyte character cut by the sample's end is still text.
        assert!(!stores_in_lfs("vocab.txt", 1000, &"é".as_bytes()[..1]));
        assert!(!stores_in_lfs("model.safetensors", 0, b""));
        let mut store = LfsStore::default();
        store.remember(vec![
            Announced { repo: "org/r".into(), path: "a.bin".into(), size: 3, sample: b"abc".to_vec() },
            Announced { repo: "org/r".into(), path: "b.bin".into(), size: 3, sample: b"xyz".to_vec() },
        ]);
        assert_eq!(store.path_for("org/r", 3, b"xyz").as_deref(), Some("b.bin"));
        assert_eq!(store.path_for("org/r", 3, b"a").as_deref(), Some("a.bin"));
        assert_eq!(store.path_for("org/r", 4, b"abc"), None);
        assert_eq!(store.path_for("org/s", 3, b"abc"), None);
    }

    #[test]
    fn names_and_refs_follow_the_hub_rules() {
        assert!(check_name("all-MiniLM-L6-v2").is_ok());
        let too_long = "x".repeat(97);
        for bad in ["", "a--b", "a..b", "-a", "a.", "a/b", "a b", too_long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_ref_name("feature/x").is_ok());
        for bad in ["", "a..b", "/a", "a/", "a b", "a:b", "x.lock", "0123456789abcdef0123456789abcdef01234567"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }
}
