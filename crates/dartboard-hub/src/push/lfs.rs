//! Large files through the Git LFS batch API, as huggingface_hub sends them on its
//! HTTP (non-Xet) path: one batch request says which objects the server lacks and
//! where to put them; each is sent whole (`basic`) or in parts (`multipart`, when the
//! answer's upload header carries `chunk_size` and one URL per part, then a completion
//! request), then confirmed through the `verify` action when there is one.
//!
//! Bodies are streamed from the file on disk, never held in memory. A cut connection
//! is retried (bounded, with back-off): a whole object is sent again from byte 0 (a
//! presigned PUT cannot resume), a multipart upload sends again only the part that
//! failed. Every attempt reads from a handle checked against the file's fingerprint,
//! so a file that changed is reported as such instead of being sent.
//!
//! The token goes to the endpoint only: upload and completion URLs get the headers the
//! batch answer names, and `verify` gets the token only when it is on the endpoint.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::Either;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Url;
use serde::Deserialize;

use super::client::{Attempt, Client};
use super::source::LocalFile;
use crate::progress::Progress;
use crate::HubError;

/// The media type of the LFS batch API, for both directions.
const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// Objects per batch request, as huggingface_hub chunks them.
const BATCH: usize = 256;

/// Parts of one multipart upload at most: S3's limit, so no real server offers more,
/// and a `chunk_size` of 1 cannot turn one file into millions of requests.
const MAX_PARTS: u64 = 10_000;

/// Bytes read from disk per body chunk.
const CHUNK: u64 = 1 << 20;

#[derive(Deserialize)]
struct BatchAnswer {
    transfer: Option<String>,
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
pub(crate) struct BatchObject {
    oid: String,
    actions: Option<Actions>,
    error: Option<ObjectError>,
}

#[derive(Deserialize)]
struct Actions {
    upload: Option<Action>,
    verify: Option<Action>,
}

#[derive(Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct ObjectError {
    code: Option<i64>,
    message: Option<String>,
}

/// One LFS file to send.
pub(crate) struct Object<'a> {
    pub(crate) file: &'a LocalFile,
    pub(crate) sha256: &'a str,
}

