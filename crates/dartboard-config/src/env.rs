//! The environment layer, read from an explicit map so tests never mutate the
//! process environment (which is shared by every test thread).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{ConfigError, DType, DeviceSpec, Overrides, CONFIG_FILE_NAME};

/// A snapshot of the environment variables and working directory that configuration
/// depends on.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Env {
    /// Captures the process environment, working directory and home directory.
    pub fn from_process() -> Result<Self, ConfigError> {
        let mut vars = BTreeMap::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if !is_relevant(key) {
                continue;
            }
            let value =
                value.into_string().map_err(|v| ConfigError::invalid(key, &v.to_string_lossy(), "valid UTF-8"))?;
            vars.insert(key.to_owned(), value);
        }
        Ok(Env { vars, cwd: std::env::current_dir().ok(), home: dirs::home_dir() })
    }

    /// Builds an environment from pairs, with no working directory and no home
    /// directory unless set with [`Env::with_cwd`] / [`Env::with_home`].
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let vars = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Env { vars, cwd: None, home: Some(PathBuf::from("/home/user")) }
    }

    /// Sets the directory searched for `dartboard.toml`.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets the home directory used for the default cache location.
    pub fn with_home(mut self, home: Option<PathBuf>) -> Self {
        self.home = home;
        self
    }

    /// A variable's value; empty values count as unset, as docker-compose files
    /// often write `EMBEDDING_DIM=` to mean "not set".
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub(crate) fn config_file(&self) -> Result<Option<PathBuf>, ConfigError> {
        if let Some(path) = self.get("DARTBOARD_CONFIG") {
            let path = PathBuf::from(path);
            let path = match (&self.cwd, path.is_relative()) {
                (Some(cwd), true) => cwd.join(path),
                _ => path,
            };
            if std::fs::metadata(&path).is_err() {
                return Err(ConfigError::ConfigFileMissing { path });
            }
            return Ok(Some(path));
        }
        // A dartboard.toml that exists in any form is used (and refused if it is not a
        // regular file), never skipped as if absent.
        Ok(self.cwd.as_ref().map(|cwd| cwd.join(CONFIG_FILE_NAME)).filter(|p| std::fs::symlink_metadata(p).is_ok()))
    }

    /// The environment's values. A variable whose key an explicit value already
    /// sets is not even parsed: `--device cpu` must work whatever EMBEDDING_DEVICE says.
    pub(crate) fn layer(&self, explicit: &Overrides) -> Result<Overrides, ConfigError> {
        let model = self.get("EMBEDDING_MODEL").or_else(|| self.get("EMBEDDING_MODEL_NAME")).map(str::to_owned);
        let device = self.parse(
            explicit.device.is_none(),
            "EMBEDDING_DEVICE",
            |v| v.parse::<DeviceSpec>().ok(),
            DeviceSpec::EXPECTED,
        )?;
        let dtype =
            self.parse(explicit.dtype.is_none(), "EMBEDDING_DTYPE", |v| v.parse::<DType>().ok(), DType::EXPECTED)?;
        let embedding_dim =
            self.parse(explicit.embedding_dim.is_none(), "EMBEDDING_DIM", parse_positive, POSITIVE_DIM)?;
        let batch_size =
            self.parse(explicit.batch_size.is_none(), "EMBEDDING_BATCH_SIZE", parse_positive, "a positive integer")?;
        let cache_dir = self.get("SENTENCE_TRANSFORMERS_HOME").map(PathBuf::from);
        Ok(Overrides { model, device, embedding_dim, batch_size, dtype, cache_dir })
    }

    fn parse<T>(
        &self,
        wanted: bool,
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .filter(|_| wanted)
            .map(|v| parse(v).ok_or_else(|| ConfigError::invalid(key, v, expected)))
            .transpose()
    }

    /// `SENTENCE_TRANSFORMERS_HOME` is handled as a layer; this is the fallback that
    /// mirrors where sentence-transformers 2.x put models (torch hub's directory).
    pub(crate) fn default_cache_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(torch_home) = self.get("TORCH_HOME") {
            return Ok(PathBuf::from(torch_home).join("sentence_transformers"));
        }
        if let Some(xdg) = self.get("XDG_CACHE_HOME") {
            return Ok(PathBuf::from(xdg).join("torch").join("sentence_transformers"));
        }
        match &self.home {
            Some(home) => Ok(home.join(".cache").join("torch").join("sentence_transformers")),
            None => Err(ConfigError::NoCacheDir),
        }
    }
}

const POSITIVE_DIM: &str = "a positive integer such as 384 (or unset it to use the model's own dimension)";

fn parse_positive(v: &str) -> Option<usize> {
    v.parse::<usize>().ok().filter(|n| *n > 0)
}

fn is_relevant(key: &str) -> bool {
    key.starts_with("EMBEDDING_")
        || matches!(key, "DARTBOARD_CONFIG" | "SENTENCE_TRANSFORMERS_HOME" | "TORCH_HOME" | "XDG_CACHE_HOME")
}
