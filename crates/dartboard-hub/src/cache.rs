//! Looking after the cache: what is in it, how big it is, removing a model, and
//! re-checking every stored file against the hash it is named by.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::download::BlobHasher;
use crate::error::error_chain;
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

/// What [`ModelStore::remove`] deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// `org/name`.
    pub repo_id: String,
    /// The commit whose snapshot was removed; `None` when the whole model was.
    pub commit: Option<String>,
    /// The refs that pointed to that commit, removed with it.
    pub refs: Vec<String>,
    /// Bytes of blobs deleted.
    pub freed: u64,
}

/// A stored file whose content does not match its name, a snapshot entry whose blob
/// is gone, or a file that is not a regular file (a FIFO, a link to a device).
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

    /// Deletes from the cache `ORG/NAME` (the whole model) or `ORG/NAME@REV` (one
    /// revision: its snapshot, the refs that point to it, and the blobs no remaining
    /// snapshot uses; removing the last revision removes the model). `REV` is a
    /// branch, tag or commit as cached; one that is not cached is an error listing
    /// those that are. The argument is always a Hub name, never a directory.
    pub fn remove(&self, reference: &str) -> Result<Removed, HubError> {
        let model = crate::ModelRef::parse_hub(reference)?;
        let crate::ModelRef::Hub { repo_id, revision } = model else {
            return Err(HubError::InvalidReference {
                reference: reference.to_owned(),
                reason: "give a Hub name such as org/name or org/name@revision".to_owned(),
            });
        };
        let dir = self.repo_dir(&repo_id);
        if !dir.is_dir() {
            return Err(self.not_cached_any(repo_id));
        }
        if !reference.contains('@') {
            let freed = self.describe(&repo_id)?.size;
            fs::remove_dir_all(&dir).map_err(HubError::io("removing", &dir))?;
            return Ok(Removed { repo_id, commit: None, refs: Vec::new(), freed });
        }
        self.remove_revision(repo_id, &revision)
    }

    fn remove_revision(&self, repo_id: String, revision: &str) -> Result<Removed, HubError> {
        let dir = self.repo_dir(&repo_id);
        let described = self.describe(&repo_id)?;
        let refs = read_refs(&dir.join("refs"));
        let commit = if described.revisions.iter().any(|r| r.commit == revision) {
            revision.to_owned()
        } else if let Some((_, commit)) = refs.iter().find(|(name, _)| name == revision) {
            commit.clone()
        } else {
            let cached =
                described
                    .revisions
                    .iter()
                    .map(|r| {
                        if r.refs.is_empty() {
                            r.commit.clone()
                        } else {
                            format!("{} ({})", r.commit, r.refs.join(", "))
                        }
                    })
                    .collect();
            return Err(HubError::RevisionNotCached { repo_id, revision: revision.to_owned(), cached });
        };
        let removed_refs: Vec<String> =
            refs.iter().filter(|(_, c)| *c == commit).map(|(name, _)| name.clone()).collect();
        let others: Vec<&CachedRevision> = described.revisions.iter().filter(|r| r.commit != commit).collect();
        if others.is_empty() {
            // The last revision: the model goes, as huggingface_hub's delete does.
            fs::remove_dir_all(&dir).map_err(HubError::io("removing", &dir))?;
            return Ok(Removed { repo_id, commit: Some(commit), refs: removed_refs, freed: described.size });
        }
        let snapshots = dir.join("snapshots");
        let kept: BTreeSet<String> = others.iter().flat_map(|r| blobs_used(&snapshots.join(&r.commit))).collect();
        let snapshot = snapshots.join(&commit);
        let orphans: Vec<String> = blobs_used(&snapshot).into_iter().filter(|b| !kept.contains(b)).collect();
        if snapshot.is_dir() {
            fs::remove_dir_all(&snapshot).map_err(HubError::io("removing", &snapshot))?;
        }
        for name in &removed_refs {
            let path = dir.join("refs").join(name);
            fs::remove_file(&path).map_err(HubError::io("removing", &path))?;
        }
        remove_empty_dirs(&dir.join("refs"));
        let mut freed = 0;
        for blob in orphans {
            let path = dir.join("blobs").join(blob);
            if let Ok(meta) = fs::symlink_metadata(&path) {
                fs::remove_file(&path).map_err(HubError::io("removing", &path))?;
                freed += meta.len();
            }
        }
        Ok(Removed { repo_id, commit: Some(commit), refs: removed_refs, freed })
    }

    fn not_cached_any(&self, repo_id: String) -> HubError {
        HubError::NotCached { repo_id, revision: "any".to_owned(), root: self.root().to_path_buf(), offline: false }
    }

    /// Re-hashes every blob of `repo_id` (or of every repo) against its name, checks
    /// every snapshot entry points at an existing regular file and every ref holds a
    /// commit hash. What is not a regular file (a FIFO, a link to `/dev/zero`) is
    /// reported, never read.
    pub fn verify(&self, repo_id: Option<&str>) -> Result<Vec<Problem>, HubError> {
        let repos: Vec<String> = match repo_id {
            Some(id) => vec![crate::ModelRef::parse_hub(id)?.repo_id().unwrap_or(id).to_owned()],
            None => self.list()?.into_iter().map(|r| r.repo_id).collect(),
        };
        let mut problems = Vec::new();
        for repo_id in repos {
            let dir = self.repo_dir(&repo_id);
            if !dir.is_dir() {
                return Err(self.not_cached_any(repo_id));
            }
            let mut problem = |path: PathBuf, detail: String| {
                problems.push(Problem { repo_id: repo_id.clone(), path, detail });
            };
            for entry in fs::read_dir(dir.join("blobs")).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_hash = (name.len() == 40 || name.len() == 64) && name.bytes().all(|b| b.is_ascii_hexdigit());
                if !is_hash {
                    continue; // .incomplete leftovers are not served; ignore them here
                }
                let path = entry.path();
                let size = match dartboard_fs::check_regular(&path) {
                    Ok(meta) => meta.len(),
                    Err(e) => {
                        problem(path, unreadable(&e, "it is missing"));
                        continue;
                    }
                };
                let file = RemoteFile { path: name.clone(), size, etag: name.clone() };
                match hash_file(&path, &file) {
                    Ok(actual) if actual == name => {}
                    Ok(actual) => problem(path, format!("content hashes to {actual}")),
                    Err(e) => problem(path, format!("cannot be hashed: {}", error_chain(&e))),
                }
            }
            for snapshot in fs::read_dir(dir.join("snapshots")).into_iter().flatten().flatten() {
                for file in walk(&snapshot.path()) {
                    if let Err(e) = dartboard_fs::check_regular(&file) {
                        problem(file, unreadable(&e, "its blob is missing"));
                    }
                }
            }
            for path in walk(&dir.join("refs")) {
                match crate::store::read_ref(&path) {
                    Ok(commit) if crate::store::is_commit_hash(&commit) => {}
                    Ok(_) => problem(path, "does not hold a 40-character commit hash".to_owned()),
                    Err(e) => problem(path, unreadable(&e, "it is missing")),
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
            if bad_blob || problem.path.starts_with(dir.join("refs")) {
                // A bad ref is dropped: the next download of that revision writes it again.
                let _ = fs::remove_file(&problem.path);
            }
        }
        Ok(affected)
    }
}

