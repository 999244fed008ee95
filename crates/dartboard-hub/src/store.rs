use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{git_blob_sha1, sha256_file, HubError, ModelFiles, ModelRef};

/// The model cache: a directory in the Hugging Face hub cache layout.
///
/// ```text
/// ROOT/models--ORG--NAME/
///   blobs/<etag>                      file contents, named by sha256 (LFS) or git sha1
///   refs/<branch-or-tag>              the commit hash the ref points to
///   snapshots/<commit>/<path>         relative symlinks into ../../blobs
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// A store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelStore { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one repo: `models--ORG--NAME`.
    pub fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.root.join(format!("models--{}", repo_id.replace('/', "--")))
    }

    /// Finds the files of a model: a local directory as is, a Hub name in the cache.
    pub fn resolve(&self, model: &ModelRef) -> Result<ModelFiles, HubError> {
        match model {
            ModelRef::Local(dir) => ModelFiles::open(dir, None, None),
            ModelRef::Hub { repo_id, revision } => self.resolve_cached(repo_id, revision),
        }
    }

    fn resolve_cached(&self, repo_id: &str, revision: &str) -> Result<ModelFiles, HubError> {
        let repo_dir = self.repo_dir(repo_id);
        if let Some(commit) = self.commit_for(&repo_dir, revision)? {
            let snapshot = repo_dir.join("snapshots").join(&commit);
            if snapshot.is_dir() {
                return ModelFiles::open(snapshot, Some(repo_id.to_owned()), Some(commit));
            }
        }
        // sentence-transformers 2.x stored models flat, as ORG_NAME, without revisions.
        let legacy = self.root.join(repo_id.replace('/', "_"));
        if revision == "main" && legacy.is_dir() {
            return ModelFiles::open(legacy, Some(repo_id.to_owned()), None);
        }
        Err(HubError::NotCached {
            repo_id: repo_id.to_owned(),
            revision: revision.to_owned(),
            root: self.root.clone(),
            offline: false,
        })
    }

    /// The commit a revision names: itself if it is a commit hash with a snapshot,
    /// else what `refs/<revision>` records.
    fn commit_for(&self, repo_dir: &Path, revision: &str) -> Result<Option<String>, HubError> {
        if is_commit_hash(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
            return Ok(Some(revision.to_owned()));
        }
        let ref_file = repo_dir.join("refs").join(revision);
        match fs::read_to_string(&ref_file) {
            Ok(commit) if is_commit_hash(commit.trim()) => Ok(Some(commit.trim().to_owned())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HubError::Io { action: "reading", path: ref_file, source: e }),
        }
    }

    /// Places the files of `src` into the cache as `repo_id` at `commit`, and points
    /// `refs/<ref_name>` at it. Blobs are written under a temporary name, synced and
    /// renamed, so a crash never leaves a partial file visible.
    pub fn import_dir(&self, src: &Path, repo_id: &str, commit: &str, ref_name: &str) -> Result<ModelFiles, HubError> {
        let model = ModelRef::parse(repo_id)?;
        let Some(repo_id) = model.repo_id() else {
            return Err(HubError::InvalidReference {
                reference: repo_id.to_owned(),
                reason: "import needs a Hub name such as org/name".to_owned(),
            });
        };
        if !is_commit_hash(commit) {
            return Err(HubError::InvalidReference {
                reference: commit.to_owned(),
                reason: "a snapshot revision must be a 40-character commit hash".to_owned(),
            });
        }
        // Validate the ref the same way user-given revisions are validated.
        ModelRef::parse(&format!("{repo_id}@{ref_name}"))?;
        ModelFiles::open(src, None, None)?;

        let repo_dir = self.repo_dir(repo_id);
        let blobs = repo_dir.join("blobs");
        let snapshot = repo_dir.join("snapshots").join(commit);
        create_dir_all(&blobs)?;
        for relative in list_files(src)? {
            let file = src.join(&relative);
            let size = fs::metadata(&file).map_err(HubError::io("reading", &file))?.len();
            let etag = if is_lfs(&relative, size) { sha256_file(&file)? } else { git_blob_sha1(&file)? };
            let blob = blobs.join(&etag);
            if !blob.is_file() {
                copy_atomic(&file, &blob)?;
            }
            link_into_snapshot(&snapshot, &relative, &etag)?;
        }
        write_atomic(&repo_dir.join("refs").join(ref_name), commit.as_bytes())?;
        ModelFiles::open(snapshot, Some(repo_id.to_owned()), Some(commit.to_owned()))
    }
}

