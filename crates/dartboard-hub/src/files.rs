//! [`ModelFiles`]: a model directory checked to hold what loading needs.
//!
//! The transformer's files (`config.json`, the tokenizer, the weights and
//! `sentence_bert_config.json`) live where `modules.json` puts the Transformer module:
//! the model root for models saved by sentence-transformers 3+, a subfolder such as
//! `0_Transformer/` for the 2.x layout. A snapshot counts as complete only when that
//! folder has them, so the hub completes an interrupted download of either layout.

use std::path::{Path, PathBuf};

use crate::HubError;

/// Weight files in the order they are preferred: safetensors loads without pickle;
/// the `.index.json` files list the shards of a sharded checkpoint.
pub const WEIGHT_FILES: &[&str] =
    &["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

/// A directory that holds a complete sentence-transformers / transformers model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    dir: PathBuf,
    transformer_dir: PathBuf,
    repo_id: Option<String>,
    revision: Option<String>,
}

impl ModelFiles {
    /// Checks that `dir` holds what a model needs and wraps it.
    pub fn open(dir: impl Into<PathBuf>, repo_id: Option<String>, revision: Option<String>) -> Result<Self, HubError> {
        let dir = dir.into();
        let transformer_dir = transformer_dir(&dir)?;
        let relative = |name: &str| match transformer_dir.strip_prefix(&dir) {
            Ok(sub) if !sub.as_os_str().is_empty() => format!("{}/{name}", sub.display()),
            _ => name.to_owned(),
        };
        let mut missing: Vec<String> = ["config.json", "tokenizer.json"]
            .into_iter()
            .filter(|f| !transformer_dir.join(f).is_file())
            .map(relative)
            .collect();
        if !WEIGHT_FILES.iter().any(|f| transformer_dir.join(f).is_file()) {
            missing.push(relative("model.safetensors (or pytorch_model.bin, or the index of a sharded checkpoint)"));
        }
        if missing.is_empty() {
            Ok(ModelFiles { dir, transformer_dir, repo_id, revision })
        } else {
            Err(HubError::MissingFiles { dir, missing })
        }
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of the Transformer module (config.json, tokenizer, weights): the
    /// model directory itself, or the subfolder `modules.json` names (`0_Transformer`
    /// in models saved by sentence-transformers 2.x).
    pub fn transformer_dir(&self) -> &Path {
        &self.transformer_dir
    }

    /// A file inside the model directory.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.dir.join(relative)
    }

    /// The Hub repo id, for models that came from the cache.
    pub fn repo_id(&self) -> Option<&str> {
        self.repo_id.as_deref()
    }

    /// The commit hash of the snapshot, for models that came from the cache.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }
}