/// A blob's hash, by what it is named after. Only a regular file is read: a FIFO
/// would block and `/dev/zero` would never end.
fn hash_file(path: &Path, file: &RemoteFile) -> Result<String, HubError> {
    use std::io::Read;
    let mut hasher = BlobHasher::new(file);
    let mut f = dartboard_fs::open_regular(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(HubError::io("reading", path))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Why a cached file cannot be read, for a [`Problem`] (which names the path itself).
fn unreadable(e: &dartboard_fs::FsError, missing: &str) -> String {
    match e {
        dartboard_fs::FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => missing.to_owned(),
        dartboard_fs::FsError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
        dartboard_fs::FsError::TooLarge { max, .. } => format!("it is larger than the {max} bytes allowed"),
        other => error_chain(other),
    }
}

/// `(name, commit)` of every readable ref. One that cannot be read (a FIFO, a link
/// to a device, too large) is left out with a warning, so listing never blocks;
/// `verify` reports it.
fn read_refs(dir: &Path) -> Vec<(String, String)> {
    walk(dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            match crate::store::read_ref(&p) {
                Ok(commit) => Some((name, commit)),
                Err(e) => {
                    tracing::warn!(path = %p.display(), "skipping unreadable ref: {}", error_chain(&e));
                    None
                }
            }
        })
        .collect()
}

/// The blob names a snapshot's links point to.
fn blobs_used(snapshot: &Path) -> BTreeSet<String> {
    walk(snapshot)
        .into_iter()
        .filter_map(|link| fs::read_link(link).ok())
        .filter(|target| target.parent().and_then(Path::file_name).is_some_and(|d| d == "blobs"))
        .filter_map(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// Removes the empty directories under `dir` (left by `refs/pr/1`), not `dir` itself.
fn remove_empty_dirs(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path());
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Every non-directory entry under `dir` (symlinks included, even dangling ones;
/// links to directories are entries, not followed).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{mkfifo, within};
    use crate::ModelRef;

    const OLD: &str = "1111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222";

    /// Two revisions of `org/m` that share their config and differ in weights.
    fn two_revisions() -> (tempfile::TempDir, ModelStore) {
        let cache = tempfile::tempdir().unwrap();
        let store = ModelStore::new(cache.path());
        for (commit, weights, ref_name) in [(OLD, b"old weights", "v1"), (NEW, b"new weights", "main")] {
            let src = tempfile::tempdir().unwrap();
            fs::write(src.path().join("config.json"), "{}").unwrap();
            fs::write(src.path().join("tokenizer.json"), "{}").unwrap();
            fs::write(src.path().join("model.safetensors"), weights).unwrap();
            store.import_dir(src.path(), "org/m", commit, ref_name).unwrap();
        }
        let refs = store.repo_dir("org/m").join("refs");
        fs::create_dir_all(refs.join("pr")).unwrap();
        fs::write(refs.join("pr/1"), OLD).unwrap();
        (cache, store)
    }

    fn blob_names(store: &ModelStore) -> BTreeSet<String> {
        fs::read_dir(store.repo_dir("org/m").join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn removing_a_revision_keeps_the_others_and_their_blobs() {
        let (_cache, store) = two_revisions();
        let before = blob_names(&store);
        assert_eq!(before.len(), 3, "config and tokenizer are shared: {before:?}");
        let removed = store.remove("org/m@v1").unwrap();
        assert_eq!(removed.commit.as_deref(), Some(OLD));
        assert_eq!(removed.refs, ["pr/1", "v1"]);
        assert_eq!(removed.freed, b"old weights".len() as u64);
        let dir = store.repo_dir("org/m");
        assert!(!dir.join("snapshots").join(OLD).exists());
        assert!(!dir.join("refs/v1").exists() && !dir.join("refs/pr").exists());
        assert_eq!(blob_names(&store).len(), 2, "only the old weights went");
        // The other revision is whole.
        let files = store.resolve(&ModelRef::parse("org/m").unwrap()).unwrap();
        assert_eq!(fs::read(files.path("model.safetensors")).unwrap(), b"new weights");
        assert_eq!(fs::read(files.path("config.json")).unwrap(), b"{}");
        assert!(store.verify(Some("org/m")).unwrap().is_empty());

        // By commit too; the last revision takes the model with it.
        let removed = store.remove(&format!("org/m@{NEW}")).unwrap();
        assert_eq!((removed.commit.as_deref(), removed.refs), (Some(NEW), vec!["main".to_owned()]));
        assert!(!dir.exists());
    }

    #[test]
    fn removing_a_revision_that_is_not_cached_names_those_that_are() {
        let (_cache, store) = two_revisions();
        let err = store.remove("org/m@v9").unwrap_err();
        assert!(matches!(err, HubError::RevisionNotCached { .. }), "{err}");
        let message = err.to_string();
        for needle in ["v9", OLD, NEW, "main", "v1"] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
        assert_eq!(blob_names(&store).len(), 3, "nothing was removed");
        assert_eq!(store.list().unwrap()[0].revisions.len(), 2);

        // Without @, the whole model.
        let removed = store.remove("org/m").unwrap();
        assert_eq!(removed.commit, None);
        assert!(!store.repo_dir("org/m").exists());
        assert!(matches!(store.remove("org/m"), Err(HubError::NotCached { .. })));
    }

    #[test]
    fn special_files_in_the_cache_are_reported_never_read() {
        let (_cache, store) = two_revisions();
        let dir = store.repo_dir("org/m");
        let weights = |commit: &str| fs::canonicalize(dir.join("snapshots").join(commit).join("model.safetensors"));
        // A blob that is a FIFO, a blob that is a link to /dev/zero, a ref that is a
        // FIFO, a snapshot entry that is a FIFO.
        let fifo_blob = weights(OLD).unwrap();
        fs::remove_file(&fifo_blob).unwrap();
        mkfifo(&fifo_blob);
        let zero_blob = weights(NEW).unwrap();
        fs::remove_file(&zero_blob).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &zero_blob).unwrap();
        fs::remove_file(dir.join("refs/main")).unwrap();
        mkfifo(&dir.join("refs/main"));
        let entry = dir.join("snapshots").join(NEW).join("tokenizer.json");
        fs::remove_file(&entry).unwrap();
        mkfifo(&entry);

        let (listed, size) = within({
            let store = store.clone();
            move || (store.list().unwrap(), store.total_size().unwrap())
        });
        assert_eq!(listed[0].revisions.len(), 2);
        assert!(size < 1000, "{size}");
        let problems = within({
            let store = store.clone();
            move || store.verify(Some("org/m")).unwrap()
        });
        let reported = |path: &Path| problems.iter().find(|p| p.path == path).map(|p| p.detail.clone());
        assert!(reported(&fifo_blob).is_some_and(|d| d.contains("FIFO")), "{problems:?}");
        assert!(reported(&zero_blob).is_some_and(|d| d.contains("character device")), "{problems:?}");
        assert!(reported(&dir.join("refs/main")).is_some_and(|d| d.contains("FIFO")), "{problems:?}");
        assert!(reported(&entry).is_some_and(|d| d.contains("FIFO")), "{problems:?}");

        // Discarding them leaves a cache that verifies (the snapshots to fetch again are named).
        let affected = store.discard(&problems).unwrap();
        assert!(affected.contains(&("org/m".to_owned(), NEW.to_owned())), "{affected:?}");
        assert!(!dir.join("refs/main").exists());
        let left = within(move || store.verify(Some("org/m")).unwrap());
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn hashing_refuses_a_blob_that_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let file = RemoteFile { path: "zero".into(), size: 0, etag: "0".repeat(40) };
        let err = within(move || hash_file(&zero, &file)).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
