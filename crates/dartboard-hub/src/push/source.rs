//! What a push sends: the files of a folder (or of a cached snapshot, whose entries
//! are links into `blobs/`), each read once to hash it, and a fingerprint of each
//! taken then, so that a file that changes before the commit is caught.

use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use crate::HubError;

/// Bytes of each file the Hub's preupload endpoint wants as a sample.
const SAMPLE: usize = 512;

/// Folders huggingface_hub never uploads (its `FORBIDDEN_FOLDERS`: the Hub refuses
/// paths under them), skipped at any depth: a fine-tuning run's checkout or cache is
/// not part of the model.
const SKIPPED_FOLDERS: &[&str] = &[".git", ".cache"];

/// Entries of nested folders followed at most; a real model has a handful.
const MAX_DEPTH: usize = 32;

/// One file to push.
#[derive(Debug)]
pub(crate) struct LocalFile {
    /// The path in the repo (`/`-separated).
    pub(crate) path_in_repo: String,
    /// Where it is on disk (links are followed when it is opened).
    pub(crate) disk: PathBuf,
    /// Its size when it was listed.
    pub(crate) size: u64,
    /// Its first bytes, for preupload.
    pub(crate) sample: Vec<u8>,
    /// Its identity and state when it was listed.
    pub(crate) fingerprint: Fingerprint,
}

/// What identifies a file's content without reading it: device, inode, size,
/// modification and change times. A write changes the size or the times (ctime
/// cannot be set back by `touch`), a replacement by rename changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    pub(crate) fn of(meta: &Metadata) -> Self {
        Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// What differs, in words, or `None` when nothing does.
    fn change(&self, now: &Fingerprint) -> Option<String> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            Some("it was replaced by another file".to_owned())
        } else if self.size != now.size {
            Some(format!("its size went from {} to {} bytes", self.size, now.size))
        } else if self.mtime != now.mtime || self.ctime != now.ctime {
            Some("it was written to".to_owned())
        } else {
            None
        }
    }
}

impl LocalFile {
    /// Errors unless the file on disk is still as it was listed.
    pub(crate) fn check_unchanged(&self) -> Result<(), HubError> {
        let meta = fs::metadata(&self.disk).map_err(|e| HubError::FileChanged {
            path: self.disk.clone(),
            detail: format!("it can no longer be read: {e}"),
        })?;
        self.compare(&meta)
    }

    /// Opens the file and checks the handle against the fingerprint: reading from it
    /// then reads the content that was listed (a rename over the path since cannot
    /// slip other bytes in), unless it is written to in place, which
    /// [`Self::check_unchanged`] sees afterwards.
    pub(crate) fn open_unchanged(&self) -> Result<fs::File, HubError> {
        let file = dartboard_fs::open_regular(&self.disk)?;
        self.compare(&file.metadata().map_err(HubError::io("reading", &self.disk))?)?;
        Ok(file)
    }

    fn compare(&self, meta: &Metadata) -> Result<(), HubError> {
        match self.fingerprint.change(&Fingerprint::of(meta)) {
            None => Ok(()),
            Some(detail) => Err(HubError::FileChanged { path: self.disk.clone(), detail }),
        }
    }

    /// Reads the file once: the whole content with its git blob sha1 for a regular
    /// file (the commit carries it), or only the sha256 for an LFS file (its bytes
    /// are streamed from disk when uploaded). The file must be as it was listed, before
    /// and after the read, and hold exactly the bytes listed.
    pub(crate) fn hash(&self, lfs: bool) -> Result<Content, HubError> {
        let mut file = self.open_unchanged()?;
        let mut sha256 = sha2::Sha256::new();
        let mut git_sha1 = sha1::Sha1::new();
        git_sha1.update(format!("blob {}\0", self.size).as_bytes());
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        // One byte more than listed is enough to see that it grew.
        let mut limited = (&mut file).take(self.size.saturating_add(1));
        loop {
            let n = limited.read(&mut buf).map_err(HubError::io("reading", &self.disk))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if lfs {
                sha256.update(&buf[..n]);
            } else {
                git_sha1.update(&buf[..n]);
                bytes.extend_from_slice(&buf[..n]);
            }
        }
        if read != self.size {
            return Err(HubError::FileChanged {
                path: self.disk.clone(),
                detail: format!(
                    "{} bytes were listed, {read}{} read",
                    self.size,
                    if read > self.size { "+" } else { "" }
                ),
            });
        }
        let after = file.metadata().map_err(HubError::io("reading", &self.disk))?;
        self.compare(&after)?;
        Ok(if lfs {
            Content::Lfs { sha256: hex::encode(sha256.finalize()) }
        } else {
            Content::Regular { git_sha1: hex::encode(git_sha1.finalize()), bytes }
        })
    }
}

