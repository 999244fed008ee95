//! Downloading a revision into the cache, with what `hf-hub` leaves to us: every
//! file verified against the Hub's hash before it becomes visible, resume after a cut
//! connection, file locks between processes, and a disk-space check.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use crate::progress::Progress;
use crate::remote::{HubConfig, Remote, RemoteFile, StreamError};
use crate::store::{create_dir_all, link_into_snapshot, write_atomic};
use crate::{HubError, ModelFiles, ModelStore};

/// Whether sentence-transformers needs a file. Everything small (configs, tokenizer
/// files, module folders) is taken; weights only in the preferred format; other
/// frameworks' exports never.
pub fn is_wanted(path: &str, all: &[RemoteFile]) -> bool {
    const OTHER_FORMATS: &[&str] =
        &[".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".tflite", ".pb", ".ckpt", ".mlmodel"];
    const OTHER_DIRS: &[&str] = &["onnx/", "openvino/", "coreml/", "tf/", "flax/"];
    if OTHER_DIRS.iter().any(|d| path.starts_with(d) || path.contains(&format!("/{d}"))) {
        return false;
    }
    if OTHER_FORMATS.iter().any(|ext| path.ends_with(ext)) {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.starts_with("pytorch_model") && name.ends_with(".bin") || name == "pytorch_model.bin.index.json" {
        // A .bin only where the same folder has no safetensors weights.
        let dir = &path[..path.len() - name.len()];
        return !all.iter().any(|f| {
            f.path.starts_with(dir) && !f.path[dir.len()..].contains('/') && f.path.ends_with(".safetensors")
        });
    }
    true
}

/// A path from the Hub becomes a path on disk: it must stay inside the snapshot.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

impl ModelStore {
    /// Downloads `repo_id` at `revision` into the cache (files already there are
    /// kept) and points `refs/<revision>` at the commit.
    pub fn download(
        &self,
        config: &HubConfig,
        repo_id: &str,
        revision: &str,
        progress: &dyn Progress,
    ) -> Result<ModelFiles, HubError> {
        // Both end up in paths: validate them as user input, whoever the caller is.
        let parsed = crate::ModelRef::parse(&format!("{repo_id}@{revision}"))?;
        if parsed.repo_id() != Some(repo_id) {
            return Err(HubError::InvalidReference {
                reference: repo_id.to_owned(),
                reason: "download needs a full ORG/NAME repo id".to_owned(),
            });
        }
        // The network work runs on a thread of its own, which owns the client's
        // runtime: a caller inside an async runtime (a server handler, `#[tokio::main]`)
        // may neither start a runtime on its thread nor drop one there. Always doing so
        // keeps one path for every caller; a thread costs nothing next to a download.
        let span = tracing::Span::current();
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("dartboard-download".to_owned())
                .spawn_scoped(scope, || span.in_scope(|| self.download_here(config, repo_id, revision, progress)))
                .map_err(HubError::io("starting a download thread for", self.root()))?;
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn download_here(
        &self,
        config: &HubConfig,
        repo_id: &str,
        revision: &str,
        progress: &dyn Progress,
    ) -> Result<ModelFiles, HubError> {
        let remote = Remote::new(config)?;
        let (commit, listing) = remote.snapshot(repo_id, revision)?;
        if let Some(bad) = listing.iter().find(|f| !safe_relative(&f.path)) {
            return Err(HubError::NotAHub {
                endpoint: config.endpoint.clone(),
                detail: format!("unsafe file path {:?}", bad.path),
            });
        }
        let files: Vec<&RemoteFile> = listing.iter().filter(|f| is_wanted(&f.path, &listing)).collect();
        tracing::info!(repo = repo_id, revision, commit = %commit, files = files.len(), "downloading");

        let repo_dir = self.repo_dir(repo_id);
        let blobs = repo_dir.join("blobs");
        create_dir_all(&blobs)?;
        let needed: u64 = files
            .iter()
            .filter(|f| !blobs.join(&f.etag).is_file())
            .map(|f| f.size.saturating_sub(partial_len(&blobs, f)))
            .sum();
        let available = fs4::available_space(&blobs).unwrap_or(u64::MAX);
        if needed > available {
            return Err(HubError::DiskFull { dir: self.root().to_path_buf(), needed, available });
        }

        let snapshot = repo_dir.join("snapshots").join(&commit);
        for file in files {
            self.fetch_blob(&remote, repo_id, &commit, file, progress)?;
            link_into_snapshot(&snapshot, Path::new(&file.path), &file.etag)?;
        }
        if revision != commit {
            write_atomic(&repo_dir.join("refs").join(revision), commit.as_bytes())?;
        }
        ModelFiles::open(snapshot, Some(repo_id.to_owned()), Some(commit))
    }

    /// The lock file huggingface_hub uses for a blob, so Python and Rust processes
    /// exclude each other too.
    pub(crate) fn lock_blob(&self, repo_id: &str, etag: &str) -> Result<File, HubError> {
        let dir = self.root().join(".locks").join(self.repo_dir(repo_id).file_name().expect("repo dir has a name"));
        create_dir_all(&dir)?;
        let path = dir.join(format!("{etag}.lock"));
        // O_NONBLOCK: should a FIFO sit there, opening fails instead of waiting forever.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(HubError::io("opening lock", &path))?;
        file.lock().map_err(HubError::io("locking", &path))?;
        Ok(file)
    }

    fn fetch_blob(
        &self,
        remote: &Remote,
        repo_id: &str,
        commit: &str,
        file: &RemoteFile,
        progress: &dyn Progress,
    ) -> Result<(), HubError> {
        let blobs = self.repo_dir(repo_id).join("blobs");
        let blob = blobs.join(&file.etag);
        // Held until this function returns: another process fetching the same blob
        // waits here, then finds it done.
        let _lock = self.lock_blob(repo_id, &file.etag)?;
        if blob.is_file() {
            progress.file_finished(&file.path, true);
            return Ok(());
        }
        let partial = partial_path(&blobs, file);
        let max_attempts = remote.config().max_attempts.max(1);
        let mut failures = 0;
        let hasher = loop {
            let (mut out, mut hasher, have) = open_partial(&partial, file)?;
            progress.file_started(&file.path, file.size, have);
            if have == file.size {
                break hasher;
            }
            let mut sink = |chunk: &[u8]| -> std::io::Result<()> {
                out.write_all(chunk)?;
                hasher.update(chunk);
                progress.advanced(&file.path, chunk.len() as u64);
                Ok(())
            };
            match remote.stream(repo_id, commit, &file.path, have..file.size, &mut sink) {
                Ok(true) => {
                    let written = out.metadata().map_err(HubError::io("reading", &partial))?.len();
                    if written == file.size {
                        out.sync_all().map_err(HubError::io("syncing", &partial))?;
                        break hasher;
                    }
                    // Short or long body without an error: count it and try again.
                    failures += 1;
                    if written > file.size {
                        remove(&partial);
                    }
                }
                Ok(false) => {
                    // The server ignored Range: start again from byte 0.
                    remove(&partial);
                    failures += 1;
                }
                Err(StreamError::Write(e)) => {
                    remove(&partial);
                    return Err(write_error(e, self.root(), &partial, file.size));
                }
                Err(StreamError::Hub(e, retryable)) => {
                    failures += 1;
                    if !retryable {
                        return Err(e);
                    }
                    if failures >= max_attempts {
                        return Err(HubError::ServerError {
                            endpoint: remote.config().endpoint.clone(),
                            attempts: failures,
                            last: format!("connection lost while downloading {}: {e}", file.path),
                        });
                    }
                    tracing::warn!(file = %file.path, attempt = failures, "download interrupted; resuming");
                }
            }
            if failures >= max_attempts {
                return Err(HubError::Remote {
                    repo_id: repo_id.to_owned(),
                    message: format!("{} never arrived whole after {failures} attempts", file.path),
                });
            }
            std::thread::sleep(remote.backoff(failures));
        };
        let actual = hasher.finish();
        if actual != file.etag {
            remove(&partial);
            return Err(HubError::HashMismatch {
                path: PathBuf::from(format!("{repo_id}/{}", file.path)),
                algorithm: if file.is_lfs() { "sha256" } else { "git-sha1" },
                expected: file.etag.clone(),
                actual,
            });
        }
        fs::rename(&partial, &blob).map_err(HubError::io("renaming into", &blob))?;
        progress.file_finished(&file.path, false);
        Ok(())
    }
}

fn partial_path(blobs: &Path, file: &RemoteFile) -> PathBuf {
    blobs.join(format!("{}.incomplete", file.etag))
}

fn partial_len(blobs: &Path, file: &RemoteFile) -> u64 {
    fs::metadata(partial_path(blobs, file)).map(|m| m.len()).unwrap_or(0)
}

fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

fn write_error(e: std::io::Error, root: &Path, partial: &Path, size: u64) -> HubError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        HubError::DiskFull { dir: root.to_path_buf(), needed: size, available: fs4::available_space(root).unwrap_or(0) }
    } else {
        HubError::Io { action: "writing", path: partial.to_path_buf(), source: e }
    }
}

/// Opens (or creates) the partial file for appending, with the hash state of what
/// it already holds, so a resumed download is verified as a whole.
fn open_partial(partial: &Path, file: &RemoteFile) -> Result<(File, BlobHasher, u64), HubError> {
    let mut hasher = BlobHasher::new(file);
    // Anything but a regular file there (a FIFO would block the open below, a link
    // could point anywhere) is not a download of ours: start afresh.
    let regular = fs::symlink_metadata(partial).ok().filter(|m| m.file_type().is_file());
    let mut have = regular.as_ref().map_or(0, |m| m.len());
    if regular.is_none() || have > file.size {
        remove(partial);
        have = 0;
    }
    if have > 0 {
        let mut existing = dartboard_fs::open_regular(partial)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = existing.read(&mut buf).map_err(HubError::io("reading", partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let out = OpenOptions::new().create(true).append(true).open(partial).map_err(HubError::io("creating", partial))?;
    Ok((out, hasher, have))
}

/// The hash a blob is named by: sha256 for LFS files, git blob sha1 otherwise.
pub(crate) enum BlobHasher {
    Sha256(sha2::Sha256),
    GitSha1(sha1::Sha1),
}

impl BlobHasher {
    pub(crate) fn new(file: &RemoteFile) -> Self {
        if file.is_lfs() {
            BlobHasher::Sha256(sha2::Sha256::new())
        } else {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {}\0", file.size).as_bytes());
            BlobHasher::GitSha1(h)
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            BlobHasher::Sha256(h) => h.update(bytes),
            BlobHasher::GitSha1(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> String {
        match self {
            BlobHasher::Sha256(h) => hex::encode(h.finalize()),
            BlobHasher::GitSha1(h) => hex::encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> RemoteFile {
        RemoteFile { path: path.to_owned(), size: 1, etag: "0".repeat(40) }
    }

    #[test]
    fn selects_what_sentence_transformers_needs() {
        let all: Vec<RemoteFile> = [
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tokenizer.json",
            "modules.json",
            "1_Pooling/config.json",
            "2_Dense/pytorch_model.bin",
            "onnx/model.onnx",
            "openvino/openvino_model.xml",
            "tf_model.h5",
            "flax_model.msgpack",
            "rust_model.ot",
            "README.md",
        ]
        .into_iter()
        .map(f)
        .collect();
        let wanted: Vec<&str> = all.iter().filter(|x| is_wanted(&x.path, &all)).map(|x| x.path.as_str()).collect();
        assert_eq!(
            wanted,
            [
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "modules.json",
                "1_Pooling/config.json",
                "2_Dense/pytorch_model.bin",
                "README.md"
            ]
        );
    }

    #[test]
    fn hub_paths_must_stay_inside() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", ""] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert!(safe_relative("1_Pooling/config.json"));
    }
}
