//! `dartboard push`: a model folder, or a cached model (to mirror it), committed to a
//! Hub repository, the way huggingface_hub's `upload_folder` does it on its HTTP
//! (non-Xet) path.
//!
//! Why not `hf-hub`: its 1.0 upload sends large files only through Xet; when the LFS
//! batch answer does not choose Xet it falls back to putting them inline in the
//! commit, which the Hub refuses for LFS files. Private Hub-compatible endpoints (and
//! the stand-in the tests use) speak Git LFS, so the protocol is written here on
//! `reqwest` (`lfs.rs` has the large files).
//!
//! The steps, each a request the official client makes too:
//! 1. `POST /api/repos/create` (409: it exists; a 403 with a repo that exists is a
//!    token allowed to write to it but not to create repos, as huggingface_hub allows);
//! 2. `GET /api/models/{repo}/refs`: the branch head the commit will name as its
//!    `parentCommit`. A tag or a commit id as `--revision` is refused; a branch that
//!    does not exist is created (`POST .../branch/{name}`), as `hf upload` does;
//! 3. `POST .../preupload/{branch}`: the server says which files are regular (inline
//!    in the commit) and which LFS, and which are unchanged (skipped, as
//!    huggingface_hub skips them);
//! 4. each file is read once to hash it (git blob sha1 or sha256) with a fingerprint
//!    of it taken; LFS files go through the batch API, which skips the objects the
//!    server already has;
//! 5. every file is checked against its fingerprint: one that changed since it was
//!    hashed stops the push before anything is committed;
//! 6. one NDJSON commit (`header`, `file`, `lfsFile` lines) with `parentCommit`, so a
//!    retried commit whose first reply was lost cannot commit twice: the retry gets
//!    412, and then the branch is read back: if it holds what was sent, the first
//!    attempt landed;
//! 7. the commit's tree is read back with hashes (`?blobs=true`), and every file must
//!    be there as it was sent.

mod client;
mod lfs;
mod source;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::Deserialize;

use self::client::{Attempt, Client};
use self::lfs::Object;
use self::source::{Content, LocalFile};
use crate::progress::Progress;
use crate::{HubError, ModelHub, ModelRef};

/// How to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// The branch to commit to (`main` when `None`); created from `main` when missing.
    pub revision: Option<String>,
    /// Create the repository private (when it does not exist yet).
    pub private: bool,
    /// The commit's summary; a default names the source.
    pub commit_message: Option<String>,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `org/name`.
    pub repo_id: String,
    /// The branch committed to.
    pub branch: String,
    /// The branch head after the push: the new commit, or the old head when nothing
    /// had changed.
    pub commit: String,
    /// Where the commit can be seen.
    pub commit_url: String,
    /// Whether a commit was made (`false`: the branch already held these files).
    pub committed: bool,
    /// Whether the repository was created.
    pub created_repo: bool,
    /// Whether the branch was created.
    pub created_branch: bool,
    /// Files of the source (and in the repo after the push).
    pub files: usize,
    /// LFS objects whose bytes were sent.
    pub lfs_uploaded: usize,
    /// LFS objects the server already had.
    pub lfs_present: usize,
}

