//! The Hub as seen over HTTP, through the `hf-hub` client.
//!
//! `hf-hub` 1.0 resolves revisions, maps the Hub's error codes, follows the LFS
//! redirect and streams bodies with `Range`. Two things it does not give us are added
//! here: the expected hash of every file (its `BlobLfsInfo` cannot read the tree
//! API's `lfs.oid`, and `info()` never asks for `blobs=true`, so one metadata request
//! is made directly), and a sync API over our own small runtime, so callers stay
//! synchronous. That runtime lives on the download thread `ModelStore::download`
//! starts, never on the caller's, so callers inside an async runtime work too.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use hf_hub::{HFClient, HFError};
use serde::Deserialize;

use crate::error::error_chain;
use crate::HubError;

/// Where the Hub is and how to talk to it, from the environment the Hugging Face
/// ecosystem uses.
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// `HF_TOKEN`, else the huggingface_hub token file. Never printed: `Debug` redacts it.
    token: Option<String>,
    /// Where huggingface_hub keeps the token `hf auth login` writes (named in the
    /// message when a push finds no token).
    token_file: Option<PathBuf>,
    /// `HF_HUB_OFFLINE`: no network request is made at all.
    pub offline: bool,
    /// Attempts per request and per file body before giving up.
    pub max_attempts: u32,
    /// First back-off delay; it doubles with every attempt.
    pub base_delay: Duration,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("offline", &self.offline)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            endpoint: "https://huggingface.co".to_owned(),
            token: None,
            token_file: None,
            offline: false,
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
        }
    }
}

