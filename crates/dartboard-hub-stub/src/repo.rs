//! The repos the stub serves: files per commit, branches and tags, and the commits
//! the upload endpoints apply to a branch.
//!
//! [`StubRepo`]'s public fields keep their first meaning (tests build repos with them):
//! `commit` and `files` are the `main` branch, every name in `refs` is a branch and,
//! with `tags`, points at `commit` unless a commit has since moved `main` past it (then
//! the private `heads` remembers where it stayed, and `history` keeps its files).

use std::collections::BTreeMap;
use std::sync::Arc;

use sha1::Digest as _;

/// One file of a served repo.
#[derive(Clone)]
pub struct StubFile {
    /// Path inside the repo.
    pub path: String,
    /// Content.
    pub bytes: Arc<Vec<u8>>,
    /// Whether the Hub would store it in LFS (then it is served through the redirect).
    pub lfs: bool,
}

impl StubFile {
    /// Git blob sha1 (the ETag of a regular file, the `blobId` of every file).
    pub fn git_sha1(&self) -> String {
        git_sha1(&self.bytes)
    }

    /// sha256 of the content (the ETag of an LFS file).
    pub fn sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.bytes.as_slice()))
    }

    /// What the Hub reports as the file's ETag.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }
}

pub(crate) fn git_sha1(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

/// Extensions the Hub's default `.gitattributes` stores in LFS.
const LFS_EXTENSIONS: &[&str] = &[
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "ftz",
    "gz",
    "h5",
    "joblib",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "wasm",
    "xz",
    "zip",
    "zst",
];

/// The Hub stores files of this size or more in LFS whatever their name.
pub(crate) const LFS_MIN_SIZE: u64 = 10 * 1024 * 1024;

/// Whether the Hub's default `.gitattributes` (or its size rule) puts `path` in LFS.
pub(crate) fn gitattributes_lfs(path: &str, size: u64) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    size >= LFS_MIN_SIZE
        || name.rsplit_once('.').is_some_and(|(_, ext)| LFS_EXTENSIONS.contains(&ext))
        || name.contains(".lfs.")
        || name.contains(".tar.")
        || name.contains("tfevents")
        || path.starts_with("saved_model/")
}

/// The `.gitattributes` the Hub puts in a new repo's first commit.
pub(crate) fn default_gitattributes() -> String {
    let mut text: String =
        LFS_EXTENSIONS.iter().map(|e| format!("*.{e} filter=lfs diff=lfs merge=lfs -text\n")).collect();
    for pattern in ["*.lfs.*", "*.tar.*", "*tfevents*", "saved_model/**/*"] {
        text.push_str(&format!("{pattern} filter=lfs diff=lfs merge=lfs -text\n"));
    }
    text
}

/// A served model repo.
#[derive(Clone)]
pub struct StubRepo {
    /// `org/name`.
    pub id: String,
    /// The commit `main` points to (and every ref not moved since).
    pub commit: String,
    /// Branches (`main` at least).
    pub refs: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The files of `commit`.
    pub files: Vec<StubFile>,
    /// Requires `Authorization: Bearer <token>`; without it, answers 401/403 GatedRepo.
    pub gated_token: Option<String>,
    /// Readable only with a token registered with `HubStub::add_token`.
    pub private: bool,
    /// Refs (other than `main`) that do not point at `commit`.
    heads: BTreeMap<String, String>,
    /// The files of commits other than `commit` that a ref or a client may still name.
    history: BTreeMap<String, Vec<StubFile>>,
}

/// One successful commit (`POST /api/models/{repo}/commit/{branch}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubCommit {
    /// `org/name`.
    pub repo: String,
    /// The branch it moved.
    pub branch: String,
    /// The new commit id.
    pub oid: String,
    /// The commit message (the header's `summary`).
    pub summary: String,
    /// Paths added or replaced, in the order sent (deletions are not listed).
    pub paths: Vec<String>,
}

/// One change a commit makes.
pub(crate) enum Change {
    Put(StubFile),
    DeleteFile(String),
    DeleteFolder(String),
}

impl StubRepo {
    /// A repo with the given files on `main`, LFS decided by extension and size as
    /// the Hub's default `.gitattributes` does.
    pub fn new(id: &str, commit: &str, files: Vec<(String, Vec<u8>)>) -> Self {
        let files = files
            .into_iter()
            .map(|(path, bytes)| {
                let lfs = gitattributes_lfs(&path, bytes.len() as u64);
                StubFile { path, bytes: Arc::new(bytes), lfs }
            })
            .collect();
        StubRepo {
            id: id.to_owned(),
            commit: commit.to_owned(),
            refs: vec!["main".to_owned()],
            tags: Vec::new(),
            files,
            gated_token: None,
            private: false,
            heads: BTreeMap::new(),
            history: BTreeMap::new(),
        }
    }

    /// Reads every file under `dir` (recursively) into a repo.
    pub fn from_dir(id: &str, commit: &str, dir: &std::path::Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        files.sort();
        Ok(Self::new(id, commit, files))
    }

