use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::download::BlobHasher;
use crate::remote::RemoteFile;
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
    /// else what `refs/<revision>` records. A ref that is not a small regular file (a
    /// FIFO, a link to `/dev/zero`) is an error naming it, never read without end.
    pub(crate) fn commit_for(&self, repo_dir: &Path, revision: &str) -> Result<Option<String>, HubError> {
        if is_commit_hash(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
            return Ok(Some(revision.to_owned()));
        }
        let ref_file = repo_dir.join("refs").join(revision);
        match read_ref(&ref_file) {
            Ok(commit) => Ok(Some(commit).filter(|c| is_commit_hash(c))),
            Err(dartboard_fs::FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Places the files of `src` into the cache as `repo_id` at `commit`, and points
    /// `refs/<ref_name>` at it. Blobs are written under a temporary name, synced and
    /// renamed, so a crash never leaves a partial file visible.
    pub fn import_dir(&self, src: &Path, repo_id: &str, commit: &str, ref_name: &str) -> Result<ModelFiles, HubError> {
        self.import_dir_at(src, repo_id, commit, Some(ref_name))
    }

    /// [`ModelStore::import_dir`], with the ref optional: without one the snapshot is
    /// reachable by its commit only (`ORG/NAME@<commit>`), as when huggingface_hub
    /// downloads a commit.
    ///
    /// Every entry of `src` must be a regular file, a directory, or a symbolic link to
    /// a regular file (a hub-layout snapshot is made of links into `../../blobs`, so
    /// links are followed wherever they lead). Links to directories are refused, since
    /// one could loop (`self -> .`) or copy what is not the model, and so are FIFOs,
    /// devices, sockets and dangling links: each is an error naming it, before anything
    /// is written. Files are created under the user's umask, as huggingface_hub does.
    pub fn import_dir_at(
        &self,
        src: &Path,
        repo_id: &str,
        commit: &str,
        ref_name: Option<&str>,
    ) -> Result<ModelFiles, HubError> {
        // The name first: `../../evil` is a bad name, whatever is on disk.
        let model = ModelRef::parse_hub(repo_id)?;
        let (Some(repo_id), false) = (model.repo_id(), repo_id.contains('@')) else {
            return Err(HubError::InvalidReference {
                reference: repo_id.to_owned(),
                reason: "import needs a Hub name such as org/name, without @REVISION (the revision is given apart)"
                    .to_owned(),
            });
        };
        if !is_commit_hash(commit) {
            return Err(HubError::InvalidReference {
                reference: commit.to_owned(),
                reason: "a snapshot revision must be a 40-character commit hash".to_owned(),
            });
        }
        if let Some(ref_name) = ref_name {
            // Validate the ref the same way user-given revisions are validated.
            ModelRef::parse_hub(&format!("{repo_id}@{ref_name}"))?;
        }
        if !src.is_dir() {
            return Err(HubError::NoSuchDirectory { path: src.to_path_buf() });
        }
        let relatives = list_files(src)?;
        ModelFiles::open(src, None, None)?;

        let repo_dir = self.repo_dir(repo_id);
        let blobs = repo_dir.join("blobs");
        let snapshot = repo_dir.join("snapshots").join(commit);
        create_dir_all(&blobs)?;
        for relative in relatives {
            let file = src.join(&relative);
            let size = dartboard_fs::check_regular(&file)?.len();
            let etag = if is_lfs(&relative, size) { sha256_file(&file)? } else { git_blob_sha1(&file)? };
            let blob = blobs.join(&etag);
            if !blob.is_file() {
                copy_atomic(
                    &file,
                    &blob,
                    &RemoteFile { path: relative.to_string_lossy().into_owned(), size, etag: etag.clone() },
                )?;
            }
            link_into_snapshot(&snapshot, &relative, &etag)?;
        }
        if let Some(ref_name) = ref_name {
            write_atomic(&repo_dir.join("refs").join(ref_name), commit.as_bytes())?;
        }
        ModelFiles::open(snapshot, Some(repo_id.to_owned()), Some(commit.to_owned()))
    }
}

/// Reads a `refs/<name>` file: a small regular file holding a commit hash.
pub(crate) fn read_ref(path: &Path) -> Result<String, dartboard_fs::FsError> {
    Ok(dartboard_fs::read_to_string_capped(path, dartboard_fs::limits::REF)?.trim().to_owned())
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

/// Every file under `src` (relative paths, sorted), refusing what cannot be imported;
/// see [`ModelStore::import_dir_at`].
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
            // The entry itself, not what a link points to: links are judged below.
            let file_type = entry.file_type().map_err(HubError::io("reading", &path))?;
            if file_type.is_dir() {
                stack.push(relative.join(&name));
                continue;
            }
            if file_type.is_symlink() && fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                return Err(HubError::CannotImport {
                    path,
                    reason: "it is a symbolic link to a directory, which is not followed (it could loop or lead \
                             outside the model); put the directory itself in its place"
                        .to_owned(),
                });
            }
            match dartboard_fs::check_regular(&path) {
                Ok(_) => out.push(relative.join(&name)),
                Err(dartboard_fs::FsError::NotRegular { kind, .. }) => {
                    return Err(HubError::CannotImport {
                        path,
                        reason: format!(
                            "it is {}{kind}, not a regular file; remove it or put the file it stands for in its place",
                            if file_type.is_symlink() { "a symbolic link to " } else { "" }
                        ),
                    })
                }
                Err(dartboard_fs::FsError::Io { source, .. }) if file_type.is_symlink() => {
                    return Err(HubError::Io { action: "following the symbolic link", path, source })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `from` to `to` through a temporary file, hashing what is copied: the blob
/// gets its name only if the bytes written hash to it (the file may have changed
/// since it was hashed). The file gets the user's umask, as huggingface_hub's do.
pub(crate) fn copy_atomic(from: &Path, to: &Path, expected: &RemoteFile) -> Result<(), HubError> {
    use std::io::Read as _;
    let dir = to.parent().expect("blob paths have a parent");
    let mut src = dartboard_fs::open_regular(from)?;
    let mut tmp = dartboard_fs::temp_file_in(dir).map_err(HubError::io("creating a temporary file in", dir))?;
    let mut hasher = BlobHasher::new(expected);
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(HubError::io("reading", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copied += n as u64;
        tmp.write_all(&buf[..n]).map_err(HubError::io("writing", tmp.path()))?;
    }
    let actual = hasher.finish();
    if actual != expected.etag || copied != expected.size {
        return Err(HubError::HashMismatch {
            path: from.to_path_buf(),
            algorithm: if expected.is_lfs() { "sha256" } else { "git-sha1" },
            expected: expected.etag.clone(),
            actual: format!("{actual} ({copied} bytes; it changed while it was imported, import again)"),
        });
    }
    tmp.as_file().sync_all().map_err(HubError::io("syncing", tmp.path()))?;
    tmp.persist(to).map_err(|e| HubError::Io { action: "renaming into", path: to.to_path_buf(), source: e.error })?;
    Ok(())
}

/// Writes a small file (a ref) atomically, under the user's umask.
pub(crate) fn write_atomic(to: &Path, contents: &[u8]) -> Result<(), HubError> {
    let dir = to.parent().expect("ref paths have a parent");
    create_dir_all(dir)?;
    let mut tmp = dartboard_fs::temp_file_in(dir).map_err(HubError::io("creating a temporary file in", dir))?;
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
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const COMMIT: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";

    pub(crate) fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
    }

    /// Runs `f`, failing the test (instead of hanging it) if it does not return in time:
    /// what these tests guard against is a read that never ends.
    pub(crate) fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("hung: a special file was read or waited on")
    }

    pub(crate) use crate::error::error_chain as chain;

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

    #[test]
    fn import_refuses_directory_links_and_special_files_by_name() {
        let cache = tempfile::tempdir().unwrap();
        let store = ModelStore::new(cache.path());
        let import = |src: &Path| {
            let src = src.to_path_buf();
            let store = store.clone();
            within(move || store.import_dir(&src, "org/name", COMMIT, "main"))
        };

        // A loop: never followed, named.
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        std::os::unix::fs::symlink(".", src.path().join("self")).unwrap();
        let err = import(src.path()).unwrap_err();
        assert!(matches!(err, HubError::CannotImport { .. }), "{err}");
        assert!(err.to_string().contains("self") && err.to_string().contains("directory"), "{err}");
        assert!(content_commit(src.path()).is_err());

        // A link to a directory elsewhere.
        let src = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fake_model(src.path());
        std::os::unix::fs::symlink(elsewhere.path(), src.path().join("extra")).unwrap();
        let err = import(src.path()).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");

        // A FIFO, a link to a device, a dangling link: each named.
        for (name, make) in [
            ("pipe", &(|p: &Path| mkfifo(p)) as &dyn Fn(&Path)),
            ("zero", &|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
            ("dangling", &|p: &Path| std::os::unix::fs::symlink("no-such-file", p).unwrap()),
        ] {
            let src = tempfile::tempdir().unwrap();
            fake_model(src.path());
            make(&src.path().join("1_Pooling").join(name));
            let err = import(src.path()).unwrap_err();
            assert!(chain(&err).contains(name), "{name}: {}", chain(&err));
            if name != "dangling" {
                assert!(matches!(err, HubError::CannotImport { .. }), "{err}");
                assert!(err.to_string().contains("not a regular file"), "{err}");
            }
        }
        assert!(!cache.path().join("models--org--name").join("refs").exists(), "nothing was imported");

        // A link to a regular file is followed: a hub-layout snapshot is made of them.
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        fs::rename(src.path().join("config.json"), src.path().join("real-config")).unwrap();
        std::os::unix::fs::symlink("real-config", src.path().join("config.json")).unwrap();
        let files = import(src.path()).unwrap();
        assert_eq!(fs::read_to_string(files.path("config.json")).unwrap(), "{}");
    }

    #[test]
    fn import_validates_the_name_before_the_directory() {
        let store = ModelStore::new(tempfile::tempdir().unwrap().path());
        let absent = Path::new("/no/such/model/dir");
        for name in ["../../evil", "org/name@v1"] {
            let err = store.import_dir(absent, name, COMMIT, "main").unwrap_err();
            assert!(matches!(err, HubError::InvalidReference { .. }), "{name}: {err}");
        }
        let err = store.import_dir(absent, "org/name", COMMIT, "main").unwrap_err();
        assert!(matches!(err, HubError::NoSuchDirectory { .. }), "{err}");
    }

    #[test]
    fn imported_files_follow_the_umask() {
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        let cache = tempfile::tempdir().unwrap();
        let store = ModelStore::new(cache.path());
        store.import_dir(src.path(), "org/name", COMMIT, "main").unwrap();
        // std::fs::write creates with 0666 masked by the umask, as huggingface_hub does.
        let plain = cache.path().join("plain");
        fs::write(&plain, b"").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let repo = cache.path().join("models--org--name");
        let mut checked = vec![repo.join("refs/main")];
        checked.extend(fs::read_dir(repo.join("blobs")).unwrap().map(|e| e.unwrap().path()));
        for path in checked {
            assert_eq!(mode(&path), mode(&plain), "{}", path.display());
        }
        assert_ne!(mode(&plain), 0o600, "the test needs a umask that lets group or others read (022 is usual)");
    }

    #[test]
    fn a_ref_that_is_not_a_small_regular_file_is_an_error_naming_it() {
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        let cache = tempfile::tempdir().unwrap();
        let store = ModelStore::new(cache.path());
        store.import_dir(src.path(), "org/name", COMMIT, "main").unwrap();
        let main = cache.path().join("models--org--name/refs/main");
        for make in [
            &(|p: &Path| mkfifo(p)) as &dyn Fn(&Path),
            &|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            &|p: &Path| fs::write(p, vec![b'a'; 4096]).unwrap(),
        ] {
            fs::remove_file(&main).unwrap();
            make(&main);
            let store = store.clone();
            let err = within(move || store.resolve(&ModelRef::parse("org/name").unwrap())).unwrap_err();
            assert!(matches!(err, HubError::File(_)), "{err}");
            assert!(err.to_string().contains(&main.display().to_string()), "{err}");
        }
    }

    #[test]
    fn io_errors_print_the_os_text_once() {
        let src = tempfile::tempdir().unwrap();
        fake_model(src.path());
        // A cache root under a regular file: creating directories there fails.
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = ModelStore::new(file.path().join("cache")).import_dir(src.path(), "org/name", COMMIT, "main");
        let err = err.unwrap_err();
        assert!(matches!(err, HubError::Io { .. }), "{err}");
        let os_text = std::io::Error::from_raw_os_error(libc::ENOTDIR).to_string();
        let os_text = os_text.split(" (os error").next().unwrap();
        assert_eq!(chain(&err).matches(os_text).count(), 1, "{}", chain(&err));
        assert!(err.to_string().contains(&file.path().display().to_string()), "{err}");
    }
}
