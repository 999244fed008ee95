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
#[cfg(test)]
mod scripted;
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
use crate::remote::{BlobsInfo, Sibling};
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
        if let ModelRef::Local(_) = &model {
            // Followed, as huggingface_hub follows them (a model folder of links into
            // a cache is common), but said: what is pushed may not be what is in view.
            for (file, target) in source::links_out_of(files.dir(), &listed) {
                tracing::warn!(file = %file.path_in_repo, target = %target.display(), "pushing the content of a link that points out of the folder");
            }
        }
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
            source: files.dir(),
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
    /// The folder pushed (for messages).
    source: &'a std::path::Path,
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

/// The largest file sent inline in the commit. The Hub sends everything over 10 MB
/// through LFS; a server that asks for more inline would have it all held in memory.
const MAX_INLINE: u64 = 64 << 20;

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
                path: self.source.to_path_buf(),
                reason: format!("the .gitignore of {repo_id} ignores every file of it"),
            });
        }

        let (lfs_uploaded, lfs_present) = self.upload_lfs(&prepared).await?;

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

    /// Sends the LFS objects of the changed files that the server lacks, each distinct
    /// object once (two paths may hold the same bytes): (sent, already there).
    async fn upload_lfs(&self, prepared: &[Prepared<'_>]) -> Result<(usize, usize), HubError> {
        let mut seen = BTreeSet::new();
        let objects: Vec<Object> = prepared
            .iter()
            .filter(|p| !p.unchanged)
            .filter_map(|p| match &p.content {
                Content::Lfs { sha256 } if seen.insert(sha256.as_str()) => Some(Object { file: p.file, sha256 }),
                _ => None,
            })
            .collect();
        let (mut uploaded, mut present) = (0, 0);
        if objects.is_empty() {
            return Ok((uploaded, present));
        }
        let answers = self.client.lfs_batch(&objects, &self.branch).await?;
        for (object, answer) in objects.iter().zip(&answers) {
            if self.client.lfs_upload(object, answer, self.progress).await? {
                uploaded += 1;
            } else {
                present += 1;
            }
        }
        Ok((uploaded, present))
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
                    // Inline files are held in memory and sent in the commit.
                    "regular" if f.size > MAX_INLINE => {
                        return Err(client.not_a_hub(&format!(
                            "preupload says to send {} ({} bytes) inline, but files over {} MiB go through LFS",
                            f.path_in_repo,
                            f.size,
                            MAX_INLINE >> 20
                        )))
                    }
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
        let body = self.ndjson(changed, parent);
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
                .timeout(client.timeouts.request)
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

    /// The commit's NDJSON: a header (with `parentCommit` when the branch has a
    /// head), then a line per changed file.
    fn ndjson(&self, changed: &[&Prepared<'_>], parent: Option<&str>) -> String {
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
        body
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
    async fn read_back(&self, revision: &str) -> Result<BlobsInfo, HubError> {
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
fn mismatch(prepared: &[Prepared], info: &BlobsInfo) -> Option<(String, String, String)> {
    let all: Vec<&Prepared> = prepared.iter().collect();
    mismatch_in(&all, info)
}

fn mismatch_in(prepared: &[&Prepared], info: &BlobsInfo) -> Option<(String, String, String)> {
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
    use std::path::Path;
    use std::time::{Duration, Instant};

    use sha2::Digest as _;

    use super::client::Timeouts;
    use super::scripted::{Reply, Scripted, Seen};
    use super::*;
    use crate::progress::NoProgress;
    use crate::HubConfig;

    const TOKEN: &str = "hf_secret_push_token";
    const PARENT: &str = "1111111111111111111111111111111111111111";
    const COMMIT: &str = "2222222222222222222222222222222222222222";
    /// Short enough for tests, long enough for a loaded machine to answer within.
    const QUICK: Timeouts = Timeouts { idle: Duration::from_millis(500), request: Duration::from_secs(2) };

    #[test]
    fn targets_must_be_org_slash_name() {
        assert_eq!(validate_target("acme/model").unwrap(), "acme/model");
        for bad in ["model", "acme/model@dev", "a/b/c", "../x", "acme/-x"] {
            assert!(matches!(validate_target(bad), Err(HubError::InvalidReference { .. })), "{bad}");
        }
    }

    /// A Hub for `acme/m@main` (head [`PARENT`]) that answers every step of a push of
    /// `files` (`*.safetensors` through LFS) and commits [`COMMIT`] holding them;
    /// `lfs` answers the LFS requests (and may override any other).
    fn hub(
        files: &[(&str, Vec<u8>)],
        lfs: impl Fn(&Seen) -> Option<Reply> + Send + Sync + 'static,
    ) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|(path, bytes)| {
                let size = bytes.len();
                if path.ends_with(".safetensors") {
                    let sha256 = hex::encode(sha2::Sha256::digest(bytes));
                    serde_json::json!({ "rfilename": path, "size": size, "lfs": { "sha256": sha256, "size": size } })
                } else {
                    let mut sha1 = sha1::Sha1::new();
                    sha1.update(format!("blob {size}\0").as_bytes());
                    sha1.update(bytes);
                    let blob = hex::encode(sha1.finalize());
                    serde_json::json!({ "rfilename": path, "size": size, "blobId": blob })
                }
            })
            .collect();
        move |seen| {
            if let Some(reply) = lfs(seen) {
                return reply;
            }
            let api = "/api/models/acme/m";
            match (seen.method.as_str(), seen.target.as_str()) {
                ("POST", "/api/repos/create") => Reply::status(409),
                ("GET", t) if t == format!("{api}/refs") => Reply::json(
                    200,
                    serde_json::json!({ "branches": [{ "name": "main", "targetCommit": PARENT }], "tags": [] }),
                ),
                ("POST", t) if t == format!("{api}/preupload/main") => {
                    let asked: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
                    let files: Vec<serde_json::Value> = asked["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| {
                            let path = f["path"].as_str().unwrap();
                            let mode = if path.ends_with(".safetensors") { "lfs" } else { "regular" };
                            serde_json::json!({ "path": path, "uploadMode": mode })
                        })
                        .collect();
                    Reply::json(200, serde_json::json!({ "files": files }))
                }
                ("POST", t) if t == format!("{api}/commit/main") => {
                    Reply::json(200, serde_json::json!({ "commitOid": COMMIT }))
                }
                ("GET", t) if t.starts_with(&format!("{api}/revision/")) => {
                    Reply::json(200, serde_json::json!({ "sha": COMMIT, "siblings": siblings }))
                }
                _ => Reply::status(404),
            }
        }
    }

    /// `files` in a new folder, pushed to `acme/m` on `endpoint` with [`TOKEN`], two
    /// attempts per request and the [`QUICK`] timeouts.
    fn push_to(endpoint: &str, dir: &Path) -> Result<Pushed, HubError> {
        let config = HubConfig::default().with_endpoint(endpoint).with_retries(2, Duration::from_millis(1));
        let client = Client::with_timeouts(&config, TOKEN, "acme/m", QUICK).unwrap();
        let push = Push {
            client: &client,
            source: dir,
            branch: "main".to_owned(),
            private: false,
            message: "test".to_owned(),
            progress: &NoProgress,
        };
        let listed = source::list(dir).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(push.run(&listed))
    }

    fn folder(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, bytes) in files {
            std::fs::write(dir.path().join(path), bytes).unwrap();
        }
        dir
    }

    fn model() -> Vec<(&'static str, Vec<u8>)> {
        vec![("config.json", b"{}".to_vec()), ("model.safetensors", vec![3u8; 3000])]
    }

    fn is_lfs(seen: &Seen) -> bool {
        seen.target.ends_with("/info/lfs/objects/batch")
    }

    fn not_a_hub(result: Result<Pushed, HubError>, words: &str) {
        match result {
            Err(e @ HubError::NotAHub { .. }) => assert!(e.to_string().contains(words), "{e}"),
            other => panic!("expected NotAHub ({words}), got {other:?}"),
        }
    }

    #[test]
    fn malformed_multipart_answers_are_refused_before_any_upload() {
        let parts = |numbers: &[u64]| -> serde_json::Map<String, serde_json::Value> {
            numbers.iter().map(|i| (i.to_string(), serde_json::json!(format!("http://127.0.0.1:9/part/{i}")))).collect()
        };
        let with = |chunk: serde_json::Value, mut header: serde_json::Map<String, serde_json::Value>| {
            header.insert("chunk_size".to_owned(), chunk);
            serde_json::json!({ "href": "http://127.0.0.1:9/done", "header": header })
        };
        // The object is 10 001 bytes.
        let cases = [
            (with(serde_json::json!(0), parts(&[1])), "chunk_size is not a positive integer"),
            (with(serde_json::json!(-5), parts(&[1])), "chunk_size is not a positive integer"),
            (with(serde_json::json!("big"), parts(&[1])), "chunk_size is not a positive integer"),
            (with(serde_json::json!(4000), parts(&[])), "0 part URLs where 3 parts of 4000 bytes"),
            (with(serde_json::json!(4000), parts(&[1, 2, 3, 4, 5, 6, 7])), "7 part URLs where 3 parts"),
            (with(serde_json::json!(4000), parts(&[1, 2, 4])), "3 part URLs where 3 parts"),
            // As many URLs as parts, but more parts than any real server offers.
            (
                with(serde_json::json!(1), parts(&(1..=10_001).collect::<Vec<u64>>())),
                "10001 part URLs where 10001 parts of 1 bytes were expected (at most 10000)",
            ),
        ];
        for (upload, words) in cases {
            let files = vec![("model.safetensors", vec![3u8; 10_001])];
            let oid = hex::encode(sha2::Sha256::digest(&files[0].1));
            let server = Scripted::start(hub(&files, move |s| {
                is_lfs(s).then(|| {
                    let object = serde_json::json!({ "oid": oid, "actions": { "upload": upload.clone() } });
                    Reply::json(200, serde_json::json!({ "transfer": "multipart", "objects": [object] }))
                })
            }));
            let dir = folder(&files);
            not_a_hub(push_to(&server.endpoint, dir.path()), words);
            assert!(server.seen().iter().all(|s| s.method != "PUT" && !s.target.contains("/commit/")), "{words}");
        }
    }

    fn sha256(bytes: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(bytes))
    }

    /// A batch answer giving each object a basic upload to `upload(oid)` and,
    /// where `verify(oid)` is some, a verify action there.
    fn basic_batch(
        oids: &[&String],
        upload: impl Fn(&str) -> String,
        verify: impl Fn(&str) -> Option<String>,
    ) -> Reply {
        let objects: Vec<serde_json::Value> = oids
            .iter()
            .map(|oid| {
                let mut actions = serde_json::json!({ "upload": { "href": upload(oid) } });
                if let Some(href) = verify(oid) {
                    actions["verify"] = serde_json::json!({ "href": href });
                }
                serde_json::json!({ "oid": oid, "size": 1, "actions": actions })
            })
            .collect();
        Reply::json(200, serde_json::json!({ "transfer": "basic", "objects": objects }))
    }

    #[test]
    fn the_token_goes_to_the_endpoint_only() {
        let files = vec![
            ("a.safetensors", vec![1u8; 2000]),
            ("b.safetensors", vec![2u8; 2000]),
            ("config.json", b"{}".to_vec()),
        ];
        let (a, b) = (sha256(&files[0].1), sha256(&files[1].1));
        let other = Scripted::start(|_| Reply::status(200));
        let storage = other.endpoint.clone();
        let server = Scripted::start(hub(&files, move |s| {
            if s.target == "/verify/b" {
                return Some(Reply::status(200));
            }
            let a = a.clone();
            // `a` is verified on the upload host, `b` on the public Hub's address,
            // which is the endpoint's (huggingface_hub moves it there too).
            is_lfs(s).then(|| {
                basic_batch(
                    &[&a, &b],
                    |oid| format!("{storage}/put/{oid}"),
                    |oid| {
                        Some(if oid == a {
                            format!("{storage}/verify/a")
                        } else {
                            "https://huggingface.co/verify/b".to_owned()
                        })
                    },
                )
            })
        }));
        let dir = folder(&files);
        let pushed = push_to(&server.endpoint, dir.path()).unwrap();
        assert_eq!((pushed.lfs_uploaded, pushed.commit.as_str()), (2, COMMIT));
        let elsewhere = other.seen();
        assert_eq!(elsewhere.len(), 3, "two PUTs and a verify: {elsewhere:?}");
        assert!(elsewhere.iter().all(|s| s.authorization.is_none()), "{elsewhere:?}");
        let on_endpoint = server.seen();
        assert!(on_endpoint.iter().any(|s| s.target == "/verify/b"));
        let bearer = format!("Bearer {TOKEN}");
        assert!(on_endpoint.iter().all(|s| s.authorization.as_deref() == Some(bearer.as_str())), "{on_endpoint:?}");
    }

    #[test]
    fn refusals_never_show_the_token() {
        let server = Scripted::start(|s| {
            let quoted = format!("invalid credentials in {:?}", s.authorization.clone().unwrap_or_default());
            Reply::json(401, serde_json::json!({ "error": quoted }))
        });
        let dir = folder(&model());
        let err = push_to(&server.endpoint, dir.path()).unwrap_err();
        assert!(matches!(err, HubError::TokenRejected { .. }), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN) && shown.contains("<token>"), "{shown}");
    }

    #[test]
    fn endless_json_answers_are_cut_off() {
        let server = Scripted::start(|s| if s.target.ends_with("/refs") { Reply::Endless } else { Reply::status(409) });
        let dir = folder(&model());
        not_a_hub(push_to(&server.endpoint, dir.path()), "the list of branches and tags is larger than 64 MiB");
    }

    #[test]
    fn requests_that_get_no_answer_end_within_the_timeouts() {
        let model = model();
        let oid = sha256(&model[1].1);
        let stall_preupload = |s: &Seen| s.target.contains("/preupload/").then_some(Reply::Stall);
        let stall_put = move |s: &Seen| match s.method.as_str() {
            "PUT" => Some(Reply::Stall),
            _ => is_lfs(s).then(|| basic_batch(&[&oid], |_| "https://huggingface.co/put".to_owned(), |_| None)),
        };
        for (server, step) in
            [(Scripted::start(hub(&model, stall_preupload)), "POST"), (Scripted::start(hub(&model, stall_put)), "PUT")]
        {
            let dir = folder(&model);
            let start = Instant::now();
            let err = push_to(&server.endpoint, dir.path()).unwrap_err();
            assert!(matches!(err, HubError::ServerError { attempts: 2, .. }), "{step}: {err}");
            assert!(start.elapsed() < Duration::from_secs(15), "{step}: took {:?}", start.elapsed());
            let seen = server.seen();
            let stalled = if step == "PUT" { "PUT" } else { "/preupload/" };
            let tries = seen.iter().filter(|s| s.method == stalled || s.target.contains(stalled)).count();
            assert_eq!(tries, 2, "{step}: {seen:?}");
            assert!(seen.iter().all(|s| !s.target.contains("/commit/")), "{step}");
        }
    }

    #[test]
    fn a_file_replaced_after_hashing_is_never_sent() {
        let model = model();
        let oid = sha256(&model[1].1);
        let dir = folder(&model);
        let weights = dir.path().join("model.safetensors");
        let server = Scripted::start(hub(&model, move |s| {
            is_lfs(s).then(|| {
                // Same size, other bytes, swapped in by rename as an editor saves.
                let fresh = weights.with_extension("new");
                std::fs::write(&fresh, vec![9u8; 3000]).unwrap();
                std::fs::rename(&fresh, &weights).unwrap();
                basic_batch(&[&oid], |_| "https://huggingface.co/put".to_owned(), |_| None)
            })
        }));
        let err = push_to(&server.endpoint, dir.path()).unwrap_err();
        assert!(matches!(err, HubError::FileChanged { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("replaced"), "{err}");
        assert!(server.seen().iter().all(|s| s.method != "PUT" && !s.target.contains("/commit/")));
    }

    #[test]
    fn odd_server_answers_each_get_their_own_error() {
        let model = model();
        let oid = sha256(&model[1].1);
        let put = |_: &str| "https://huggingface.co/put".to_owned();
        type Case = (&'static str, Box<dyn Fn(&Seen) -> Option<Reply> + Send + Sync>);
        let o = oid.clone();
        let cases: Vec<Case> = vec![
            (
                "xet",
                Box::new(|s| {
                    is_lfs(s).then(|| Reply::json(200, serde_json::json!({ "transfer": "xet", "objects": [] })))
                }),
            ),
            ("left out", Box::new(|s| is_lfs(s).then(|| Reply::json(200, serde_json::json!({ "objects": [] }))))),
            ("object error", {
                let o = o.clone();
                Box::new(move |s| {
                    let error = serde_json::json!({ "oid": o, "error": { "code": 422, "message": "too big" } });
                    is_lfs(s).then(|| Reply::json(200, serde_json::json!({ "objects": [error] })))
                })
            }),
            ("bad header", {
                let o = o.clone();
                Box::new(move |s| {
                    let upload =
                        serde_json::json!({ "href": "https://huggingface.co/put", "header": { "bad name": "x" } });
                    let object = serde_json::json!({ "oid": o, "actions": { "upload": upload } });
                    is_lfs(s).then(|| Reply::json(200, serde_json::json!({ "objects": [object] })))
                })
            }),
            ("moved", {
                let o = o.clone();
                Box::new(move |s| match s.method.as_str() {
                    "PUT" => Some(Reply::status(200)),
                    _ if s.target.contains("/commit/") => Some(Reply::status(412)),
                    _ => is_lfs(s).then(|| basic_batch(&[&o], put, |_| None)),
                })
            }),
            ("not stored", {
                let o = o.clone();
                Box::new(move |s| match s.method.as_str() {
                    "PUT" => Some(Reply::status(200)),
                    _ if s.target.contains("/revision/") => Some(Reply::json(
                        200,
                        serde_json::json!({ "sha": COMMIT, "siblings": [{ "rfilename": "config.json", "blobId": "0".repeat(40), "size": 2 }] }),
                    )),
                    _ => is_lfs(s).then(|| basic_batch(&[&o], put, |_| None)),
                })
            }),
        ];
        for (case, script) in cases {
            let server = Scripted::start(hub(&model, script));
            let dir = folder(&model);
            let err = push_to(&server.endpoint, dir.path()).unwrap_err();
            let text = err.to_string();
            let expected = match case {
                "xet" => matches!(err, HubError::XetOnly { .. }),
                "left out" => matches!(err, HubError::NotAHub { .. }) && text.contains("leaves out model.safetensors"),
                "object error" => matches!(err, HubError::PushRejected { status: 422, .. }) && text.contains("too big"),
                "bad header" => matches!(err, HubError::NotAHub { .. }) && text.contains("invalid header \"bad name\""),
                "moved" => matches!(err, HubError::BranchMoved { .. }),
                "not stored" => matches!(err, HubError::PushNotStored { .. }) && text.contains("config.json"),
                _ => unreachable!(),
            };
            assert!(expected, "{case}: {err:?}");
            let commits = server.seen().iter().filter(|s| s.target.contains("/commit/")).count();
            assert_eq!(commits, usize::from(matches!(case, "moved" | "not stored")), "{case}");
        }
    }

    #[test]
    fn a_large_file_the_server_wants_inline_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        // Sparse: nothing is written, and nothing may be read past the sample.
        let big = std::fs::File::create(dir.path().join("weights.bin")).unwrap();
        big.set_len(MAX_INLINE + 1).unwrap();
        let server = Scripted::start(hub(&[], |_| None));
        not_a_hub(push_to(&server.endpoint, dir.path()), "send weights.bin (67108865 bytes) inline");
    }
}
