use std::fmt;
use std::path::{Path, PathBuf};

use crate::HubError;

/// What the user asked for: a local directory or a Hub repo at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A directory on disk, used as is.
    Local(PathBuf),
    /// A Hub repository.
    Hub {
        /// `org/name`; a bare name has already been expanded to `sentence-transformers/name`.
        repo_id: String,
        /// Branch, tag or commit; `main` when none was given.
        revision: String,
    },
}

impl ModelRef {
    /// Parses a reference. Existing directories win over names, as in
    /// sentence-transformers; anything that looks like a path but is not a directory
    /// is an error rather than a Hub lookup.
    pub fn parse(reference: &str) -> Result<Self, HubError> {
        let trimmed = reference.trim();
        let path = Path::new(trimmed);
        if !trimmed.is_empty() && path.is_dir() {
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        if looks_like_path(trimmed) {
            if path.exists() {
                return Err(invalid(reference, "this path exists but is not a directory; pass the model's directory"));
            }
            return Err(HubError::NoSuchDirectory { path: path.to_path_buf() });
        }
        Self::parse_hub(reference)
    }

    /// Parses a Hub name (`NAME`, `ORG/NAME`, optionally `@REVISION`) without looking
    /// at the file system: for commands that only ever take a cached model (`cache rm`,
    /// `cache verify`, the name given to `cache import --as`), where a directory of the
    /// same name in the current directory means nothing.
    pub fn parse_hub(reference: &str) -> Result<Self, HubError> {
        let trimmed = reference.trim();
        let (name, revision) = match trimmed.split_once('@') {
            Some((name, rev)) => (name, rev),
            None => (trimmed, "main"),
        };
        validate_name(reference, name)?;
        validate_revision(reference, revision)?;
        Ok(ModelRef::Hub { repo_id: dartboard_config::canonical_repo_id(name), revision: revision.to_owned() })
    }

    /// Parses a Hub reference with an optional separate revision (a `--revision`
    /// flag); naming the revision twice is an error.
    pub fn parse_with_revision(reference: &str, revision: Option<&str>) -> Result<Self, HubError> {
        match revision {
            Some(_) if reference.contains('@') => {
                Err(invalid(reference, "it already names a revision after '@'; drop --revision or the @REVISION"))
            }
            Some(rev) => Self::parse(&format!("{reference}@{rev}")),
            None => Self::parse(reference),
        }
    }

    /// The Hub repo id, if this is a Hub reference.
    pub fn repo_id(&self) -> Option<&str> {
        match self {
            ModelRef::Hub { repo_id, .. } => Some(repo_id),
            ModelRef::Local(_) => None,
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Local(path) => write!(f, "{}", path.display()),
            ModelRef::Hub { repo_id, revision } if revision == "main" => f.write_str(repo_id),
            ModelRef::Hub { repo_id, revision } => write!(f, "{repo_id}@{revision}"),
        }
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with('~')
        || s == "."
        || s == ".."
        || s.contains('\\')
}

fn invalid(reference: &str, reason: &str) -> HubError {
    HubError::InvalidReference { reference: reference.to_owned(), reason: reason.to_owned() }
}

/// Hub rules, which also guarantee the name cannot leave the cache directory:
/// one or two segments of `[A-Za-z0-9._-]`, no segment starting with `.` or `-`,
/// no `--` (the cache uses it as the separator) and no `..`.
fn validate_name(reference: &str, name: &str) -> Result<(), HubError> {
    const RULE: &str = "expected NAME or ORG/NAME made of letters, digits, '-', '_' and '.' (or an existing directory)";
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > 2 || name.contains("..") || name.contains("--") {
        return Err(invalid(reference, RULE));
    }
    for segment in segments {
        let ok = !segment.is_empty()
            && segment.len() <= 96
            && !segment.starts_with(['.', '-'])
            && segment.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(invalid(reference, RULE));
        }
    }
    Ok(())
}

/// Revisions become file names under `refs/` (`refs/pr/1` is a real Hub ref), so
/// slashes are allowed but no segment may be empty, `.` or `..`.
fn validate_revision(reference: &str, revision: &str) -> Result<(), HubError> {
    let ok = !revision.is_empty()
        && revision.len() <= 256
        && revision.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(invalid(reference, "the revision after '@' must be a branch, tag or commit hash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo_id: &str, revision: &str) -> ModelRef {
        ModelRef::Hub { repo_id: repo_id.into(), revision: revision.into() }
    }

    #[test]
    fn names() {
        assert_eq!(ModelRef::parse("all-MiniLM-L6-v2").unwrap(), hub("sentence-transformers/all-MiniLM-L6-v2", "main"));
        assert_eq!(ModelRef::parse("BAAI/bge-small-en-v1.5").unwrap(), hub("BAAI/bge-small-en-v1.5", "main"));
        assert_eq!(ModelRef::parse("org/m@v1.0").unwrap(), hub("org/m", "v1.0"));
        assert_eq!(ModelRef::parse("org/m@refs/pr/1").unwrap(), hub("org/m", "refs/pr/1"));
    }

    #[test]
    fn hub_names_ignore_directories() {
        // A directory would win in `parse`; `parse_hub` never looks (the CLI test
        // `cache_rm_takes_a_hub_name_even_where_a_directory_has_that_name` runs it in
        // such a directory).
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().to_str().unwrap();
        assert!(matches!(ModelRef::parse_hub(s), Err(HubError::InvalidReference { .. })));
        assert_eq!(ModelRef::parse_hub("org/name@v1").unwrap(), hub("org/name", "v1"));
        assert_eq!(
            ModelRef::parse_hub("all-MiniLM-L6-v2").unwrap(),
            hub("sentence-transformers/all-MiniLM-L6-v2", "main")
        );
    }

    #[test]
    fn directories_win() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().to_str().unwrap();
        assert_eq!(ModelRef::parse(s).unwrap(), ModelRef::Local(dir.path().to_path_buf()));
    }

    #[test]
    fn escapes_are_rejected() {
        for bad in [
            "../no-such-model-dir",
            "org/..",
            "a/../b",
            "org/name/extra",
            "org/.hidden",
            "a--b",
            "",
            "org/m@../x",
            "org/m@",
            "x y",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        // Without the file system, a path is just an invalid name.
        for bad in ["../../evil", "/abs", "./x", "org/m@../x"] {
            let err = ModelRef::parse_hub(bad).unwrap_err();
            assert!(matches!(err, HubError::InvalidReference { .. }), "{bad}: {err}");
        }
        let err = ModelRef::parse("/definitely/not/here").unwrap_err();
        assert!(matches!(err, HubError::NoSuchDirectory { .. }), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = ModelRef::parse(file.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
