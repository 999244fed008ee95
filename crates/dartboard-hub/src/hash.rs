//! The two hashes the Hub identifies files by: sha256 for LFS files and the git blob
//! sha1 for everything else. The cache names blobs after them.

use std::io::Read;
use std::path::Path;

use sha1::Digest as _;

use crate::HubError;

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut hasher = sha2::Sha256::new();
    stream(path, |chunk| hasher.update(chunk))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Hex git blob sha1 of a file: sha1 over `blob <len>\0` followed by the content,
/// which is what the Hub sends as the ETag of a non-LFS file.
pub fn git_blob_sha1(path: &Path) -> Result<String, HubError> {
    let mut file = dartboard_fs::open_regular(path)?;
    let len = file.metadata().map_err(HubError::io("reading", path))?.len();
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    // The length is part of the hash: a file that grows while it is read must not
    // hash to a name its content does not have.
    let mut read = 0u64;
    stream_file(path, &mut file, |chunk| {
        read += chunk.len() as u64;
        hasher.update(chunk)
    })?;
    if read != len {
        return Err(HubError::Io {
            action: "hashing",
            path: path.to_owned(),
            source: std::io::Error::other(format!("the file changed size while it was read ({len} then {read} bytes)")),
        });
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Streams a regular file (a FIFO or a device is refused, never read without end).
fn stream(path: &Path, sink: impl FnMut(&[u8])) -> Result<(), HubError> {
    let mut file = dartboard_fs::open_regular(path)?;
    stream_file(path, &mut file, sink)
}

fn stream_file(path: &Path, file: &mut std::fs::File, mut sink: impl FnMut(&[u8])) -> Result<(), HubError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(HubError::io("reading", path))?;
        if n == 0 {
            return Ok(());
        }
        sink(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_sha1_matches_git() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello\n").unwrap();
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(git_blob_sha1(&path).unwrap(), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(sha256_file(&path).unwrap(), "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    }

    #[test]
    fn special_files_are_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for result in [sha256_file(&zero), git_blob_sha1(&zero)] {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("not a regular file") && err.to_string().contains("zero"), "{err}");
        }
    }
}