/// A file's content as the commit refers to it.
pub(crate) enum Content {
    /// Sent inline in the commit.
    Regular { git_sha1: String, bytes: Vec<u8> },
    /// Uploaded through Git LFS; the commit names it by sha256.
    Lfs { sha256: String },
}

impl Content {
    /// The hash the Hub lists the file by: git blob sha1, or sha256 for LFS.
    pub(crate) fn oid(&self) -> &str {
        match self {
            Content::Regular { git_sha1, .. } => git_sha1,
            Content::Lfs { sha256 } => sha256,
        }
    }
}

/// Every file under `root`, sorted by path in the repo, with its size, sample and
/// fingerprint. `.git/` and `.cache/` are skipped. Links to regular files are followed
/// (a cached snapshot is made of them); links to directories, FIFOs, devices, sockets
/// and dangling links are errors naming the entry, found before anything is sent.
pub(crate) fn list(root: &Path) -> Result<Vec<LocalFile>, HubError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(HubError::io("listing", &dir))? {
            let entry = entry.map_err(HubError::io("listing", &dir))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(cannot(&path, "its name is not UTF-8, and Hub paths are; rename it"));
            };
            if SKIPPED_FOLDERS.contains(&name.as_str()) {
                continue;
            }
            let in_repo = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let link = fs::symlink_metadata(&path).map_err(HubError::io("reading", &path))?;
            if link.is_dir() {
                if depth + 1 >= MAX_DEPTH {
                    return Err(cannot(&path, "folders nest too deep for a model; push the model's own folder"));
                }
                stack.push((path, in_repo, depth + 1));
                continue;
            }
            let target = match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(_) if link.file_type().is_symlink() => {
                    return Err(cannot(&path, "it is a link to nothing (dangling); remove it or restore its target"))
                }
                Err(e) => return Err(HubError::Io { action: "reading", path, source: e }),
            };
            if target.is_dir() {
                return Err(cannot(
                    &path,
                    "it is a link to a directory, which is not followed (it could loop); copy the directory in instead",
                ));
            }
            if !target.is_file() {
                return Err(cannot(&path, "it is not a regular file (a FIFO, device or socket); remove it"));
            }
            out.push(listed(path, in_repo)?);
        }
    }
    out.sort_by(|a, b| a.path_in_repo.cmp(&b.path_in_repo));
    Ok(out)
}

/// The files that are links resolving out of `root`, with where they lead.
pub(crate) fn links_out_of<'a>(root: &Path, files: &'a [LocalFile]) -> Vec<(&'a LocalFile, PathBuf)> {
    let Ok(root) = fs::canonicalize(root) else { return Vec::new() };
    files
        .iter()
        .filter_map(|f| Some((f, fs::canonicalize(&f.disk).ok()?)))
        .filter(|(_, target)| !target.starts_with(&root))
        .collect()
}

fn listed(disk: PathBuf, path_in_repo: String) -> Result<LocalFile, HubError> {
    let file = dartboard_fs::open_regular(&disk)?;
    let meta = file.metadata().map_err(HubError::io("reading", &disk))?;
    let mut sample = Vec::with_capacity(SAMPLE);
    // No more than the size: a file that claims 0 bytes but reads more (/proc's) must
    // not send what it reads to the server; its hashing then refuses it.
    file.take(meta.len().min(SAMPLE as u64)).read_to_end(&mut sample).map_err(HubError::io("reading", &disk))?;
    Ok(LocalFile { path_in_repo, size: meta.len(), sample, fingerprint: Fingerprint::of(&meta), disk })
}