impl HubConfig {
    /// Reads `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` from the process; without
    /// `HF_TOKEN`, the token comes from huggingface_hub's token file (see
    /// [`HubConfig::from_lookup`]).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the same variables through `lookup` (for tests). The token is, as
    /// huggingface_hub finds it: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the
    /// file `HF_TOKEN_PATH`, else `$HF_HOME/token`, else
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/huggingface/token` (what `hf auth login` writes).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| lookup(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut config = HubConfig::default();
        if let Some(endpoint) = set("HF_ENDPOINT") {
            config.endpoint = endpoint.trim_end_matches('/').to_owned();
        }
        config.token_file = token_file(&set);
        config.token = set("HF_TOKEN")
            .or_else(|| set("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| config.token_file.as_deref().and_then(read_token_file));
        // huggingface_hub's truthy spellings.
        config.offline = set("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        config
    }

    /// Sets the endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets offline mode.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Sets how often, and how patiently, failed requests are tried again.
    pub fn with_retries(mut self, max_attempts: u32, base_delay: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.base_delay = base_delay;
        self
    }

    /// Sets the token explicitly.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Whether a token is configured (the token itself is never exposed).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token, for the requests of this crate only.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The token file huggingface_hub would read, whether or not it exists.
    pub(crate) fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }
}

/// huggingface_hub's `HF_TOKEN_PATH`: the variable, else `$HF_HOME/token`, where
/// `HF_HOME` defaults to `${XDG_CACHE_HOME:-$HOME/.cache}/huggingface`.
fn token_file(set: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = set("HF_TOKEN_PATH") {
        return Some(PathBuf::from(path));
    }
    let hf_home = set("HF_HOME").map(PathBuf::from).or_else(|| {
        let cache =
            set("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache")));
        cache.map(|c| c.join("huggingface"))
    })?;
    Some(hf_home.join("token"))
}

/// The token in a token file, cleaned as huggingface_hub cleans it (line breaks and
/// surrounding blanks dropped). A missing file is no token; one that cannot be read
/// (a FIFO, too large, not UTF-8) is no token either, with a warning naming it, so
/// a stray file never blocks a download.
fn read_token_file(path: &Path) -> Option<String> {
    match dartboard_fs::read_to_string_capped(path, dartboard_fs::limits::SETTINGS) {
        Ok(text) => Some(text.replace(['\r', '\n'], "").trim().to_owned()).filter(|t| !t.is_empty()),
        // Absent, as huggingface_hub takes it: no file, or a path through a file
        // (HF_HOME pointing at a file is another command's error to report).
        Err(dartboard_fs::FsError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
        {
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring the token file: {}", error_chain(&e));
            None
        }
    }
}

/// One file of a revision, with what the Hub says its content hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repo.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 for LFS files, git blob sha1 for the rest: also the blob's name in the cache.
    pub etag: String,
}

impl RemoteFile {
    /// Whether `etag` is a sha256 (LFS) rather than a git blob sha1.
    pub fn is_lfs(&self) -> bool {
        self.etag.len() == 64
    }
}

/// A connection to one Hub endpoint.
pub(crate) struct Remote {
    runtime: tokio::runtime::Runtime,
    client: HFClient,
    http: reqwest::Client,
    config: HubConfig,
}

/// A revision's metadata with hashes (`?blobs=true`): what a download expects and
/// what a push reads back.
#[derive(Deserialize)]
pub(crate) struct BlobsInfo {
    pub(crate) sha: Option<String>,
    #[serde(default)]
    pub(crate) siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
pub(crate) struct Sibling {
    pub(crate) rfilename: String,
    pub(crate) size: Option<u64>,
    #[serde(rename = "blobId")]
    pub(crate) blob_id: Option<String>,
    pub(crate) lfs: Option<SiblingLfs>,
}

#[derive(Deserialize)]
pub(crate) struct SiblingLfs {
    pub(crate) sha256: String,
    pub(crate) size: Option<u64>,
}

impl Remote {
    pub(crate) fn new(config: &HubConfig) -> Result<Self, HubError> {
        if config.offline {
            return Err(HubError::Offline);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| HubError::Io {
            action: "starting the download runtime",
            path: ".".into(),
            source: e,
        })?;
        let mut builder = HFClient::builder()
            .endpoint(config.endpoint.clone())
            .user_agent(concat!("dartboard-rs/", env!("CARGO_PKG_VERSION")))
            .retry_max_attempts(config.max_attempts as usize)
            .retry_base_delay(config.base_delay)
            .cache_enabled(false);
        if let Some(token) = &config.token {
            builder = builder.token(token.clone());
        }
        let client = builder.build().map_err(|e| map_error(e, config, "", None))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("dartboard-rs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| HubError::Unreachable { endpoint: config.endpoint.clone(), reason: e.to_string() })?;
        Ok(Remote { runtime, client, http, config: config.clone() })
    }

    pub(crate) fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The commit a revision points to, and every file of that commit with its hash.
    pub(crate) fn snapshot(&self, repo_id: &str, revision: &str) -> Result<(String, Vec<RemoteFile>), HubError> {
        let (owner, name) = repo_id.split_once('/').expect("repo ids are validated as org/name");
        let repo = self.client.model(owner, name);
        let info = self
            .runtime
            .block_on(repo.info().revision(revision.to_owned()).send())
            .map_err(|e| map_error(e, &self.config, repo_id, Some(revision)))?;
        let commit =
            info.sha.filter(|s| crate::store::is_commit_hash(s)).ok_or_else(|| self.not_a_hub("no commit sha"))?;
        let files = self.runtime.block_on(self.blobs(repo_id, &commit))?;
        Ok((commit, files))
    }

    async fn blobs(&self, repo_id: &str, commit: &str) -> Result<Vec<RemoteFile>, HubError> {
        let url = format!("{}/api/models/{repo_id}/revision/{commit}?blobs=true", self.config.endpoint);
        let mut last = None;
        for attempt in 0..self.config.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            let mut request = self.http.get(&url);
            if let Some(token) = &self.config.token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let info: BlobsInfo =
                        response.json().await.map_err(|_| self.not_a_hub("metadata is not Hub JSON"))?;
                    if info.sha.as_deref() != Some(commit) {
                        return Err(self.not_a_hub("metadata names another commit"));
                    }
                    return info.siblings.into_iter().map(|s| self.remote_file(s)).collect();
                }
                Ok(response) if response.status().is_server_error() => {
                    last = Some(format!("HTTP {}", response.status()))
                }
                Ok(response) => {
                    let code = response.headers().get("x-error-code").and_then(|v| v.to_str().ok());
                    if let Some(mapped) = code.and_then(|c| from_error_code(c, &self.config, repo_id, Some(commit))) {
                        return Err(mapped);
                    }
                    return Err(HubError::Remote {
                        repo_id: repo_id.to_owned(),
                        message: format!("listing files answered HTTP {}", response.status()),
                    });
                }
                Err(e) => last = Some(e.to_string()),
            }
        }
        Err(HubError::ServerError {
            endpoint: self.config.endpoint.clone(),
            attempts: self.config.max_attempts,
            last: last.unwrap_or_default(),
        })
    }

    fn remote_file(&self, s: Sibling) -> Result<RemoteFile, HubError> {
        let (etag, size) = match s.lfs {
            Some(lfs) => (lfs.sha256, lfs.size.or(s.size)),
            None => (s.blob_id.unwrap_or_default(), s.size),
        };
        let valid = (etag.len() == 40 || etag.len() == 64) && etag.bytes().all(|b| b.is_ascii_hexdigit());
        match (valid, size) {
            (true, Some(size)) => Ok(RemoteFile { path: s.rfilename, size, etag: etag.to_ascii_lowercase() }),
            _ => Err(self.not_a_hub(&format!("no size or hash for {}", s.rfilename))),
        }
    }

    /// Streams `range` of a file at `commit` into `sink`. `Ok(false)` means the
    /// server ignored the range and would send the whole file: nothing was written,
    /// and the caller should start over from byte 0.
    pub(crate) fn stream(
        &self,
        repo_id: &str,
        commit: &str,
        path: &str,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<bool, StreamError> {
        let (owner, name) = repo_id.split_once('/').expect("repo ids are validated as org/name");
        let repo = self.client.model(owner, name);
        self.runtime.block_on(async {
            let request = repo.download_file_stream().filename(path.to_owned()).revision(commit.to_owned());
            let ranged = range.start > 0;
            let request = request.maybe_range(ranged.then(|| range.clone()));
            // hf-hub has already retried sending; a failure here is final.
            let (length, mut body) = request
                .send()
                .await
                .map_err(|e| StreamError::Hub(map_error(e, &self.config, repo_id, Some(commit)), false))?;
            if ranged && length.is_some_and(|l| l > range.end - range.start) {
                return Ok(false);
            }
            while let Some(chunk) = body.next().await {
                // A cut connection: worth resuming from where it stopped.
                let chunk =
                    chunk.map_err(|e| StreamError::Hub(map_error(e, &self.config, repo_id, Some(commit)), true))?;
                sink(&chunk).map_err(StreamError::Write)?;
            }
            Ok(true)
        })
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.config.base_delay * 2u32.saturating_pow(attempt.saturating_sub(1).min(6))
    }

    fn not_a_hub(&self, what: &str) -> HubError {
        HubError::NotAHub { endpoint: self.config.endpoint.clone(), detail: what.to_owned() }
    }
}

/// Why a body stream stopped.
pub(crate) enum StreamError {
    /// From the network or the Hub; the flag says whether trying again may help.
    Hub(HubError, bool),
    /// Writing to disk failed.
    Write(std::io::Error),
}

/// The `X-Error-Code` of an HTTP error, whatever variant `hf-hub` chose for it.
fn error_code(e: &HFError) -> Option<&str> {
    match e {
        HFError::Http { context }
        | HFError::AuthRequired { context }
        | HFError::Forbidden { context }
        | HFError::Conflict { context }
        | HFError::RateLimited { context, .. } => context.error_code.as_deref(),
        HFError::RepoNotFound { context, .. }
        | HFError::RevisionNotFound { context, .. }
        | HFError::EntryNotFound { context, .. } => context.as_ref().and_then(|c| c.error_code.as_deref()),
        _ => None,
    }
}

/// The Hub's own `X-Error-Code`, which says what was not found (or refused) better
/// than the status does: with a token, a mistyped repo is a 404 on the revision
/// endpoint, which `hf-hub` alone reports as a missing revision. These are the codes
/// huggingface_hub's `hf_raise_for_status` maps, and it too checks them first.
fn from_error_code(code: &str, config: &HubConfig, repo_id: &str, revision: Option<&str>) -> Option<HubError> {
    let repo_id = repo_id.to_owned();
    Some(match code {
        "RepoNotFound" => {
            HubError::RepoNotFound { repo_id, endpoint: config.endpoint.clone(), has_token: config.has_token() }
        }
        "RevisionNotFound" => HubError::RevisionNotFound { repo_id, revision: revision.unwrap_or("main").to_owned() },
        "GatedRepo" => HubError::AccessDenied { repo_id, gated: true, has_token: config.has_token() },
        // The path is in the variant hf-hub chose; without one there is nothing to name.
        _ => return None,
    })
}

/// Turns `hf-hub`'s errors into ours, each with its own message and fix.
fn map_error(e: HFError, config: &HubConfig, repo_id: &str, revision: Option<&str>) -> HubError {
    let endpoint = config.endpoint.clone();
    let code = error_code(&e).map(str::to_owned);
    if let Some(mapped) = code.as_deref().and_then(|c| from_error_code(c, config, repo_id, revision)) {
        return mapped;
    }
    if code.as_deref() == Some("EntryNotFound") {
        if let HFError::EntryNotFound { path, .. } = &e {
            return HubError::EntryNotFound { repo_id: repo_id.to_owned(), path: path.clone() };
        }
    }
    match e {
        HFError::RepoNotFound { .. } => {
            HubError::RepoNotFound { repo_id: repo_id.to_owned(), endpoint, has_token: config.has_token() }
        }
        HFError::RevisionNotFound { revision: r, .. } => HubError::RevisionNotFound {
            repo_id: repo_id.to_owned(),
            revision: revision.map(str::to_owned).unwrap_or(r),
        },
        HFError::EntryNotFound { path, .. } => HubError::EntryNotFound { repo_id: repo_id.to_owned(), path },
        HFError::AuthRequired { .. } | HFError::Forbidden { .. } => {
            HubError::AccessDenied { repo_id: repo_id.to_owned(), gated: false, has_token: config.has_token() }
        }
        HFError::Http { context } if context.status.is_server_error() => {
            HubError::ServerError { endpoint, attempts: config.max_attempts, last: format!("HTTP {}", context.status) }
        }
        HFError::Request { source, .. } if source.is_decode() => {
            HubError::NotAHub { endpoint, detail: format!("unreadable answer: {}", error_chain(&source)) }
        }
        HFError::Request { source, .. } => HubError::Unreachable { endpoint, reason: error_chain(&source) },
        HFError::Json(_) | HFError::MalformedResponse { .. } => HubError::NotAHub { endpoint, detail: e.to_string() },
        HFError::Url(_) => HubError::NotAHub { endpoint, detail: "HF_ENDPOINT is not a valid URL".to_owned() },
        other => HubError::Remote { repo_id: repo_id.to_owned(), message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_redaction() {
        let env = |k: &str| match k {
            "HF_ENDPOINT" => Some("http://127.0.0.1:9/".to_owned()),
            "HF_TOKEN" => Some("hf_secret_value".to_owned()),
            "HF_HUB_OFFLINE" => Some("True".to_owned()),
            _ => None,
        };
        let config = HubConfig::from_lookup(env);
        assert_eq!(config.endpoint, "http://127.0.0.1:9");
        assert!(config.offline && config.has_token());
        assert!(!format!("{config:?}").contains("hf_secret_value"));
        assert!(!HubConfig::from_lookup(|k| (k == "HF_HUB_OFFLINE").then(|| "0".to_owned())).offline);
        assert!(matches!(Remote::new(&config), Err(HubError::Offline)));
    }

    #[test]
    fn token_from_the_environment_else_huggingface_hubs_token_file() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join(".cache/huggingface/token");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "hf_from_file\n").unwrap();
        let home_str = home.path().to_str().unwrap().to_owned();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let from_file = HubConfig::from_lookup(env(vec![("HOME", home_str.clone())]));
        assert_eq!(from_file.token(), Some("hf_from_file"));
        assert_eq!(from_file.token_file(), Some(file.as_path()));
        let from_env = HubConfig::from_lookup(env(vec![("HOME", home_str.clone()), ("HF_TOKEN", "hf_env".into())]));
        assert_eq!(from_env.token(), Some("hf_env"));
        // HF_TOKEN_PATH and HF_HOME move the file; a missing one is no token.
        let elsewhere = home.path().join("elsewhere");
        let moved =
            HubConfig::from_lookup(env(vec![("HOME", home_str.clone()), ("HF_HOME", elsewhere.display().to_string())]));
        assert_eq!((moved.token(), moved.token_file()), (None, Some(elsewhere.join("token").as_path())));
        let path = HubConfig::from_lookup(env(vec![("HF_TOKEN_PATH", file.display().to_string())]));
        assert_eq!(path.token(), Some("hf_from_file"));
        // HF_HOME naming a file: the token path runs through it, which is no token.
        let through_a_file = HubConfig::from_lookup(env(vec![("HF_HOME", file.display().to_string())]));
        assert_eq!(through_a_file.token(), None);
        // A FIFO there is not read (it would block): no token, no hang.
        let fifo = home.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(HubConfig::from_lookup(env(vec![("HF_TOKEN_PATH", fifo.display().to_string())])).token(), None);
        assert!(!format!("{from_file:?}").contains("hf_from_file"));
    }
}