#[derive(serde::Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Where the Transformer module's files are: the path of the first `Transformer` in
/// `modules.json`, else `dir` (no modules.json: a plain transformers checkpoint; or
/// no Transformer listed, which loading reports). Only a modules.json that is not
/// there at all counts as absent; one that cannot be read is an error, never a
/// reason to look elsewhere.
fn transformer_dir(dir: &Path) -> Result<PathBuf, HubError> {
    let path = dir.join("modules.json");
    if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(dir.to_path_buf());
    }
    let bytes = dartboard_fs::read_capped(&path, dartboard_fs::limits::MODEL_JSON)?;
    let invalid = |reason: String| HubError::Io {
        action: "reading",
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
    };
    let modules: Vec<ModuleEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("not a sentence-transformers modules list ({e})")))?;
    let Some(transformer) = modules.iter().find(|m| m.kind.rsplit('.').next() == Some("Transformer")) else {
        return Ok(dir.to_path_buf());
    };
    // The path comes from a downloaded file: it must stay inside the model.
    let relative = Path::new(&transformer.path);
    if relative.is_absolute() || transformer.path.split(['/', '\\']).any(|part| part == "..") {
        return Err(invalid(format!("module path {:?} points outside the model directory", transformer.path)));
    }
    Ok(dir.join(relative))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    const ST2_MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;

    #[test]
    fn the_transformer_files_are_looked_up_in_its_module_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", ST2_MODULES);
        write(dir.path(), "1_Pooling/config.json", "{}");
        for name in ["config.json", "tokenizer.json", "pytorch_model.bin"] {
            write(dir.path(), &format!("0_Transformer/{name}"), "{}");
        }
        let files = ModelFiles::open(dir.path(), None, None).unwrap();
        assert_eq!(files.transformer_dir(), dir.path().join("0_Transformer"));

        // The same files at the root do not make up for the module folder lacking them.
        fs::remove_file(dir.path().join("0_Transformer/tokenizer.json")).unwrap();
        write(dir.path(), "tokenizer.json", "{}");
        let err = ModelFiles::open(dir.path(), None, None).unwrap_err();
        assert!(
            matches!(&err, HubError::MissingFiles { missing, .. } if missing == &["0_Transformer/tokenizer.json"]),
            "{err}"
        );

        // Without modules.json the root is the transformer.
        let plain = tempfile::tempdir().unwrap();
        for name in ["config.json", "tokenizer.json", "model.safetensors"] {
            write(plain.path(), name, "{}");
        }
        assert_eq!(ModelFiles::open(plain.path(), None, None).unwrap().transformer_dir(), plain.path());
    }

    #[test]
    fn a_sharded_pickle_checkpoint_counts_as_weights() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", "{}");
        write(dir.path(), "tokenizer.json", "{}");
        write(dir.path(), "pytorch_model.bin.index.json", r#"{"weight_map": {}}"#);
        ModelFiles::open(dir.path(), None, None).unwrap();
        fs::remove_file(dir.path().join("pytorch_model.bin.index.json")).unwrap();
        let err = ModelFiles::open(dir.path(), None, None).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn an_unreadable_modules_json_is_an_error_not_absent() {
        for special in ["fifo", "dir", "zero", "garbage", "outside"] {
            let dir = tempfile::tempdir().unwrap();
            for name in ["config.json", "tokenizer.json", "model.safetensors"] {
                write(dir.path(), name, "{}");
            }
            let path = dir.path().join("modules.json");
            match special {
                "fifo" => {
                    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
                    // SAFETY: a valid C string; mkfifo only creates a file.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
                }
                "dir" => fs::create_dir(&path).unwrap(),
                "zero" => std::os::unix::fs::symlink("/dev/zero", &path).unwrap(),
                "garbage" => fs::write(&path, "[{").unwrap(),
                _ => fs::write(&path, r#"[{"path": "../elsewhere", "type": "x.Transformer"}]"#).unwrap(),
            }
            let err = ModelFiles::open(dir.path(), None, None).expect_err(special);
            assert!(!matches!(err, HubError::MissingFiles { .. }), "{special}: {err}");
            let chain = format!("{err} {}", std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default());
            assert!(chain.contains(path.to_str().unwrap()), "{special}: {chain}");
        }
    }

    #[test]
    fn a_complete_st2_snapshot_resolves_from_the_cache() {
        let src = tempfile::tempdir().unwrap();
        write(src.path(), "modules.json", ST2_MODULES);
        write(src.path(), "1_Pooling/config.json", "{}");
        for name in ["config.json", "tokenizer.json", "model.safetensors"] {
            write(src.path(), &format!("0_Transformer/{name}"), "{}");
        }
        let cache = tempfile::tempdir().unwrap();
        let store = crate::ModelStore::new(cache.path());
        let commit = "0123456789abcdef0123456789abcdef01234567";
        store.import_dir(src.path(), "org/old-layout", commit, "main").unwrap();
        let files = store.resolve(&crate::ModelRef::parse("org/old-layout").unwrap()).unwrap();
        assert!(files.transformer_dir().ends_with("0_Transformer"));
        assert_eq!(files.revision(), Some(commit));
    }
}