impl ModelHub {
    /// Pushes `source` (a model folder, or a cached model `ORG/NAME[@REVISION]`) to the
    /// Hub repository `repo_id` (`ORG/NAME`), creating it when missing. Needs a token
    /// with write access (`HF_TOKEN` or huggingface_hub's token file) and
    /// `HF_HUB_OFFLINE` unset; a cached source is read from the cache only, never
    /// downloaded. `progress` gets a bar per LFS file sent.
    pub fn push(
        &self,
        source: &str,
        repo_id: &str,
        options: &PushOptions,
        progress: &dyn Progress,
    ) -> Result<Pushed, HubError> {
        let repo_id = validate_target(repo_id)?;
        let branch = options.revision.clone().unwrap_or_else(|| "main".to_owned());
        // The branch ends up in URLs: hold it to the rules of any revision.
        ModelRef::parse_hub(&format!("{repo_id}@{branch}"))?;
        let config = self.config();
        let Some(token) = config.token() else {
            return Err(HubError::NoToken {
                endpoint: config.endpoint.clone(),
                token_file: config.token_file().map(Into::into),
            });
        };
        if config.offline {
            return Err(HubError::OfflinePush);
        }
        let model = ModelRef::parse(source)?;
        let (files, default_message) = match &model {
            ModelRef::Local(dir) => {
                (self.store().resolve(&model)?, format!("Upload {} with dartboard push", dir_name(dir)))
            }
            ModelRef::Hub { repo_id: from, revision } => {
                let files = self.cached(&model)?.ok_or_else(|| self.not_cached(from, revision))?;
                let commit = files.revision().unwrap_or(revision).to_owned();
                (files, format!("Mirror {from}@{commit} with dartboard push"))
            }
        };
        let listed = source::list(files.dir())?;
        if listed.is_empty() {
            return Err(HubError::CannotPush {
                path: files.dir().to_path_buf(),
                reason: "it holds no files to push".to_owned(),
            });
        }
        tracing::info!(source = %files.dir().display(), repo = %repo_id, %branch, files = listed.len(), "pushing");
        let client = Client::new(config, token, &repo_id)?;
        let push = Push {
            client: &client,
            branch,
            private: options.private,
            message: options.commit_message.clone().unwrap_or(default_message),
            progress,
        };
        // Our own runtime on a thread of our own, as downloads do: a caller inside an
        // async runtime may neither start nor drop one on its thread.
        let span = tracing::Span::current();
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("dartboard-push".to_owned())
                .spawn_scoped(scope, || {
                    span.in_scope(|| {
                        let runtime =
                            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                                HubError::Io { action: "starting the push runtime", path: ".".into(), source: e }
                            })?;
                        runtime.block_on(push.run(&listed))
                    })
                })
                .map_err(HubError::io("starting a push thread for", files.dir()))?;
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// `ORG/NAME`, spelled out: a bare name would silently become
/// `sentence-transformers/NAME`, which is nobody's to push to.
fn validate_target(repo_id: &str) -> Result<String, HubError> {
    let invalid =
        |reason: &str| HubError::InvalidReference { reference: repo_id.to_owned(), reason: reason.to_owned() };
    let trimmed = repo_id.trim();
    if trimmed.contains('@') {
        return Err(invalid("the repository to push to is ORG/NAME; give the branch with --revision"));
    }
    if trimmed.matches('/').count() != 1 {
        return Err(invalid(
            "the repository to push to must be ORG/NAME (your user name or an organization, then the model's name)",
        ));
    }
    ModelRef::parse_hub(trimmed)?;
    Ok(trimmed.to_owned())
}

fn dir_name(dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map_or_else(|| "a model folder".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// One push in progress.
struct Push<'a> {
    client: &'a Client,
    branch: String,
    private: bool,
    message: String,
    progress: &'a dyn Progress,
}

/// A file as the commit will carry it.
struct Prepared<'a> {
    file: &'a LocalFile,
    content: Content,
    /// The server already has it at this path (preupload's `oid`): not sent.
    unchanged: bool,
}

#[derive(Deserialize)]
struct Refs {
    #[serde(default)]
    branches: Vec<GitRef>,
    #[serde(default)]
    tags: Vec<GitRef>,
}

#[derive(Deserialize)]
struct GitRef {
    name: String,
    #[serde(rename = "targetCommit")]
    target_commit: Option<String>,
}

#[derive(Deserialize)]
struct PreuploadAnswer {
    files: Vec<PreuploadFile>,
}

#[derive(Deserialize)]
struct PreuploadFile {
    path: String,
    #[serde(rename = "uploadMode")]
    upload_mode: String,
    #[serde(rename = "shouldIgnore", default)]
    should_ignore: bool,
    oid: Option<String>,
}

#[derive(Deserialize)]
struct CommitAnswer {
    #[serde(rename = "commitOid")]
    commit_oid: String,
    #[serde(rename = "commitUrl")]
    commit_url: Option<String>,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<SiblingLfs>,
}

