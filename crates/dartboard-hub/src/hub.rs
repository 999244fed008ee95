//! [`ModelHub`]: the one entry point callers need. A name is looked up in our cache,
//! then in the standard Hugging Face cache, and downloaded only when neither has it
//! and offline mode is off.

use std::path::PathBuf;

use crate::progress::Progress;
use crate::remote::HubConfig;
use crate::{HubError, ModelFiles, ModelRef, ModelStore};

/// Model lookup and download with the environment's settings.
#[derive(Debug, Clone)]
pub struct ModelHub {
    store: ModelStore,
    /// Other caches that are read but never written (the Hugging Face cache).
    read_only: Vec<ModelStore>,
    config: HubConfig,
}

impl ModelHub {
    /// A hub over the cache at `root`, with `HF_*` settings and the Hugging Face
    /// cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`)
    /// as a read-only fallback.
    pub fn from_env(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let read_only = hf_cache_dir(|k| std::env::var_os(k).map(PathBuf::from), dirs_home())
            .filter(|dir| *dir != root)
            .map(ModelStore::new)
            .into_iter()
            .collect();
        ModelHub { store: ModelStore::new(root), read_only, config: HubConfig::from_env() }
    }

    /// A hub with explicit settings and no fallback cache (for tests).
    pub fn new(root: impl Into<PathBuf>, config: HubConfig) -> Self {
        ModelHub { store: ModelStore::new(root), read_only: Vec::new(), config }
    }

    /// Adds a cache that is read but never written.
    pub fn with_read_only_cache(mut self, root: impl Into<PathBuf>) -> Self {
        self.read_only.push(ModelStore::new(root));
        self
    }

    /// The writable cache.
    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    /// The Hub settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The files of a model: a directory as is; a cached name from the cache;
    /// anything else downloaded first (unless offline).
    pub fn resolve(&self, model: &ModelRef, progress: &dyn Progress) -> Result<ModelFiles, HubError> {
        let ModelRef::Hub { repo_id, revision } = model else {
            return self.store.resolve(model);
        };
        match self.cached(model)? {
            Some(files) => Ok(files),
            None if self.config.offline => Err(self.not_cached(repo_id, revision)),
            None => self.store.download(&self.config, repo_id, revision, progress),
        }
    }

    /// Downloads (or refreshes) a model for later offline use. When offline, a
    /// cached copy is accepted and a missing one is an error.
    pub fn prefetch(&self, model: &ModelRef, progress: &dyn Progress) -> Result<ModelFiles, HubError> {
        let ModelRef::Hub { repo_id, revision } = model else {
            return Err(HubError::InvalidReference {
                reference: model.to_string(),
                reason: "prefetch takes a Hub name such as org/name, not a directory".to_owned(),
            });
        };
        if self.config.offline {
            return self.cached(model)?.ok_or_else(|| self.not_cached(repo_id, revision));
        }
        self.store.download(&self.config, repo_id, revision, progress)
    }

    /// A complete cached copy, if there is one. An incomplete snapshot (an
    /// interrupted download) counts as absent, so it is completed rather than
    /// refused. A snapshot in the Hugging Face cache only counts when it is a
    /// sentence-transformers model (has `modules.json`): `transformers` fills that
    /// cache with the bare checkpoint, which would load with the wrong pooling.
    pub(crate) fn cached(&self, model: &ModelRef) -> Result<Option<ModelFiles>, HubError> {
        match self.store.resolve(model) {
            Ok(files) => return Ok(Some(files)),
            Err(HubError::NotCached { .. } | HubError::MissingFiles { .. }) => {}
            Err(e) => return Err(e),
        }
        for store in &self.read_only {
            match store.resolve(model) {
                Ok(files) if files.path("modules.json").is_file() => return Ok(Some(files)),
                Ok(_) | Err(HubError::NotCached { .. } | HubError::MissingFiles { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    pub(crate) fn not_cached(&self, repo_id: &str, revision: &str) -> HubError {
        HubError::NotCached {
            repo_id: repo_id.to_owned(),
            revision: revision.to_owned(),
            root: self.store.root().to_path_buf(),
            offline: self.config.offline,
        }
    }
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Where huggingface_hub keeps its cache.
pub(crate) fn hf_cache_dir(var: impl Fn(&str) -> Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    let nonempty = |k: &str| var(k).filter(|p| !p.as_os_str().is_empty());
    nonempty("HF_HUB_CACHE")
        .or_else(|| nonempty("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| nonempty("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|x| x.join("huggingface").join("hub")))
        .or_else(|| home.map(|h| h.join(".cache").join("huggingface").join("hub")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_cache_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| PathBuf::from(v))
        };
        let home = Some(PathBuf::from("/home/u"));
        assert_eq!(hf_cache_dir(env(&[]), home.clone()), Some(PathBuf::from("/home/u/.cache/huggingface/hub")));
        assert_eq!(hf_cache_dir(env(&[("HF_HOME", "/hf")]), home.clone()), Some(PathBuf::from("/hf/hub")));
        assert_eq!(hf_cache_dir(env(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]), home), Some(PathBuf::from("/c")));
    }
}