fn cannot(path: &Path, reason: &str) -> HubError {
    HubError::CannotPush { path: path.to_path_buf(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_follows_file_links_and_skips_git_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("1_Pooling")).unwrap();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::create_dir_all(root.join("sub/.cache/huggingface")).unwrap();
        fs::write(root.join("config.json"), "{}").unwrap();
        fs::write(root.join("1_Pooling/config.json"), "{\"a\": 1}").unwrap();
        fs::write(root.join(".git/HEAD"), "ref").unwrap();
        fs::write(root.join("sub/.cache/huggingface/x.lock"), "").unwrap();
        fs::write(root.join("blob"), vec![7u8; 2000]).unwrap();
        std::os::unix::fs::symlink("blob", root.join("model.safetensors")).unwrap();
        let files = list(root).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path_in_repo.as_str()).collect();
        assert_eq!(paths, ["1_Pooling/config.json", "blob", "config.json", "model.safetensors"]);
        let weights = &files[3];
        assert_eq!((weights.size, weights.sample.len()), (2000, SAMPLE));
        let Content::Lfs { sha256 } = weights.hash(true).unwrap() else { panic!("lfs") };
        assert_eq!(sha256, crate::sha256_file(&root.join("blob")).unwrap());
        let Content::Regular { git_sha1, bytes } = files[2].hash(false).unwrap() else { panic!("regular") };
        assert_eq!((git_sha1, bytes), (crate::git_blob_sha1(&root.join("config.json")).unwrap(), b"{}".to_vec()));
    }

    #[test]
    fn directory_links_and_special_files_are_refused_by_name() {
        for (name, make) in [
            ("loop", &(|p: &Path| std::os::unix::fs::symlink(".", p).unwrap()) as &dyn Fn(&Path)),
            ("dangling", &|p: &Path| std::os::unix::fs::symlink("nothing-here", p).unwrap()),
            ("zero", &|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("config.json"), "{}").unwrap();
            make(&dir.path().join(name));
            let err = list(dir.path()).unwrap_err();
            assert!(matches!(err, HubError::CannotPush { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn a_file_that_changes_after_listing_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        fs::write(&path, vec![1u8; 4096]).unwrap();
        let files = list(dir.path()).unwrap();
        files[0].check_unchanged().unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"more").unwrap();
        for err in [files[0].check_unchanged().unwrap_err(), files[0].hash(true).err().unwrap()] {
            assert!(matches!(err, HubError::FileChanged { .. }), "{err}");
            assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("4100"), "{err}");
        }
    }

    #[test]
    fn a_file_that_reads_more_than_its_size_sends_no_sample_and_is_refused() {
        // /proc files list 0 bytes and read more: none of it may reach the server.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("environ")).unwrap();
        let files = list(dir.path()).unwrap();
        assert_eq!((files[0].size, files[0].sample.len()), (0, 0));
        let err = files[0].hash(false).err().unwrap();
        assert!(matches!(err, HubError::FileChanged { .. }), "{err}");
    }

    #[test]
    fn a_file_replaced_by_rename_cannot_be_opened_for_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        fs::write(&path, vec![1u8; 100]).unwrap();
        let files = list(dir.path()).unwrap();
        files[0].open_unchanged().unwrap();
        fs::write(dir.path().join("new"), vec![2u8; 100]).unwrap();
        fs::rename(dir.path().join("new"), &path).unwrap();
        let err = files[0].open_unchanged().unwrap_err();
        assert!(err.to_string().contains("replaced by another file"), "{err}");
    }

    #[test]
    fn links_out_of_the_folder_are_found() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("weights"), b"w").unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), b"{}").unwrap();
        fs::write(dir.path().join("inside"), b"i").unwrap();
        std::os::unix::fs::symlink("inside", dir.path().join("link-in")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("weights"), dir.path().join("link-out")).unwrap();
        let files = list(dir.path()).unwrap();
        let out: Vec<&str> = links_out_of(dir.path(), &files).iter().map(|(f, _)| f.path_in_repo.as_str()).collect();
        assert_eq!(out, ["link-out"]);
    }
}