impl Client {
    /// Asks the server which of `objects` it needs, and how to send them. The answer
    /// is in the order of `objects`; an object the server already has gets no upload
    /// action.
    pub(crate) async fn lfs_batch(&self, objects: &[Object<'_>], branch: &str) -> Result<Vec<BatchObject>, HubError> {
        let (org, name) = self.repo_id.split_once('/').expect("push validates ORG/NAME");
        let url = self.url(&[org, &format!("{name}.git"), "info", "lfs", "objects", "batch"]);
        let mut answers: Vec<BatchObject> = Vec::with_capacity(objects.len());
        for chunk in objects.chunks(BATCH) {
            let body = serde_json::json!({
                "operation": "upload",
                // Only what we speak: a server that may only take Xet says so below.
                "transfers": ["basic", "multipart"],
                "objects": chunk.iter().map(|o| serde_json::json!({ "oid": o.sha256, "size": o.file.size })).collect::<Vec<_>>(),
                "hash_algo": "sha256",
                "ref": { "name": branch },
            });
            let response = self
                .send(|| {
                    Ok(self
                        .auth(self.http().post(url.clone()))
                        .header("Accept", LFS_JSON)
                        .header(CONTENT_TYPE, LFS_JSON)
                        .body(body.to_string()))
                })
                .await?;
            if !response.status().is_success() {
                return Err(self.refusal(response, &format!("accept LFS uploads to {}", self.repo_id)).await);
            }
            let answer: BatchAnswer = self.json(response, "the LFS batch answer").await?;
            if answer.transfer.as_deref() == Some("xet") {
                return Err(HubError::XetOnly { endpoint: self.endpoint().to_owned() });
            }
            let mut by_oid: BTreeMap<String, BatchObject> =
                answer.objects.into_iter().map(|o| (o.oid.to_ascii_lowercase(), o)).collect();
            for object in chunk {
                let Some(answer) = by_oid.remove(object.sha256) else {
                    return Err(
                        self.not_a_hub(&format!("the LFS batch answer leaves out {}", object.file.path_in_repo))
                    );
                };
                if let Some(error) = &answer.error {
                    return Err(HubError::PushRejected {
                        endpoint: self.endpoint().to_owned(),
                        action: format!("take {} (LFS object {})", object.file.path_in_repo, object.sha256),
                        status: error.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(0),
                        message: error.message.clone().unwrap_or_else(|| "no reason given".to_owned()),
                    });
                }
                answers.push(answer);
            }
        }
        Ok(answers)
    }

    /// Sends one object as the batch answer says. `Ok(false)`: the server already had
    /// it and nothing was sent.
    pub(crate) async fn lfs_upload(
        &self,
        object: &Object<'_>,
        answer: &BatchObject,
        progress: &dyn Progress,
    ) -> Result<bool, HubError> {
        let path = object.file.path_in_repo.as_str();
        let Some(upload) = answer.actions.as_ref().and_then(|a| a.upload.as_ref()) else {
            progress.file_finished(path, true);
            return Ok(false);
        };
        progress.file_started(path, object.file.size, 0);
        match upload.header.get("chunk_size") {
            Some(chunk_size) => {
                let chunk_size = match chunk_size {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                }
                .filter(|&c| c > 0)
                .ok_or_else(|| self.not_a_hub("a multipart upload whose chunk_size is not a positive integer"))?;
                self.multipart(object, upload, chunk_size, progress).await?;
            }
            None => self.basic(object, upload, progress).await?,
        }
        if let Some(verify) = answer.actions.as_ref().and_then(|a| a.verify.as_ref()) {
            self.verify(object, verify).await?;
        }
        progress.file_finished(path, false);
        Ok(true)
    }

    /// The whole object in one PUT, with the headers the batch answer gave.
    async fn basic(&self, object: &Object<'_>, upload: &Action, progress: &dyn Progress) -> Result<(), HubError> {
        let url = self.href(&upload.href)?;
        let what = format!("{} (LFS object {})", object.file.path_in_repo, object.sha256);
        self.put(object.file, &url, (0, object.file.size), &upload.header, &what, progress).await?;
        Ok(())
    }

    /// The object in parts of `chunk_size` bytes, one URL each, in part-number order;
    /// a failed part is sent again alone. Then the completion request lists each part's
    /// ETag.
    async fn multipart(
        &self,
        object: &Object<'_>,
        upload: &Action,
        chunk_size: u64,
        progress: &dyn Progress,
    ) -> Result<(), HubError> {
        let file = object.file;
        let expected = file.size.div_ceil(chunk_size);
        let mut parts: Vec<(u64, &str)> = upload
            .header
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v.as_str()?)))
            .filter(|(n, _)| *n > 0)
            .collect();
        parts.sort_by_key(|(n, _)| *n);
        let numbered = parts.iter().enumerate().all(|(i, (n, _))| *n == i as u64 + 1);
        if expected > MAX_PARTS || parts.len() as u64 != expected || !numbered {
            return Err(self.not_a_hub(&format!(
                "a multipart upload of {} with {} part URLs where {expected} parts of {chunk_size} bytes were expected \
                 (at most {MAX_PARTS})",
                file.path_in_repo,
                parts.len()
            )));
        }
        let mut etags = Vec::with_capacity(parts.len());
        for (number, href) in parts {
            let url = self.href(href)?;
            let offset = (number - 1) * chunk_size;
            let range = (offset, chunk_size.min(file.size - offset));
            let what = format!("part {number} of {} (LFS object {})", file.path_in_repo, object.sha256);
            // Presigned part URLs take no headers of ours (nor the token).
            let response = self.put(file, &url, range, &BTreeMap::new(), &what, progress).await?;
            let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty());
            let Some(etag) = etag else {
                return Err(
                    self.not_a_hub(&format!("part {number} of {} came back without an ETag", file.path_in_repo))
                );
            };
            etags.push(serde_json::json!({ "partNumber": number, "etag": etag }));
        }
        let completion = serde_json::json!({ "oid": object.sha256, "parts": etags });
        let url = self.href(&upload.href)?;
        // As huggingface_hub: the completion URL is signed; it carries no token.
        let response = self
            .send(|| {
                Ok(self
                    .http()
                    .post(url.clone())
                    .header("Accept", LFS_JSON)
                    .header(CONTENT_TYPE, LFS_JSON)
                    .body(completion.to_string()))
            })
            .await?;
        if !response.status().is_success() {
            file.check_unchanged()?;
            return Err(self.refusal(response, &format!("complete the upload of {}", file.path_in_repo)).await);
        }
        Ok(())
    }

    /// PUTs `len` bytes of `file` from `offset` (`range`) to `url` until it is taken,
    /// at most `max_attempts` times; a failed attempt starts the range again (a
    /// presigned PUT cannot resume). Each attempt streams from a handle opened and
    /// checked against the fingerprint, so a file replaced since it was hashed is
    /// reported, never sent. No token: `url` is the server's upload address.
    async fn put(
        &self,
        file: &LocalFile,
        url: &Url,
        (offset, len): (u64, u64),
        headers: &BTreeMap<String, serde_json::Value>,
        what: &str,
        progress: &dyn Progress,
    ) -> Result<reqwest::Response, HubError> {
        let mut last = String::new();
        for attempt in 0..self.config.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
                // The bar restarts at what the server has confirmed.
                progress.file_started(&file.path_in_repo, file.size, offset);
            }
            let sent = Arc::new(AtomicU64::new(0));
            let body = file_body(file.open_unchanged()?, &file.disk, offset, len, sent.clone())?;
            let request = self.with_headers(self.http().put(url.clone()), headers)?;
            let request = request.header(CONTENT_LENGTH, len).body(body);
            match self.watched(request, &sent, progress, &file.path_in_repo).await {
                Attempt::Answer(r) if r.status().is_success() => return Ok(r),
                Attempt::Answer(r) => {
                    // A 400 "sha256 mismatch" is most often a file that changed.
                    file.check_unchanged()?;
                    return Err(self.refusal(r, &format!("store {what}")).await);
                }
                Attempt::Retry(why) => {
                    tracing::warn!(attempt = attempt + 1, "sending {what} failed ({why}); sending it again");
                    last = format!("uploading {what}: {why}");
                }
            }
        }
        file.check_unchanged()?;
        Err(self.gave_up(last))
    }

    /// The `verify` action: the server confirms it holds the object whole. The token
    /// goes along only when the address is on the endpoint and the action did not
    /// bring its own `Authorization` (huggingface_hub sends it there too).
    async fn verify(&self, object: &Object<'_>, verify: &Action) -> Result<(), HubError> {
        let url = self.href(&verify.href)?;
        let own_auth = verify.header.keys().any(|k| k.eq_ignore_ascii_case("authorization"));
        let with_token = self.on_endpoint(&url) && !own_auth;
        let body = serde_json::json!({ "oid": object.sha256, "size": object.file.size }).to_string();
        let response = self
            .send(|| {
                let request = self.http().post(url.clone()).header("Accept", LFS_JSON);
                let request = if with_token { self.auth(request) } else { request };
                Ok(self.with_headers(request, &verify.header)?.header(CONTENT_TYPE, LFS_JSON).body(body.clone()))
            })
            .await?;
        if !response.status().is_success() {
            object.file.check_unchanged()?;
            return Err(self.refusal(response, &format!("verify the upload of {}", object.file.path_in_repo)).await);
        }
        Ok(())
    }

    /// Adds the string headers of a batch answer's action; one that is no valid HTTP
    /// header is the server's error, said as such (reqwest would only fail the send).
    fn with_headers(
        &self,
        mut request: reqwest::RequestBuilder,
        headers: &BTreeMap<String, serde_json::Value>,
    ) -> Result<reqwest::RequestBuilder, HubError> {
        for (name, value) in headers {
            let Some(value) = value.as_str() else { continue };
            let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value)) else {
                return Err(self.not_a_hub(&format!("the LFS batch answer asks for an invalid header {name:?}")));
            };
            request = request.header(name, value);
        }
        Ok(request)
    }

    /// Runs an upload `request`, reporting what its body has sent every 100 ms and at
    /// the end. An upload that neither sends a byte nor gets its answer for the idle
    /// timeout is a failed attempt: reqwest's read timeout does not see a server that
    /// stops reading the body.
    async fn watched(
        &self,
        request: reqwest::RequestBuilder,
        sent: &AtomicU64,
        progress: &dyn Progress,
        path: &str,
    ) -> Attempt {
        let idle = self.timeouts.idle;
        let mut reported = 0u64;
        let mut moved_at = Instant::now();
        let mut report = || {
            let now = sent.load(Ordering::Relaxed);
            if now > reported {
                progress.advanced(path, now - reported);
                reported = now;
                moved_at = Instant::now();
            }
            moved_at.elapsed()
        };
        let mut request = std::pin::pin!(self.attempt(request));
        loop {
            let tick = std::pin::pin!(tokio::time::sleep(Duration::from_millis(100)));
            match futures::future::select(request.as_mut(), tick).await {
                Either::Left((out, _)) => {
                    report();
                    return out;
                }
                Either::Right(((), _)) if report() >= idle => {
                    return Attempt::Retry(format!("nothing sent or answered for {} s", idle.as_secs_f64()));
                }
                Either::Right(_) => {}
            }
        }
    }
}

/// `len` bytes of `file` (at `path`) from `offset`, read as they are sent; `sent`
/// counts them for the progress bar. A file shorter than that (it shrank) ends the
/// body with an error, so the request fails rather than sending a short object.
fn file_body(
    mut file: std::fs::File,
    path: &Path,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> Result<reqwest::Body, HubError> {
    file.seek(SeekFrom::Start(offset)).map_err(HubError::io("reading", path))?;
    let stream = futures::stream::unfold((file, len), move |(mut file, left)| {
        let sent = sent.clone();
        async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; left.min(CHUNK) as usize];
            let chunk = match file.read(&mut buf) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than when it was hashed",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    Ok(buf)
                }
                Err(e) => Err(e),
            };
            let left = chunk.as_ref().map_or(0, |b| left - b.len() as u64);
            Some((chunk, (file, left)))
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}