    pub(crate) fn is_branch(&self, rev: &str) -> bool {
        self.refs.iter().any(|r| r == rev)
    }

    pub(crate) fn is_tag(&self, rev: &str) -> bool {
        self.tags.iter().any(|r| r == rev)
    }

    /// The commit a branch, tag or commit id names, and its files.
    pub(crate) fn lookup(&self, rev: &str) -> Option<(&str, &[StubFile])> {
        let commit = if self.is_branch(rev) || self.is_tag(rev) {
            self.heads.get(rev).map_or(self.commit.as_str(), String::as_str)
        } else {
            rev
        };
        if commit == self.commit {
            Some((self.commit.as_str(), self.files.as_slice()))
        } else {
            self.history.get_key_value(commit).map(|(c, files)| (c.as_str(), files.as_slice()))
        }
    }

    /// Every file of every commit kept (LFS bodies are served by hash from any of them).
    pub(crate) fn all_files(&self) -> impl Iterator<Item = &StubFile> {
        self.files.iter().chain(self.history.values().flatten())
    }

    /// Adds a branch or a tag at `commit` (which `lookup` resolved).
    pub(crate) fn add_ref(&mut self, name: &str, commit: &str, tag: bool) {
        if tag {
            self.tags.push(name.to_owned());
        } else {
            self.refs.push(name.to_owned());
        }
        if commit != self.commit {
            self.heads.insert(name.to_owned(), commit.to_owned());
        }
    }

    /// Applies `changes` on top of `branch` (which must exist) as commit `oid`.
    pub(crate) fn apply(&mut self, branch: &str, oid: &str, changes: Vec<Change>) {
        let Some((_, parent_files)) = self.lookup(branch) else { return };
        let mut files = parent_files.to_vec();
        for change in changes {
            match change {
                Change::Put(file) => match files.iter_mut().find(|f| f.path == file.path) {
                    Some(old) => *old = file,
                    None => files.push(file),
                },
                Change::DeleteFile(path) => files.retain(|f| f.path != path),
                Change::DeleteFolder(dir) => {
                    let prefix = format!("{}/", dir.trim_end_matches('/'));
                    files.retain(|f| !f.path.starts_with(&prefix));
                }
            }
        }
        if branch == "main" {
            // Every other ref still on the old head stays there.
            let old = self.commit.clone();
            for name in self.refs.iter().chain(&self.tags).filter(|r| *r != "main") {
                self.heads.entry(name.clone()).or_insert_with(|| old.clone());
            }
            let old_files = std::mem::replace(&mut self.files, files);
            self.history.insert(old, old_files);
            self.commit = oid.to_owned();
        } else {
            self.history.insert(oid.to_owned(), files);
            self.heads.insert(branch.to_owned(), oid.to_owned());
        }
    }
}

fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &str, bytes: &[u8]) -> Change {
        Change::Put(StubFile { path: path.into(), bytes: Arc::new(bytes.to_vec()), lfs: false })
    }

    fn paths_at(repo: &StubRepo, rev: &str) -> Vec<String> {
        repo.lookup(rev).map(|(_, files)| files.iter().map(|f| f.path.clone()).collect()).unwrap_or_default()
    }

    #[test]
    fn commits_move_only_their_branch() {
        let mut repo = StubRepo::new("org/r", "c0", vec![("a".into(), b"1".to_vec())]);
        repo.add_ref("dev", "c0", false);
        repo.add_ref("v1", "c0", true);
        repo.apply("main", "c1", vec![put("b", b"2")]);
        repo.apply("dev", "c2", vec![Change::DeleteFile("a".into()), put("d/x", b"3")]);
        assert_eq!(repo.lookup("main").map(|(c, _)| c), Some("c1"));
        assert_eq!(paths_at(&repo, "main"), ["a", "b"]);
        assert_eq!(paths_at(&repo, "v1"), ["a"]);
        assert_eq!(repo.lookup("v1").map(|(c, _)| c), Some("c0"));
        assert_eq!(paths_at(&repo, "dev"), ["d/x"]);
        assert_eq!(paths_at(&repo, "c0"), ["a"]);
        assert!(repo.lookup("nope").is_none());
        repo.apply("dev", "c3", vec![Change::DeleteFolder("d".into())]);
        assert!(paths_at(&repo, "dev").is_empty());
    }

    #[test]
    fn lfs_rules_follow_the_default_gitattributes() {
        assert!(gitattributes_lfs("model.safetensors", 1));
        assert!(gitattributes_lfs("onnx/model.onnx", 1));
        assert!(gitattributes_lfs("runs/events.out.tfevents.1", 1));
        assert!(gitattributes_lfs("config.json", LFS_MIN_SIZE));
        assert!(!gitattributes_lfs("config.json", LFS_MIN_SIZE - 1));
        assert!(!gitattributes_lfs("bin/readme.txt", 1));
        assert!(default_gitattributes().contains("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"));
    }
}