#[derive(Deserialize)]
struct SiblingLfs {
    sha256: String,
    size: Option<u64>,
}

/// Files per preupload request, as huggingface_hub chunks them.
const PREUPLOAD_BATCH: usize = 256;

impl Push<'_> {
    async fn run(&self, listed: &[LocalFile]) -> Result<Pushed, HubError> {
        let client = self.client;
        let repo_id = client.repo_id.as_str();
        let created_repo = self.create_repo().await?;
        let (parent, created_branch) = self.branch_head().await?;

        let modes = self.preupload(listed).await?;
        let mut prepared = Vec::with_capacity(listed.len());
        for (file, (lfs, ignored, remote_oid)) in listed.iter().zip(modes) {
            if ignored {
                tracing::info!(file = %file.path_in_repo, "skipped: the repo's .gitignore ignores it");
                continue;
            }
            let content = file.hash(lfs)?;
            let unchanged = remote_oid.is_some_and(|oid| oid.eq_ignore_ascii_case(content.oid()));
            prepared.push(Prepared { file, content, unchanged });
        }
        if prepared.is_empty() {
            return Err(HubError::CannotPush {
                path: listed[0].disk.parent().unwrap_or(&listed[0].disk).to_path_buf(),
                reason: format!("the .gitignore of {repo_id} ignores every file of it"),
            });
        }

        // Each distinct object once, even if two paths hold the same bytes.
        let mut seen = BTreeSet::new();
        let objects: Vec<Object> = prepared
            .iter()
            .filter(|p| !p.unchanged)
            .filter_map(|p| match &p.content {
                Content::Lfs { sha256 } if seen.insert(sha256.as_str()) => Some(Object { file: p.file, sha256 }),
                _ => None,
            })
            .collect();
        let (mut lfs_uploaded, mut lfs_present) = (0, 0);
        if !objects.is_empty() {
            let answers = client.lfs_batch(&objects, &self.branch).await?;
            for (object, answer) in objects.iter().zip(&answers) {
                if client.lfs_upload(object, answer, self.progress).await? {
                    lfs_uploaded += 1;
                } else {
                    lfs_present += 1;
                }
            }
        }

        // What was hashed is what is committed: a file written to since is not.
        for p in &prepared {
            p.file.check_unchanged()?;
        }
        let changed: Vec<&Prepared> = prepared.iter().filter(|p| !p.unchanged).collect();
        let (commit, commit_url, committed) = if changed.is_empty() {
            let Some(head) = parent.clone() else {
                return Err(client.not_a_hub("preupload calls every file unchanged on a branch without commits"));
            };
            tracing::info!(repo = repo_id, branch = %self.branch, "nothing changed; no commit made");
            (head.clone(), self.commit_url(&head), false)
        } else {
            let (oid, url) = self.commit(&changed, parent.as_deref()).await?;
            (oid, url, true)
        };

        let info = self.read_back(&commit).await?;
        if info.sha.as_deref() != Some(commit.as_str()) {
            return Err(client.not_a_hub(&format!("the tree of commit {commit} names another commit")));
        }
        if let Some((path, expected, actual)) = mismatch(&prepared, &info) {
            let detail = format!("commit {commit} lists it as {actual}, {expected} was sent");
            return Err(HubError::PushNotStored { repo_id: repo_id.to_owned(), path, detail });
        }
        Ok(Pushed {
            repo_id: repo_id.to_owned(),
            branch: self.branch.clone(),
            commit,
            commit_url,
            committed,
            created_repo,
            created_branch,
            files: prepared.len(),
            lfs_uploaded,
            lfs_present,
        })
    }

    /// Creates the repo; `Ok(false)` when it already exists.
    async fn create_repo(&self) -> Result<bool, HubError> {
        let client = self.client;
        let (org, name) = client.repo_id.split_once('/').expect("validated ORG/NAME");
        // huggingface_hub 1.x+ sends `visibility`, older ones `private`; the Hub takes either.
        let body = serde_json::json!({
            "name": name,
            "organization": org,
            "type": "model",
            "private": self.private,
            "visibility": if self.private { "private" } else { "public" },
        });
        let url = client.url(&["api", "repos", "create"]);
        let response = client.send(|| Ok(client.auth(client.http().post(url.clone())).json(&body))).await?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(repo = %client.repo_id, private = self.private, "created the repository");
            return Ok(true);
        }
        if status == StatusCode::CONFLICT {
            if self.private {
                tracing::warn!(repo = %client.repo_id, "the repository exists; --private only applies when creating it");
            }
            return Ok(false);
        }
        let refused = client.refusal(response, &format!("create {}", client.repo_id)).await;
        // A token may write to a repo without being allowed to create repos there
        // (fine-grained tokens): if the repo exists, go on, as huggingface_hub does.
        if matches!(status, StatusCode::FORBIDDEN | StatusCode::PAYMENT_REQUIRED) {
            let url = client.api(&[]);
            let exists = client.send(|| Ok(client.auth(client.http().get(url.clone())))).await?;
            if exists.status().is_success() {
                return Ok(false);
            }
        }
        Err(refused)
    }

    /// The head of the branch to commit to, creating the branch when missing; `None`
    /// for a repo without commits. A tag or a commit id is refused.
    async fn branch_head(&self) -> Result<(Option<String>, bool), HubError> {
        let client = self.client;
        let refs = self.refs().await?;
        if refs.tags.iter().any(|t| t.name == self.branch) {
            return Err(self.not_a_branch("tag"));
        }
        if let Some(head) = refs.branches.iter().find(|b| b.name == self.branch) {
            return Ok((head.target_commit.clone(), false));
        }
        if crate::store::is_commit_hash(&self.branch) {
            return Err(self.not_a_branch("commit"));
        }
        if self.branch == "main" {
            // A repo without a single commit: the commit creates main.
            return Ok((None, false));
        }
        let url = client.api(&["branch", &self.branch]);
        let response =
            client.send(|| Ok(client.auth(client.http().post(url.clone())).json(&serde_json::json!({})))).await?;
        // 409: created meanwhile by someone else, which is as good.
        if !response.status().is_success() && response.status() != StatusCode::CONFLICT {
            return Err(client.refusal(response, &format!("create branch {}@{}", client.repo_id, self.branch)).await);
        }
        tracing::info!(repo = %client.repo_id, branch = %self.branch, "created the branch");
        let refs = self.refs().await?;
        match refs.branches.iter().find(|b| b.name == self.branch) {
            Some(head) => Ok((head.target_commit.clone(), true)),
            None => Err(client.not_a_hub(&format!("branch {} was created but the refs do not list it", self.branch))),
        }
    }

    fn not_a_branch(&self, kind: &'static str) -> HubError {
        HubError::NotABranch { repo_id: self.client.repo_id.clone(), revision: self.branch.clone(), kind }
    }

    async fn refs(&self) -> Result<Refs, HubError> {
        let client = self.client;
        let url = client.api(&["refs"]);
        let response = client.send(|| Ok(client.auth(client.http().get(url.clone())))).await?;
        if !response.status().is_success() {
            return Err(client.refusal(response, &format!("list the branches of {}", client.repo_id)).await);
        }
        client.json(response, "the list of branches and tags").await
    }

    /// Per file: (LFS?, ignored?, the oid the server has at that path).
    async fn preupload(&self, listed: &[LocalFile]) -> Result<Vec<(bool, bool, Option<String>)>, HubError> {
        let client = self.client;
        let url = client.api(&["preupload", &self.branch]);
        let mut answers: BTreeMap<String, PreuploadFile> = BTreeMap::new();
        for chunk in listed.chunks(PREUPLOAD_BATCH) {
            let body = serde_json::json!({
                "files": chunk.iter().map(|f| serde_json::json!({
                    "path": f.path_in_repo,
                    "sample": base64::engine::general_purpose::STANDARD.encode(&f.sample),
                    "size": f.size,
                })).collect::<Vec<_>>(),
            });
            let response = client.send(|| Ok(client.auth(client.http().post(url.clone())).json(&body))).await?;
            if !response.status().is_success() {
                return Err(client
                    .refusal(response, &format!("prepare a commit to {}@{}", client.repo_id, self.branch))
                    .await);
            }
            let answer: PreuploadAnswer = client.json(response, "the preupload answer").await?;
            answers.extend(answer.files.into_iter().map(|f| (f.path.clone(), f)));
        }
        listed
            .iter()
            .map(|f| {
                let Some(answer) = answers.get(&f.path_in_repo) else {
                    return Err(client.not_a_hub(&format!("the preupload answer leaves out {}", f.path_in_repo)));
                };
                let lfs = match answer.upload_mode.as_str() {
                    "lfs" => true,
                    "regular" => false,
                    other => return Err(client.not_a_hub(&format!("preupload mode {other:?} for {}", f.path_in_repo))),
                };
                // An empty object cannot go through LFS storage: huggingface_hub
                // commits empty files inline whatever the server said.
                Ok((lfs && f.size > 0, answer.should_ignore, answer.oid.clone()))
            })
            .collect()
    }

    /// The one commit. A lost reply (or a 5xx) is retried with the same
    /// `parentCommit`; a 412 after that means the first attempt may have landed, which
    /// reading the branch back decides.
    async fn commit(&self, changed: &[&Prepared<'_>], parent: Option<&str>) -> Result<(String, String), HubError> {
        let client = self.client;
        let mut header = serde_json::json!({ "summary": self.message, "description": "" });
        if let Some(parent) = parent {
            header["parentCommit"] = parent.into();
        }
        let mut body = String::new();
        let mut line = |value: serde_json::Value| {
            body.push_str(&value.to_string());
            body.push('\n');
        };
        line(serde_json::json!({ "key": "header", "value": header }));
        for p in changed {
            line(match &p.content {
                Content::Regular { bytes, .. } => serde_json::json!({ "key": "file", "value": {
                    "content": base64::engine::general_purpose::STANDARD.encode(bytes),
                    "path": p.file.path_in_repo,
                    "encoding": "base64",
                }}),
                Content::Lfs { sha256 } => serde_json::json!({ "key": "lfsFile", "value": {
                    "path": p.file.path_in_repo,
                    "algo": "sha256",
                    "oid": sha256,
                    "size": p.file.size,
                }}),
            });
        }
        let url = client.api(&["commit", &self.branch]);
        let action = format!("commit to {}@{}", client.repo_id, self.branch);
        let mut maybe_landed = false;
        let mut last = String::new();
        for attempt in 0..client.config.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(client.backoff(attempt)).await;
                if parent.is_none() {
                    // Without a parent nothing stops a second commit: look first.
                    if let Some(done) = self.landed(changed, parent).await? {
                        return Ok(done);
                    }
                }
            }
            let request = client
                .auth(client.http().post(url.clone()))
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone());
            match client.attempt(request).await {
                Attempt::Answer(r) if r.status().is_success() => {
                    let answer: CommitAnswer = client.json(r, "the commit answer").await?;
                    if !crate::store::is_commit_hash(&answer.commit_oid) {
                        return Err(client.not_a_hub("the commit answer names no commit id"));
                    }
                    let url = answer.commit_url.unwrap_or_else(|| self.commit_url(&answer.commit_oid));
                    tracing::info!(repo = %client.repo_id, commit = %answer.commit_oid, "committed");
                    return Ok((answer.commit_oid.to_ascii_lowercase(), url));
                }
                Attempt::Answer(r) if r.status() == StatusCode::PRECONDITION_FAILED => {
                    if maybe_landed {
                        if let Some(done) = self.landed(changed, parent).await? {
                            tracing::info!(repo = %client.repo_id, commit = %done.0, "the first commit attempt had landed");
                            return Ok(done);
                        }
                    }
                    return Err(HubError::BranchMoved { repo_id: client.repo_id.clone(), branch: self.branch.clone() });
                }
                Attempt::Answer(r) => return Err(client.refusal(r, &action).await),
                Attempt::Retry(why) => {
                    tracing::warn!(attempt = attempt + 1, "commit got no answer ({why}); trying again");
                    maybe_landed = true;
                    last = format!("committing: {why}");
                }
            }
        }
        Err(client.gave_up(last))
    }

    /// Whether the branch now holds a commit (other than `parent`) with every changed
    /// file as sent: the commit of an attempt whose reply was lost.
    async fn landed(
        &self,
        changed: &[&Prepared<'_>],
        parent: Option<&str>,
    ) -> Result<Option<(String, String)>, HubError> {
        let info = match self.read_back(&self.branch).await {
            Ok(info) => info,
            // A repo without commits has no branch to read yet.
            Err(HubError::RevisionNotFound { .. }) if parent.is_none() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(head) = info.sha.clone().filter(|s| crate::store::is_commit_hash(s)) else {
            return Err(self.client.not_a_hub("the branch's tree names no commit"));
        };
        if Some(head.as_str()) == parent {
            return Ok(None);
        }
        Ok(mismatch_in(changed, &info).is_none().then(|| (head.clone(), self.commit_url(&head))))
    }

    fn commit_url(&self, commit: &str) -> String {
        format!("{}/{}/commit/{commit}", self.client.endpoint(), self.client.repo_id)
    }

    /// The tree of `revision` with every file's hash.
    async fn read_back(&self, revision: &str) -> Result<RevisionInfo, HubError> {
        let client = self.client;
        let mut url = client.api(&["revision", revision]);
        url.set_query(Some("blobs=true"));
        let response = client.send(|| Ok(client.auth(client.http().get(url.clone())))).await?;
        if !response.status().is_success() {
            return Err(client.refusal(response, &format!("list the files of {}@{revision}", client.repo_id)).await);
        }
        client.json(response, "the file listing").await
    }
}

/// The first file the tree does not hold as prepared: (path, expected, actual).
fn mismatch(prepared: &[Prepared], info: &RevisionInfo) -> Option<(String, String, String)> {
    let all: Vec<&Prepared> = prepared.iter().collect();
    mismatch_in(&all, info)
}

fn mismatch_in(prepared: &[&Prepared], info: &RevisionInfo) -> Option<(String, String, String)> {
    let listed: BTreeMap<&str, &Sibling> = info.siblings.iter().map(|s| (s.rfilename.as_str(), s)).collect();
    for p in prepared {
        let expected = describe(p.content.oid(), Some(p.file.size));
        let actual = match listed.get(p.file.path_in_repo.as_str()) {
            None => "missing".to_owned(),
            Some(s) => match (&p.content, &s.lfs) {
                (Content::Lfs { .. }, Some(lfs)) => describe(&lfs.sha256, lfs.size.or(s.size)),
                (Content::Lfs { .. }, None) => {
                    format!("a regular file ({})", describe(s.blob_id.as_deref().unwrap_or("?"), s.size))
                }
                (Content::Regular { .. }, Some(lfs)) => {
                    format!("an LFS file ({})", describe(&lfs.sha256, lfs.size.or(s.size)))
                }
                (Content::Regular { .. }, None) => describe(s.blob_id.as_deref().unwrap_or("no hash"), s.size),
            },
        };
        if actual != expected {
            return Some((p.file.path_in_repo.clone(), expected, actual));
        }
    }
    None
}

fn describe(oid: &str, size: Option<u64>) -> String {
    match size {
        Some(size) => format!("{} ({size} bytes)", oid.to_ascii_lowercase()),
        None => format!("{} (size not listed)", oid.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_org_slash_name() {
        assert_eq!(validate_target("acme/model").unwrap(), "acme/model");
        for bad in ["model", "acme/model@dev", "a/b/c", "../x", "acme/-x"] {
            assert!(matches!(validate_target(bad), Err(HubError::InvalidReference { .. })), "{bad}");
        }
    }
}
