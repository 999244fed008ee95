//! The sentence-transformers side of a model directory: `modules.json`,
//! `sentence_bert_config.json` and `1_Pooling/config.json`, read into one
//! validated [`Pipeline`]. Field names mirror the JSON keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::pooling::{Pooling, PoolingMode};
use crate::EmbedError;

/// Module types (the last segment of `type` in modules.json) this crate runs.
pub const SUPPORTED_MODULES: &[&str] = &["Transformer", "Pooling", "Normalize"];

/// What runs after tokenization, in order: encoder, pooling, optional normalization.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Directory holding the transformer's config.json, tokenizer and weights.
    pub transformer_dir: PathBuf,
    /// Token limit from sentence_bert_config.json, if given.
    pub max_seq_length: Option<usize>,
    /// Whether texts are lowercased before tokenization.
    pub do_lower_case: bool,
    /// How token embeddings become one vector.
    pub pooling: Pooling,
    /// Whether the result is L2-normalized.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

impl Pipeline {
    /// Reads the pipeline of the model in `dir`. Without modules.json the model is a
    /// plain transformers checkpoint, and sentence-transformers' fallback applies:
    /// transformer, then mean pooling, no normalization.
    pub fn read(dir: &Path) -> Result<Self, EmbedError> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(Pipeline {
                transformer_dir: dir.to_path_buf(),
                max_seq_length: None,
                do_lower_case: false,
                pooling: Pooling::new(vec![PoolingMode::Mean]),
                normalize: false,
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let mut transformer_dir = None;
        let mut pooling = None;
        let mut normalize = false;
        for module in &modules {
            let module_dir = dir.join(checked_relative(&modules_path, &module.path)?);
            match module.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" if transformer_dir.is_none() => transformer_dir = Some(module_dir),
                "Pooling" if pooling.is_none() => pooling = Some(read_pooling(&module_dir.join("config.json"))?),
                "Normalize" => normalize = true,
                _ => {
                    return Err(EmbedError::UnsupportedModule {
                        path: modules_path,
                        found: module.kind.clone(),
                        supported: SUPPORTED_MODULES,
                    })
                }
            }
        }
        let invalid = |reason: &str| EmbedError::InvalidFile { path: modules_path.clone(), reason: reason.to_owned() };
        let transformer_dir = transformer_dir.ok_or_else(|| invalid("it lists no Transformer module"))?;
        let pooling = pooling.ok_or_else(|| invalid("it lists no Pooling module"))?;
        let st_config_path = transformer_dir.join("sentence_bert_config.json");
        let st_config: SentenceBertConfig =
            if st_config_path.is_file() { read_json(&st_config_path)? } else { SentenceBertConfig::default() };
        Ok(Pipeline {
            transformer_dir,
            max_seq_length: st_config.max_seq_length,
            do_lower_case: st_config.do_lower_case,
            pooling,
            normalize,
        })
    }
}

/// Module paths come from a downloaded file; they must stay inside the model.
fn checked_relative<'a>(modules_path: &Path, path: &'a str) -> Result<&'a str, EmbedError> {
    if Path::new(path).is_absolute() || path.split(['/', '\\']).any(|part| part == "..") {
        return Err(EmbedError::InvalidFile {
            path: modules_path.to_path_buf(),
            reason: format!("module path {path:?} points outside the model directory"),
        });
    }
    Ok(path)
}

fn read_pooling(path: &Path) -> Result<Pooling, EmbedError> {
    let raw: BTreeMap<String, serde_json::Value> = read_json(path)?;
    let unknown = |mode: &str| EmbedError::InvalidFile {
        path: path.to_path_buf(),
        reason: format!("unknown pooling mode {mode:?}; supported: {}", PoolingMode::NAMES.join(", ")),
    };
    let mut modes = Vec::new();
    if let Some(value) = raw.get("pooling_mode") {
        let name = value.as_str().ok_or_else(|| unknown(&value.to_string()))?;
        modes.push(PoolingMode::from_name(name).ok_or_else(|| unknown(name))?);
    }
    for (key, value) in &raw {
        let Some(flag) = key.strip_prefix("pooling_mode_") else { continue };
        if value.as_bool() != Some(true) {
            continue;
        }
        let mode = PoolingMode::from_config_key(flag).ok_or_else(|| unknown(flag))?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        return Err(EmbedError::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("no pooling mode is enabled; set one of {}", PoolingMode::NAMES.join(", ")),
        });
    }
    Ok(Pooling::new(modes))
}

/// Reads and deserializes a JSON file, naming the file in every error.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::InvalidFile {
        path: path.to_path_buf(),
        reason: format!("not the expected JSON ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;

    #[test]
    fn reads_minilm_layout() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        write(dir.path(), "sentence_bert_config.json", r#"{"max_seq_length": 256, "do_lower_case": false}"#);
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#,
        );
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.max_seq_length, Some(256));
        assert!(p.normalize);
        assert_eq!(p.pooling.modes(), &[PoolingMode::Mean]);
    }

    #[test]
    fn no_modules_json_means_mean_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.pooling.modes(), &[PoolingMode::Mean]);
        assert!(!p.normalize);
    }

    #[test]
    fn unknown_pooling_mode_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_median_tokens": true}"#);
        let err = Pipeline::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("median_tokens") && err.contains("1_Pooling"), "{err}");
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "median"}"#);
        let err = Pipeline::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"median\"") && err.contains("mean"), "{err}");
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_mean_tokens": false}"#);
        assert!(Pipeline::read(dir.path()).unwrap_err().to_string().contains("no pooling mode"));
    }

    #[test]
    fn malformed_and_hostile_modules_json() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", "[{\"path\": ");
        let err = Pipeline::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.json") && err.contains("JSON"), "{err}");
        write(dir.path(), "modules.json", r#"[{"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]"#);
        assert!(Pipeline::read(dir.path()).unwrap_err().to_string().contains("outside the model directory"));
        write(dir.path(), "modules.json", r#"[{"path": "", "type": "sentence_transformers.models.LSTM"}]"#);
        let err = Pipeline::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("LSTM") && err.contains("Pooling"), "{err}");
    }
}
