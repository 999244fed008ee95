//! Looking after the cache: what is in it, how big it is, removing a model, and
//! re-checking every stored file against the hash it is named by.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::download::BlobHasher;
use crate::remote::RemoteFile;
use crate::{HubError, ModelStore};

/// One cached repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRepo {
    /// `org/name`.
    pub repo_id: String,
    /// Cached snapshots.
    pub revisions: Vec<CachedRevision>,
    /// Bytes of all blobs (shared between revisions, counted once).
    pub size: u64,
}

/// One cached snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRevision {
    /// The commit.
    pub commit: String,
    /// Refs (branches, tags) pointing at it.
    pub refs: Vec<String>,
    /// Files in the snapshot.
    pub files: usize,
}

/// A stored file whose content does not match its name, or a snapshot entry whose
/// blob is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The repo.
    pub repo_id: String,
    /// The blob or snapshot entry.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

impl ModelStore {
    /// Every repo in the cache (hub layout), sorted by id.
    pub fn list(&self) -> Result<Vec<CachedRepo>, HubError> {
        let mut repos = Vec::new();
        let Ok(entries) = fs::read_dir(self.root()) else { return Ok(repos) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("models--") else { continue };
            let Some((org, repo)) = id.split_once("--") else { continue };
            let repo_id = format!("{org}/{repo}");
            repos.push(self.describe(&repo_id)?);
        }
        repos.sort_by(|a, b| a.repo_id.cmp(&b.repo_id));
        Ok(repos)
    }

    /// Total bytes of every blob in the cache.
    pub fn total_size(&self) -> Result<u64, HubError> {
        Ok(self.list()?.iter().map(|r| r.size).sum())
    }

    fn describe(&self, repo_id: &str) -> Result<CachedRepo, HubError> {
        let dir = self.repo_dir(repo_id);
        let size = fs::read_dir(dir.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, commit) in read_refs(&dir.join("refs")) {
            refs.entry(commit).or_default().push(name);
        }
        let mut revisions = Vec::new();
        for entry in fs::read_dir(dir.join("snapshots")).into_iter().flatten().flatten() {
            let commit = entry.file_name().to_string_lossy().into_owned();
            let files = walk(&entry.path()).len();
            revisions.push(CachedRevision { refs: refs.remove(&commit).unwrap_or_default(), commit, files });
        }
        revisions.sort_by(|a, b| a.commit.cmp(&b.commit));
        Ok(CachedRepo { repo_id: repo_id.to_owned(), revisions, size })
    }

    /// Deletes a repo from the cache; returns the bytes freed.
    pub fn remove(&self, repo_id: &str) -> Result<u64, HubError> {
        let repo_id = crate::ModelRef::parse(repo_id)?.repo_id().map(str::to_owned).ok_or_else(|| {
            HubError::InvalidReference {
                reference: repo_id.to_owned(),
                reason: "give a Hub name such as org/name".to_owned(),
            }
        })?;
        let dir = self.repo_dir(&repo_id);
        if !dir.is_dir() {
            return Err(self.not_cached_any(repo_id));
        }
        let size = self.describe(&repo_id)?.size;
        fs::remove_dir_all(&dir).map_err(HubError::io("removing", &dir))?;
        Ok(size)
    }

    fn not_cached_any(&self, repo_id: String) -> HubError {
        HubError::NotCached { repo_id, revision: "any".to_owned(), root: self.root().to_path_buf(), offline: false }
    }

    /// Re-hashes every blob of `repo_id` (or of every repo) against its name, and
    /// checks every snapshot entry points at an existing blob.
    pub fn verify(&self, repo_id: Option<&str>) -> Result<Vec<Problem>, HubError> {
        let repos: Vec<String> = match repo_id {
            Some(id) => vec![crate::ModelRef::parse(id)?.repo_id().unwrap_or(id).to_owned()],
            None => self.list()?.into_iter().map(|r| r.repo_id).collect(),
        };
        let mut problems = Vec::new();
        for repo_id in repos {
            let dir = self.repo_dir(&repo_id);
            if !dir.is_dir() {
                return Err(self.not_cached_any(repo_id));
            }
            for entry in fs::read_dir(dir.join("blobs")).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_hash = (name.len() == 40 || name.len() == 64) && name.bytes().all(|b| b.is_ascii_hexdigit());
                if !is_hash {
                    continue; // .incomplete leftovers are not served; ignore them here
                }
                let path = entry.path();
                let size = fs::metadata(&path).map_err(HubError::io("reading", &path))?.len();
                let file = RemoteFile { path: name.clone(), size, etag: name.clone() };
                let actual = hash_file(&path, &file)?;
                if actual != name {
                    problems.push(Problem {
                        repo_id: repo_id.clone(),
                        path,
                        detail: format!("content hashes to {actual}"),
                    });
                }
            }
            for snapshot in fs::read_dir(dir.join("snapshots")).into_iter().flatten().flatten() {
                for file in walk(&snapshot.path()) {
                    if !file.exists() {
                        problems.push(Problem {
                            repo_id: repo_id.clone(),
                            path: file,
                            detail: "its blob is missing".to_owned(),
                        });
                    }
                }
            }
        }
        Ok(problems)
    }

    /// Deletes the blobs (and dangling snapshot entries) `verify` reported, and
    /// returns the `(repo_id, commit)` snapshots that need downloading again.
    pub fn discard(&self, problems: &[Problem]) -> Result<BTreeSet<(String, String)>, HubError> {
        let mut affected = BTreeSet::new();
        for problem in problems {
            let dir = self.repo_dir(&problem.repo_id);
            let bad_blob = problem.path.starts_with(dir.join("blobs"));
            for snapshot in fs::read_dir(dir.join("snapshots")).into_iter().flatten().flatten() {
                let commit = snapshot.file_name().to_string_lossy().into_owned();
                for link in walk(&snapshot.path()) {
                    let points_at_bad =
                        bad_blob && fs::canonicalize(&link).ok() == fs::canonicalize(&problem.path).ok();
                    if points_at_bad || link == problem.path {
                        let _ = fs::remove_file(&link);
                        affected.insert((problem.repo_id.clone(), commit.clone()));
                    }
                }
            }
            if bad_blob {
                let _ = fs::remove_file(&problem.path);
            }
        }
        Ok(affected)
    }
}

fn hash_file(path: &Path, file: &RemoteFile) -> Result<String, HubError> {
    use std::io::Read;
    let mut hasher = BlobHasher::new(file);
    let mut f = fs::File::open(path).map_err(HubError::io("reading", path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(HubError::io("reading", path))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

fn read_refs(dir: &Path) -> Vec<(String, String)> {
    walk(dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            Some((name, fs::read_to_string(&p).ok()?.trim().to_owned()))
        })
        .collect()
}

/// Every non-directory entry under `dir` (symlinks included, even dangling ones).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out.sort();
    out
}
