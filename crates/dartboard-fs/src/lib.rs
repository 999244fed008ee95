//! File access that every dartboard-rs layer shares, so that no reader can be made to
//! hang or to read without end, and no writer creates files another user cannot read.
//!
//! Brief overview:
//! - [`open_regular`] opens a file for reading and refuses anything that is not a
//!   regular file (a FIFO, a device such as `/dev/zero`, a socket, a directory),
//!   without blocking on a FIFO that has no writer. Symlinks are followed: what
//!   counts is what they point to.
//! - [`read_capped`] and [`read_to_string_capped`] read a whole regular file of at
//!   most `max` bytes; [`limits`] holds the caps the project uses.
//! - [`temp_file_in`] creates a temporary file that gets the user's umask (0644 under
//!   022) once it is renamed into place, where `tempfile` alone would leave 0600.
//!
//! Errors name the path and say what is wrong; the OS text is the error's source,
//! never repeated in its own message, so `{:#}` prints it once.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("config.json");
//! std::fs::write(&path, "{}").unwrap();
//! assert_eq!(dartboard_fs::read_to_string_capped(&path, 16).unwrap(), "{}");
//! assert!(dartboard_fs::read_to_string_capped(&path, 1).is_err());
//! assert!(dartboard_fs::read_capped(dir.path(), 16).is_err()); // a directory
//! ```
#![deny(missing_docs)]

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Size caps for the files the project reads whole. Model weights are not read whole
/// and have none.
pub mod limits {
    /// `config.json`, `modules.json`, a pooling config and the other small JSON files
    /// of a model (the largest real ones are a few KB).
    pub const MODEL_JSON: u64 = 16 << 20;
    /// `tokenizer.json` and the other tokenizer files (the largest real ones, e.g.
    /// Gemma's, are ~35 MB).
    pub const TOKENIZER: u64 = 512 << 20;
    /// A `refs/<name>` file of the cache: one 40-character commit hash.
    pub const REF: u64 = 1024;
    /// `dartboard.toml` and similar settings files.
    pub const SETTINGS: u64 = 1 << 20;
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The OS refused or failed; the source says why.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The path is a FIFO, a device, a socket or a directory.
    #[error("{} is {kind}, not a regular file; point it at a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead ("a FIFO", "a character device", ...).
        kind: &'static str,
    },
    /// The file is larger than the cap for its kind.
    #[error("{} is larger than the {max} bytes allowed for this file; it is not a file of the expected kind", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
}

impl FsError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Io { path, .. } | FsError::NotRegular { path, .. } | FsError::TooLarge { path, .. } => path,
        }
    }
}

/// What a file that is not regular is, in words.
fn kind_of(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Opens `path` for reading if it is a regular file (after following symlinks).
///
/// `O_NONBLOCK` makes opening a FIFO return at once instead of waiting for a writer;
/// the type is then checked on the open file itself, so nothing can swap the path in
/// between.
pub fn open_regular(path: &Path) -> Result<File, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| FsError::Io { path: path.to_owned(), source })?;
    let meta = file.metadata().map_err(|source| FsError::Io { path: path.to_owned(), source })?;
    match kind_of(meta.file_type()) {
        None => Ok(file),
        Some(kind) => Err(FsError::NotRegular { path: path.to_owned(), kind }),
    }
}

/// Checks, without opening it, that `path` is a regular file (symlinks followed).
pub fn check_regular(path: &Path) -> Result<std::fs::Metadata, FsError> {
    let meta = std::fs::metadata(path).map_err(|source| FsError::Io { path: path.to_owned(), source })?;
    match kind_of(meta.file_type()) {
        None => Ok(meta),
        Some(kind) => Err(FsError::NotRegular { path: path.to_owned(), kind }),
    }
}

/// Reads the whole of a regular file of at most `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, FsError> {
    let file = open_regular(path)?;
    let io_err = |source| FsError::Io { path: path.to_owned(), source };
    let len = file.metadata().map_err(io_err)?.len();
    if len > max {
        return Err(FsError::TooLarge { path: path.to_owned(), max });
    }
    // The file may grow between the size check and the read: never read past the cap.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > max {
        return Err(FsError::TooLarge { path: path.to_owned(), max });
    }
    Ok(bytes)
}

/// Reads a regular UTF-8 text file of at most `max` bytes.
pub fn read_to_string_capped(path: &Path, max: u64) -> Result<String, FsError> {
    let bytes = read_capped(path, max)?;
    String::from_utf8(bytes).map_err(|e| FsError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")),
    })
}

/// A temporary file in `dir` whose mode follows the user's umask (0666 & !umask, so
/// 0644 under 022), as a file made by any other CLI would. Rename it into place with
/// `persist` when it is complete.
pub fn temp_file_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    // The mode given to open(2) is masked by the umask, which is what we want.
    tempfile::Builder::new().prefix(".tmp").permissions(Permissions::from_mode(0o666)).tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = read_capped(&fifo, 100).unwrap_err();
        assert!(matches!(err, FsError::NotRegular { kind: "a FIFO", .. }), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_capped(&link, 100).unwrap_err();
        assert!(matches!(err, FsError::NotRegular { kind: "a character device", .. }), "{err}");
        assert!(matches!(check_regular(&link), Err(FsError::NotRegular { .. })));

        let err = read_capped(dir.path(), 100).unwrap_err();
        assert!(matches!(err, FsError::NotRegular { kind: "a directory", .. }), "{err}");
    }

    #[test]
    fn caps_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_capped(&path, 5).unwrap(), b"12345");
        assert!(matches!(read_capped(&path, 4), Err(FsError::TooLarge { max: 4, .. })));
        let missing = read_capped(&dir.path().join("nope"), 5).unwrap_err();
        assert!(matches!(&missing, FsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
        // The OS text is the source, not part of the message.
        assert!(!missing.to_string().contains("No such file"), "{missing}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_to_string_capped(&path, 5).is_err());
    }

    #[test]
    fn temp_files_follow_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_file_in(dir.path()).unwrap();
        let target = dir.path().join("out");
        tmp.persist(&target).unwrap();
        // std::fs::write creates with 0666 masked by the umask, as every CLI does.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target), mode(&plain));
        assert_ne!(mode(&target), 0o600, "tempfile's own default would be 0600");
    }
}
