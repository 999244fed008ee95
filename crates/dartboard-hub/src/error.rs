use std::path::PathBuf;

/// Everything that can go wrong finding or storing model files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The reference is neither a directory nor a valid Hub name.
    #[error("invalid model reference {reference:?}: {reason}")]
    InvalidReference {
        /// What the user gave.
        reference: String,
        /// Why it was rejected, and what is accepted.
        reason: String,
    },
    /// A path-like reference that does not exist.
    #[error("model directory {} does not exist: check the path, or give a Hub name such as all-MiniLM-L6-v2", path.display())]
    NoSuchDirectory {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// The model directory lacks files a sentence-transformers model needs.
    #[error("{} is not a complete model: missing {}; a model directory needs config.json, tokenizer.json and model.safetensors (or pytorch_model.bin)", dir.display(), missing.join(", "))]
    MissingFiles {
        /// The directory that was checked.
        dir: PathBuf,
        /// The files that are not there.
        missing: Vec<String>,
    },
    /// The model is not in the cache and may not be downloaded (offline).
    #[error("model {repo_id} (revision {revision}) is not in the cache at {}{}: run `dartboard prefetch {repo_id}` (or `cargo xtask prefetch`) where the Hub is reachable and copy that cache here, import a model directory with `dartboard cache import DIR --as {repo_id}`, or pass a local model directory", root.display(), if *offline { " and HF_HUB_OFFLINE is set" } else { "" })]
    NotCached {
        /// The Hub repo id.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The cache root that was searched.
        root: PathBuf,
        /// Whether offline mode stopped a download.
        offline: bool,
    },
    /// A download was needed while offline mode is on.
    #[error("HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it, or use models already in the cache")]
    Offline,
    /// The Hub does not know the repo (or hides it from this token).
    #[error("model repository {repo_id} was not found on {endpoint}: check the name{}", if *has_token { "; if it is private, check that HF_TOKEN has access to it" } else { "; if it is private or gated, set HF_TOKEN" })]
    RepoNotFound {
        /// The repo asked for.
        repo_id: String,
        /// The Hub endpoint.
        endpoint: String,
        /// Whether a token was sent.
        has_token: bool,
    },
    /// The repo exists but not the revision.
    #[error(
        "revision {revision:?} does not exist in {repo_id}: use a branch, tag or commit of that repo (default: main)"
    )]
    RevisionNotFound {
        /// The repo.
        repo_id: String,
        /// The revision asked for.
        revision: String,
    },
    /// The repo exists but not the file.
    #[error("{repo_id} has no file {path:?} at that revision")]
    EntryNotFound {
        /// The repo.
        repo_id: String,
        /// The missing file.
        path: String,
    },
    /// 401/403: a gated or private model.
    #[error("access to {repo_id} was refused{}: {}", if *gated { " (gated model)" } else { "" }, if *has_token { "the token in HF_TOKEN does not grant access; accept the model's terms on the Hub with that account or use another token" } else { "set HF_TOKEN to a Hugging Face token that has access" })]
    AccessDenied {
        /// The repo.
        repo_id: String,
        /// Whether the Hub said the repo is gated.
        gated: bool,
        /// Whether a token was sent.
        has_token: bool,
    },
    /// 5xx (or broken connections) on every attempt.
    #[error("{endpoint} kept failing ({last}) after {attempts} attempts: the Hub may be down; try again later")]
    ServerError {
        /// The Hub endpoint.
        endpoint: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// No connection could be made.
    #[error("cannot reach {endpoint} ({reason}): check the network and HTTPS_PROXY/HTTP_PROXY, or set HF_HUB_OFFLINE=1 to use only cached models")]
    Unreachable {
        /// The Hub endpoint.
        endpoint: String,
        /// What the connection attempt reported.
        reason: String,
    },
    /// The endpoint answers, but not like a Hub.
    #[error("{endpoint} does not answer like a Hugging Face Hub ({detail}): check HF_ENDPOINT")]
    NotAHub {
        /// The endpoint.
        endpoint: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// Any other failure reported by the Hub client.
    #[error("downloading {repo_id} failed: {message}")]
    Remote {
        /// The repo.
        repo_id: String,
        /// What the client reported.
        message: String,
    },
    /// Not enough free space for the download.
    #[error("not enough disk space in {}: the download needs {needed} more bytes but only {available} are free; free some space or point SENTENCE_TRANSFORMERS_HOME at a bigger disk", dir.display())]
    DiskFull {
        /// The cache directory.
        dir: PathBuf,
        /// Bytes still to download.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// A file's content does not match the hash it must have.
    #[error("{} has {algorithm} {actual}, expected {expected}: the file is corrupt or not the one asked for", path.display())]
    HashMismatch {
        /// The file that was checked.
        path: PathBuf,
        /// `sha256` or `git-sha1`.
        algorithm: &'static str,
        /// The hash it must have.
        expected: String,
        /// The hash it has.
        actual: String,
    },
    /// An I/O error on a named path. The OS text is the source only, so a chain
    /// printed with `{:#}` shows it once.
    #[error("{action} {} failed", path.display())]
    Io {
        /// What was being done (`reading`, `creating`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file the cache holds cannot be read safely: missing, not a regular file (a
    /// FIFO, a device such as `/dev/zero`), or larger than its kind allows.
    #[error(transparent)]
    File(#[from] dartboard_fs::FsError),
    /// A file or link in a directory given to `cache import` that cannot be imported.
    #[error("cannot import {}: {reason}", path.display())]
    CannotImport {
        /// The entry.
        path: PathBuf,
        /// What it is and what to do instead.
        reason: String,
    },
    /// `cache rm ORG/NAME@REV` named a revision the cache does not hold.
    #[error("{repo_id} has no cached revision {revision:?}; cached: {}", if cached.is_empty() { "none".to_owned() } else { cached.join(", ") })]
    RevisionNotCached {
        /// The repo.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The commits and refs that are cached.
        cached: Vec<String>,
    },
    /// `push` found no token (neither `HF_TOKEN` nor huggingface_hub's token file).
    #[error("pushing needs a Hugging Face token with write access, and none is set: create one at {endpoint}/settings/tokens and set HF_TOKEN to it, or log in with `hf auth login` (which writes {})", token_file.as_ref().map_or_else(|| "the huggingface_hub token file".to_owned(), |p| p.display().to_string()))]
    NoToken {
        /// The Hub endpoint.
        endpoint: String,
        /// The token file that was looked for.
        token_file: Option<PathBuf>,
    },
    /// `push` while `HF_HUB_OFFLINE` is set.
    #[error(
        "HF_HUB_OFFLINE is set, so nothing can be pushed: unset it for the push (HF_HUB_OFFLINE= dartboard push ...)"
    )]
    OfflinePush,
    /// 401 to a request that carried a token: the Hub does not know it.
    #[error("{endpoint} refused the token (401: {message}): it is unknown, revoked or expired; create a token with write access at {endpoint}/settings/tokens and set HF_TOKEN to it")]
    TokenRejected {
        /// The Hub endpoint.
        endpoint: String,
        /// What the Hub said.
        message: String,
    },
    /// 403 to a write: the token may read but not write there.
    #[error("the token may not write to {repo_id} (403: {message}): a read-only token cannot push; create a token with write access (or a fine-grained one allowed to write to {repo_id}) at {endpoint}/settings/tokens and set HF_TOKEN to it")]
    WriteForbidden {
        /// The repo pushed to.
        repo_id: String,
        /// The Hub endpoint.
        endpoint: String,
        /// What the Hub said.
        message: String,
    },
    /// `push --revision` named a tag or a commit: commits go to branches only.
    #[error("{revision:?} is a {kind} of {repo_id}, not a branch, and commits go to branches: pass --revision with a branch name (a branch that does not exist yet is created from main)")]
    NotABranch {
        /// The repo.
        repo_id: String,
        /// What was given.
        revision: String,
        /// `tag` or `commit`.
        kind: &'static str,
    },
    /// A file of the pushed folder changed between hashing and the commit.
    #[error("{} changed while it was being pushed ({detail}), so nothing was committed: push again once nothing writes to it", path.display())]
    FileChanged {
        /// The file on disk.
        path: PathBuf,
        /// What changed.
        detail: String,
    },
    /// A file or link in a folder to push that cannot be pushed.
    #[error("cannot push {}: {reason}", path.display())]
    CannotPush {
        /// The entry.
        path: PathBuf,
        /// What it is and what to do instead.
        reason: String,
    },
    /// The branch got another commit between reading its head and committing.
    #[error("branch {branch} of {repo_id} moved while pushing (another commit landed first), so nothing was committed: push again")]
    BranchMoved {
        /// The repo.
        repo_id: String,
        /// The branch.
        branch: String,
    },
    /// After the commit, the Hub's tree does not hold a file as it was sent.
    #[error("{repo_id} does not hold {path} as it was pushed ({detail}): the server did not store what was sent; push again, and check HF_ENDPOINT if it persists")]
    PushNotStored {
        /// The repo.
        repo_id: String,
        /// The file in the repo.
        path: String,
        /// The commit read back, and the hashes listed and sent.
        detail: String,
    },
    /// The server accepts large files only through Xet.
    #[error("{endpoint} takes large files only through Xet, which `dartboard push` does not speak: push to an endpoint that accepts Git LFS uploads, or upload with huggingface_hub (`hf upload`, with hf_xet installed)")]
    XetOnly {
        /// The Hub endpoint.
        endpoint: String,
    },
    /// Any other refusal of a push step, with the server's reason.
    #[error("{endpoint} refused to {action} (HTTP {status}: {message}): fix what it names and push again")]
    PushRejected {
        /// The Hub endpoint.
        endpoint: String,
        /// The step (`create {repo}`, `commit to {repo}@{branch}`, ...).
        action: String,
        /// The HTTP status.
        status: u16,
        /// What the server said.
        message: String,
    },
}

impl HubError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |source| HubError::Io { action, path, source }
    }
}

/// An error and its sources, joined as the CLI prints them with `{:#}`: for messages
/// that embed another error's whole story, and for tests of what users see.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
