//! The two hashes the Hub identifies files by: sha256 for LFS files and the git blob
//! sha1 for everything else. The cache names blobs after them.

use std::fs::File;
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
    let len = std::fs::metadata(path).map_err(HubError::io("reading", path))?.len();
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    stream(path, |chunk| hasher.update(chunk))?;
    Ok(hex::encode(hasher.finalize()))
}

fn stream(path: &Path, mut sink: impl FnMut(&[u8])) -> Result<(), HubError> {
    let mut file = File::open(path).map_err(HubError::io("reading", path))?;
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
}