/// A stand-in commit id for a directory that has none (an imported fine-tuned
/// model): the sha1 of its files' paths and hashes, so the same content always gets
/// the same id.
pub fn content_commit(dir: &Path) -> Result<String, HubError> {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    for relative in list_files(dir)? {
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(git_blob_sha1(&dir.join(&relative))?.as_bytes());
        hasher.update([b'\n']);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A full 40-hex-digit git commit id.
pub(crate) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the Hub would store this file in LFS: the patterns of the Hub's default
/// `.gitattributes` for the file types models ship, or anything of 10 MiB or more.
fn is_lfs(relative: &Path, size: u64) -> bool {
    const LFS_SUFFIXES: &[&str] = &[
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ot",
        ".onnx",
        ".h5",
        ".msgpack",
        ".model",
        ".pb",
        ".tflite",
        ".npy",
        ".npz",
        ".gz",
        ".zip",
        ".tar",
        ".arrow",
        ".parquet",
        ".joblib",
    ];
    let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    size >= 10 * 1024 * 1024 || LFS_SUFFIXES.iter().any(|s| name.ends_with(s))
}

pub(crate) fn create_dir_all(dir: &Path) -> Result<(), HubError> {
    fs::create_dir_all(dir).map_err(HubError::io("creating directory", dir))
}

fn list_files(src: &Path) -> Result<Vec<PathBuf>, HubError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = src.join(&relative);
        for entry in fs::read_dir(&dir).map_err(HubError::io("listing", &dir))? {
            let entry = entry.map_err(HubError::io("listing", &dir))?;
            let name = entry.file_name();
            if name == ".git" || name == "__pycache__" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(relative.join(&name));
            } else if path.is_file() {
                out.push(relative.join(&name));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn copy_atomic(from: &Path, to: &Path) -> Result<(), HubError> {
    let dir = to.parent().expect("blob paths have a parent");
    let mut tmp = tempfile::Builder::new()
        .prefix(".import-")
        .suffix(".incomplete")
        .tempfile_in(dir)
        .map_err(HubError::io("creating a temporary file in", dir))?;
    let mut src = fs::File::open(from).map_err(HubError::io("reading", from))?;
    std::io::copy(&mut src, tmp.as_file_mut()).map_err(HubError::io("writing", tmp.path()))?;
    tmp.as_file().sync_all().map_err(HubError::io("syncing", tmp.path()))?;
    tmp.persist(to).map_err(|e| HubError::Io { action: "renaming into", path: to.to_path_buf(), source: e.error })?;
    Ok(())
}

pub(crate) fn write_atomic(to: &Path, contents: &[u8]) -> Result<(), HubError> {
    let dir = to.parent().expect("ref paths have a parent");
    create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(HubError::io("creating a temporary file in", dir))?;
    tmp.write_all(contents).map_err(HubError::io("writing", tmp.path()))?;
    tmp.as_file().sync_all().map_err(HubError::io("syncing", tmp.path()))?;
    tmp.persist(to).map_err(|e| HubError::Io { action: "renaming into", path: to.to_path_buf(), source: e.error })?;
    Ok(())
}

/// `snapshots/<commit>/<relative>` becomes a relative symlink to `blobs/<etag>`, as
/// huggingface_hub makes them, so the cache can be moved as a whole.
pub(crate) fn link_into_snapshot(snapshot: &Path, relative: &Path, etag: &str) -> Result<(), HubError> {
    let link = snapshot.join(relative);
    let parent = link.parent().expect("snapshot entries have a parent");
    create_dir_all(parent)?;
    let depth = relative.components().count() + 1; // up to snapshots/<commit>, then to the repo dir
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    if fs::read_link(&link).is_ok_and(|existing| existing == target) {
        return Ok(());
    }
    // Unique per process and call: concurrent prefetches link the same files.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{etag}.{}.{n}.link", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(&target, &tmp).map_err(HubError::io("linking", &tmp))?;
    fs::rename(&tmp, &link).map_err(HubError::io("renaming into", &link))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // Without symlink rights, copying keeps the cache usable (huggingface_hub does the same).
    let resolved = link.parent().expect("link has a parent").join(target);
    fs::copy(resolved, link).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";

    fn fake_model(dir: &Path) {
        fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        fs::write(dir.join("config.json"), "{}").unwrap();
        fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        fs::write(dir.join("model.safetensors"), b"weights").unwrap();
        fs::write(dir.join("1_Pooling/config.json"), "{\"pooling_mode_mean_tokens\": true}").unwrap();
    }

    #[test]
    fn import_then_resolve_in_hub_layout() {
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        let cache = tempfile::tempdir().unwrap();
        let store = ModelStore::new(cache.path());
        let files = store.import_dir(src.path(), "sentence-transformers/all-MiniLM-L6-v2", COMMIT, "main").unwrap();

        let repo = cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2");
        assert_eq!(files.dir(), repo.join("snapshots").join(COMMIT));
        assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
        let sha = sha256_file(&src.path().join("model.safetensors")).unwrap();
        assert_eq!(fs::read_link(files.path("model.safetensors")).unwrap(), Path::new("../../blobs").join(&sha));
        let nested = fs::read_link(files.path("1_Pooling/config.json")).unwrap();
        assert!(nested.starts_with("../../../blobs"), "{}", nested.display());
        assert_eq!(
            fs::read_to_string(files.path("1_Pooling/config.json")).unwrap(),
            "{\"pooling_mode_mean_tokens\": true}"
        );
        let leftovers: Vec<_> = fs::read_dir(repo.join("blobs"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("incomplete"))
            .collect();
        assert!(leftovers.is_empty());

        for reference in
            ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", &format!("all-MiniLM-L6-v2@{COMMIT}")]
        {
            let resolved = store.resolve(&ModelRef::parse(reference).unwrap()).unwrap();
            assert_eq!(resolved.dir(), files.dir());
            assert_eq!(resolved.revision(), Some(COMMIT));
        }
        // Importing again is a no-op that succeeds.
        store.import_dir(src.path(), "sentence-transformers/all-MiniLM-L6-v2", COMMIT, "main").unwrap();
    }

    #[test]
    fn missing_models_and_files_are_named() {
        let cache = tempfile::tempdir().unwrap();
        let store = ModelStore::new(cache.path());
        let err = store.resolve(&ModelRef::parse("org/absent").unwrap()).unwrap_err().to_string();
        assert!(err.contains("org/absent") && err.contains("not in the cache"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = store.resolve(&ModelRef::Local(dir.path().into())).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn legacy_flat_layout_is_read() {
        let cache = tempfile::tempdir().unwrap();
        fake_model(&cache.path().join("sentence-transformers_all-MiniLM-L6-v2"));
        let files = ModelStore::new(cache.path()).resolve(&ModelRef::parse("all-MiniLM-L6-v2").unwrap()).unwrap();
        assert!(files.dir().ends_with("sentence-transformers_all-MiniLM-L6-v2"));
    }

    #[test]
    fn import_rejects_bad_names() {
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        let store = ModelStore::new(tempfile::tempdir().unwrap().path());
        assert!(store.import_dir(src.path(), "../evil", COMMIT, "main").is_err());
        assert!(store.import_dir(src.path(), "org/name", "notacommit", "main").is_err());
        assert!(store.import_dir(src.path(), "org/name", COMMIT, "../x").is_err());
    }
}
