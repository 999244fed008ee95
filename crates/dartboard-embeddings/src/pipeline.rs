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
pub const SUPPORTED_MODULES: &[&str] = &["Transformer", "Pooling", "Dense", "Normalize"];

/// What runs after tokenization, in order: encoder, pooling, then Dense and
/// Normalize modules in the order modules.json lists them.
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
    /// Modules after pooling.
    pub after_pooling: Vec<AfterPooling>,
    /// Named prompts and the default one (config_sentence_transformers.json).
    pub prompts: Prompts,
}

/// A module that runs on the pooled vector.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterPooling {
    /// A linear layer with an activation (`2_Dense/`).
    Dense(DenseSpec),
    /// L2 normalization.
    Normalize,
}

/// A `Dense` module's configuration (its weights are in `dir`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseSpec {
    /// The module directory.
    pub dir: PathBuf,
    /// Input width.
    pub in_features: i64,
    /// Output width.
    pub out_features: i64,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Applied after the linear layer.
    pub activation: DenseActivation,
}

/// Activations a `Dense` module may name (`torch.nn.modules.activation.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Tanh` (the default).
    Tanh,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.GELU`.
    Gelu,
}

/// Prompts from config_sentence_transformers.json.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompts {
    /// Name to prompt text (`"query" -> "query: "`).
    pub named: BTreeMap<String, String>,
    /// Used when the caller names none.
    pub default_name: Option<String>,
}

impl Pipeline {
    /// Width of the final embeddings.
    pub fn output_dim(&self, hidden: i64) -> i64 {
        self.after_pooling.iter().fold(self.pooling.output_dim(hidden), |dim, m| match m {
            AfterPooling::Dense(d) => d.out_features,
            AfterPooling::Normalize => dim,
        })
    }
}

#[derive(Deserialize)]
struct DenseFile {
    in_features: i64,
    out_features: i64,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct StConfigFile {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
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
        let prompts = read_prompts(dir)?;
        if !modules_path.is_file() {
            return Ok(Pipeline {
                transformer_dir: dir.to_path_buf(),
                max_seq_length: None,
                do_lower_case: false,
                pooling: Pooling::new(vec![PoolingMode::Mean]),
                after_pooling: Vec::new(),
                prompts,
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let mut transformer_dir = None;
        let mut pooling = None;
        let mut after_pooling = Vec::new();
        for module in &modules {
            let module_dir = dir.join(checked_relative(&modules_path, &module.path)?);
            match module.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" if transformer_dir.is_none() => transformer_dir = Some(module_dir),
                "Pooling" if pooling.is_none() => pooling = Some(read_pooling(&module_dir.join("config.json"))?),
                "Dense" if pooling.is_some() => after_pooling.push(AfterPooling::Dense(read_dense(&module_dir)?)),
                "Normalize" if pooling.is_some() => after_pooling.push(AfterPooling::Normalize),
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
            after_pooling,
            prompts,
        })
    }
}

fn read_prompts(dir: &Path) -> Result<Prompts, EmbedError> {
    let path = dir.join("config_sentence_transformers.json");
    if !path.is_file() {
        return Ok(Prompts::default());
    }
    let file: StConfigFile = read_json(&path)?;
    if let Some(name) = file.default_prompt_name.as_ref().filter(|n| !file.prompts.contains_key(*n)) {
        return Err(EmbedError::InvalidFile {
            path,
            reason: format!("default_prompt_name {name:?} is not one of its prompts"),
        });
    }
    Ok(Prompts { named: file.prompts, default_name: file.default_prompt_name })
}

fn read_dense(dir: &Path) -> Result<DenseSpec, EmbedError> {
    let path = dir.join("config.json");
    let file: DenseFile = read_json(&path)?;
    let name = file.activation_function.unwrap_or_else(|| "torch.nn.modules.activation.Tanh".to_owned());
    let activation = match name.rsplit('.').next().unwrap_or_default() {
        "Identity" => DenseActivation::Identity,
        "Tanh" => DenseActivation::Tanh,
        "ReLU" => DenseActivation::Relu,
        "Sigmoid" => DenseActivation::Sigmoid,
        "GELU" => DenseActivation::Gelu,
        _ => {
            return Err(EmbedError::InvalidFile {
                path,
                reason: format!("activation_function {name:?} is not supported (Identity, Tanh, ReLU, Sigmoid, GELU)"),
            })
        }
    };
    Ok(DenseSpec {
        dir: dir.to_path_buf(),
        in_features: file.in_features,
        out_features: file.out_features,
        bias: file.bias,
        activation,
    })
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
    // sentence-transformers 5+ writes `pooling_mode` (a name or a list, in output
    // order); older versions one boolean per mode, output in the canonical order.
    let mut modes = Vec::new();
    match raw.get("pooling_mode") {
        Some(serde_json::Value::String(name)) => modes.push(PoolingMode::from_name(name).ok_or_else(|| unknown(name))?),
        Some(serde_json::Value::Array(names)) => {
            for value in names {
                let name = value.as_str().ok_or_else(|| unknown(&value.to_string()))?;
                modes.push(PoolingMode::from_name(name).ok_or_else(|| unknown(name))?);
            }
        }
        Some(other) => return Err(unknown(&other.to_string())),
        None => {
            for (key, value) in &raw {
                let Some(flag) = key.strip_prefix("pooling_mode_") else { continue };
                if value.as_bool() == Some(true) {
                    modes.push(PoolingMode::from_config_key(flag).ok_or_else(|| unknown(flag))?);
                }
            }
            modes.sort();
        }
    }
    if modes.is_empty() {
        return Err(EmbedError::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("no pooling mode is enabled; set one of {}", PoolingMode::NAMES.join(", ")),
        });
    }
    let include_prompt = raw.get("include_prompt").and_then(|v| v.as_bool()).unwrap_or(true);
    Ok(Pooling::new(modes).with_include_prompt(include_prompt))
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
        assert_eq!(p.after_pooling, [AfterPooling::Normalize]);
        assert_eq!(p.pooling.modes(), &[PoolingMode::Mean]);
    }

    #[test]
    fn new_pooling_format_keeps_order_and_legacy_flags_use_canonical_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": ["mean", "cls"], "include_prompt": false}"#);
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.pooling.modes(), &[PoolingMode::Mean, PoolingMode::Cls]);
        assert!(!p.pooling.include_prompt());
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true, "pooling_mode_lasttoken": true}"#,
        );
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.pooling.modes(), &[PoolingMode::Cls, PoolingMode::Mean, PoolingMode::LastToken]);
    }

    #[test]
    fn dense_and_prompts() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"path": "", "type": "x.Transformer"}, {"path": "1_Pooling", "type": "x.Pooling"},
            {"path": "2_Dense", "type": "x.Dense"}, {"path": "3_Normalize", "type": "x.Normalize"}]"#,
        );
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "cls"}"#);
        write(
            dir.path(),
            "2_Dense/config.json",
            r#"{"in_features": 32, "out_features": 16, "activation_function": "torch.nn.modules.activation.Tanh"}"#,
        );
        write(
            dir.path(),
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: "}, "default_prompt_name": "query"}"#,
        );
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.output_dim(32), 16);
        assert!(
            matches!(&p.after_pooling[0], AfterPooling::Dense(d) if d.activation == DenseActivation::Tanh && d.bias)
        );
        assert_eq!(p.prompts.default_name.as_deref(), Some("query"));
        write(
            dir.path(),
            "2_Dense/config.json",
            r#"{"in_features": 32, "out_features": 16, "activation_function": "my.Custom"}"#,
        );
        assert!(Pipeline::read(dir.path()).unwrap_err().to_string().contains("my.Custom"));
        write(dir.path(), "config_sentence_transformers.json", r#"{"prompts": {}, "default_prompt_name": "query"}"#);
        assert!(Pipeline::read(dir.path()).unwrap_err().to_string().contains("default_prompt_name"));
    }

    #[test]
    fn no_modules_json_means_mean_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.pooling.modes(), &[PoolingMode::Mean]);
        assert!(p.after_pooling.is_empty());
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
