//! The Hub's download endpoints: model info, tree, `resolve` (with the LFS redirect to
//! the second host) and the LFS bodies behind it, with the download faults.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::http::{Body, Request, Response};
use crate::{find_repo, lock, read_access, take, State, StubFile, StubRepo};

pub(crate) fn api(request: &Request, state: &State, repos: &BTreeMap<String, StubRepo>, rest: &str) -> Response {
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    if parts.len() < 2 {
        return Response::error(404, "RepoNotFound", "Repository not found");
    }
    let id = format!("{}/{}", parts[0], parts[1]);
    let repo = match find_repo(request, repos, &id) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(denied) = read_access(request, state, repo) {
        return denied;
    }
    let (kind, rev) = match (parts.get(2), parts.get(3)) {
        (None, _) => ("info", "main"),
        (Some(&"revision"), Some(rev)) => ("info", *rev),
        (Some(&"tree"), Some(rev)) => ("tree", rev.split('/').next().unwrap_or("main")),
        _ => return Response::error(404, "EntryNotFound", "no such route"),
    };
    let Some((commit, files)) = repo.lookup(rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let blobs = request.query.split('&').any(|q| q == "blobs=true");
    if kind == "tree" {
        let entries: Vec<_> = files
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
    let siblings: Vec<_> = files
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
        "_id": "0", "id": repo.id, "modelId": repo.id, "sha": commit, "private": repo.private,
        "gated": repo.gated_token.is_some(), "disabled": false, "tags": [], "siblings": siblings,
    }))
}

pub(crate) fn resolve(
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
    if let Some(denied) = read_access(request, state, repo) {
        return denied;
    }
    let Some((commit, files)) = repo.lookup(rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let Some(f) = files.iter().find(|f| f.path == file) else {
        return Response::error(404, "EntryNotFound", &format!("{file} does not exist on \"{rev}\""))
            .header("X-Repo-Commit", commit);
    };
    if f.lfs {
        return Response::new(302)
            .header("Location", format!("http://localhost:{}/lfs/{}", state.cdn_port, f.sha256()))
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256()))
            .header("X-Linked-Size", f.bytes.len().to_string())
            .header("ETag", format!("\"{}\"", f.git_sha1()));
    }
    file_response(request, state, f).header("X-Repo-Commit", commit).header("ETag", format!("\"{}\"", f.git_sha1()))
}

pub(crate) fn serve_lfs(request: &Request, state: &State, sha: &str) -> Response {
    let repos = lock(&state.repos);
    let found = repos.values().flat_map(|r| r.all_files()).find(|f| f.lfs && f.sha256() == sha).cloned();
    drop(repos);
    match found {
        Some(f) => file_response(request, state, &f).header("ETag", format!("\"{sha}\"")),
        None => Response::new(404).body(b"NoSuchKey".to_vec()),
    }
}

fn file_response(request: &Request, state: &State, f: &StubFile) -> Response {
    let faults = &state.faults;
    let len = f.bytes.len();
    let corrupt = lock(&faults.corrupt).iter().any(|p| p == &f.path);
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
    let mut response = match range {
        Some((start, _)) if start >= len && len > 0 => {
            return Response::new(416).header("Content-Range", format!("bytes */{len}"))
        }
        Some((start, end)) => {
            Response::new(206).header("Content-Range", format!("bytes {start}-{}/{len}", end.saturating_sub(1)))
        }
        None => Response::new(200),
    };
    let (start, end) = range.map_or((0, len), |(start, end)| (start, end.max(start)));
    response.body = Body::File { bytes: f.bytes.clone(), start, end, corrupt, drop_after };
    response
}
