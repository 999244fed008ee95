use std::path::{Path, PathBuf};

use crate::HubError;

/// Weight files in the order they are preferred: safetensors loads without pickle.
pub const WEIGHT_FILES: &[&str] = &["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];

/// A directory that holds a complete sentence-transformers / transformers model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    dir: PathBuf,
    repo_id: Option<String>,
    revision: Option<String>,
}

impl ModelFiles {
    /// Checks that `dir` holds what a model needs and wraps it.
    pub fn open(dir: impl Into<PathBuf>, repo_id: Option<String>, revision: Option<String>) -> Result<Self, HubError> {
        let dir = dir.into();
        let mut missing: Vec<String> = ["config.json", "tokenizer.json"]
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .map(str::to_owned)
            .collect();
        if !WEIGHT_FILES.iter().any(|f| dir.join(f).is_file()) {
            missing.push("model.safetensors (or pytorch_model.bin)".to_owned());
        }
        if missing.is_empty() {
            Ok(ModelFiles { dir, repo_id, revision })
        } else {
            Err(HubError::MissingFiles { dir, missing })
        }
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
