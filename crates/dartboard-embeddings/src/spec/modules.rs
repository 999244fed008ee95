//! The sentence-transformers side of a model directory: `modules.json`,
//! `sentence_bert_config.json` and `1_Pooling/config.json`, read into one
//! validated [`Pipeline`]. Field names mirror the JSON keys.
//!
//! Every file is read with [`dartboard_fs::read_capped`] (regular files only, size
//! capped), so a FIFO or a link to `/dev/zero` is an error naming the path, never a
//! hang. An optional file counts as absent only when there is nothing at its path;
//! a file that exists but cannot be read is an error, because treating an unreadable
//! `modules.json` as absent would silently drop its Normalize module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::pooling::{Pooling, PoolingMode};
use super::{read_json, read_optional_json};
use crate::error::EmbedError;

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
        let Some(modules) = read_optional_json::<Vec<ModuleEntry>>(&modules_path)? else {
            return Ok(Pipeline {
                transformer_dir: dir.to_path_buf(),
                max_seq_length: None,
                do_lower_case: false,
                pooling: Pooling::new(vec![PoolingMode::Mean]),
                after_pooling: Vec::new(),
                prompts,
            });
        };
        let stages = ModuleStages::check(&modules_path, &modules)?;
        let module_dir = |index: usize| -> Result<PathBuf, EmbedError> {
            Ok(dir.join(checked_relative(&modules_path, &modules[index].path)?))
        };
        let transformer_dir = module_dir(stages.transformer)?;
        let pooling = read_pooling(&module_dir(stages.pooling)?.join("config.json"))?;
        let mut after_pooling = Vec::new();
        for &index in &stages.after_pooling {
            after_pooling.push(match module_kind(&modules[index].kind) {
                "Dense" => AfterPooling::Dense(read_dense(&module_dir(index)?)?),
                _ => AfterPooling::Normalize,
            });
        }
        let st_config: SentenceBertConfig =
            read_optional_json(&transformer_dir.join("sentence_bert_config.json"))?.unwrap_or_default();
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

/// The last segment of a module's `type` (`sentence_transformers.models.Dense` ->
/// `Dense`).
fn module_kind(kind: &str) -> &str {
    kind.rsplit('.').next().unwrap_or_default()
}

/// Where each module of modules.json sits, once its order has been checked.
struct ModuleStages {
    transformer: usize,
    pooling: usize,
    after_pooling: Vec<usize>,
}

impl ModuleStages {
    /// sentence-transformers runs modules in the order listed, each on the previous
    /// one's output: the Transformer makes token embeddings from text, Pooling makes
    /// one vector of them, and Dense and Normalize only act on that vector. So the
    /// order must be Transformer, Pooling, then any Dense/Normalize; anything else
    /// either fails in sentence-transformers too or means a different model.
    fn check(path: &Path, modules: &[ModuleEntry]) -> Result<Self, EmbedError> {
        const ORDER: &str = "the order must be one Transformer, then one Pooling, then any Dense and Normalize modules";
        let invalid = |reason: String| EmbedError::InvalidFile { path: path.to_path_buf(), reason };
        let describe = |i: usize| format!("module {i} ({}, path {:?})", module_kind(&modules[i].kind), modules[i].path);
        let mut transformer = None;
        let mut pooling = None;
        let mut after_pooling = Vec::new();
        for (i, module) in modules.iter().enumerate() {
            checked_relative(path, &module.path)?;
            match module_kind(&module.kind) {
                "Transformer" => {
                    if let Some(first) = transformer {
                        return Err(invalid(format!(
                            "{} is a second Transformer (the first is module {first}); {ORDER}",
                            describe(i)
                        )));
                    }
                    transformer = Some(i);
                }
                "Pooling" => {
                    if let Some(first) = pooling {
                        return Err(invalid(format!(
                            "{} is a second Pooling module (the first is module {first}); {ORDER}",
                            describe(i)
                        )));
                    }
                    if transformer.is_none() {
                        return Err(invalid(format!(
                            "{} comes before any Transformer module; Pooling needs the Transformer's token embeddings, so {ORDER}",
                            describe(i)
                        )));
                    }
                    pooling = Some(i);
                }
                kind @ ("Dense" | "Normalize") => {
                    let missing = if transformer.is_none() { "Transformer" } else { "Pooling" };
                    if pooling.is_none() {
                        return Err(invalid(format!(
                            "{} comes before the {missing} module; {kind} acts on the pooled sentence vector, so {ORDER}",
                            describe(i)
                        )));
                    }
                    after_pooling.push(i);
                }
                _ => {
                    return Err(EmbedError::UnsupportedModule {
                        path: path.to_path_buf(),
                        found: module.kind.clone(),
                        supported: SUPPORTED_MODULES,
                    })
                }
            }
        }
        let transformer = transformer.ok_or_else(|| invalid(format!("it lists no Transformer module; {ORDER}")))?;
        let pooling = pooling.ok_or_else(|| invalid(format!("it lists no Pooling module; {ORDER}")))?;
        Ok(ModuleStages { transformer, pooling, after_pooling })
    }
}

fn read_prompts(dir: &Path) -> Result<Prompts, EmbedError> {
    let path = dir.join("config_sentence_transformers.json");
    let Some(file) = read_optional_json::<StConfigFile>(&path)? else {
        return Ok(Prompts::default());
    };
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
    // order); older versions one flag per mode, output in the canonical order.
    let mut modes = Vec::new();
    match raw.get("pooling_mode") {
        Some(serde_json::Value::String(name)) => modes.push(PoolingMode::from_name(name).ok_or_else(|| unknown(name))?),
        Some(serde_json::Value::Array(names)) => {
            for value in names {
                let name = value.as_str().ok_or_else(|| unknown(&value.to_string()))?;
                modes.push(PoolingMode::from_name(name).ok_or_else(|| unknown(name))?);
            }
        }
        // `null` is Python's None: sentence-transformers then reads the flags.
        Some(serde_json::Value::Null) | None => {
            for (key, value) in &raw {
                let Some(flag) = key.strip_prefix("pooling_mode_") else { continue };
                if truthy(path, key, value)? {
                    modes.push(PoolingMode::from_config_key(flag).ok_or_else(|| unknown(flag))?);
                }
            }
            modes.sort();
        }
        Some(other) => return Err(unknown(&other.to_string())),
    }
    if modes.is_empty() {
        return Err(EmbedError::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("no pooling mode is enabled; set one of {}", PoolingMode::NAMES.join(", ")),
        });
    }
    let include_prompt = match raw.get("include_prompt") {
        Some(value) => truthy(path, "include_prompt", value)?,
        None => true,
    };
    Ok(Pooling::new(modes).with_include_prompt(include_prompt))
}

/// How sentence-transformers reads a flag: `if flag:`, Python's truth value. JSON
/// booleans, numbers (0 is false) and `null` (None, false) follow it exactly. A
/// string is refused even though Python would take any non-empty one as true:
/// `"false"` would then enable the mode, which is never what the file meant.
fn truthy(path: &Path, key: &str, value: &serde_json::Value) -> Result<bool, EmbedError> {
    use serde_json::Value;
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        Value::Number(n) => Ok(n.as_f64().is_some_and(|x| x != 0.0)),
        other => Err(EmbedError::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("{key} is {other}, which is not a flag; write true or false"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mkfifo;

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

    fn module_list(kinds: &[(&str, &str)]) -> String {
        let entries: Vec<String> = kinds
            .iter()
            .map(|(path, kind)| format!(r#"{{"path": "{path}", "type": "sentence_transformers.models.{kind}"}}"#))
            .collect();
        format!("[{}]", entries.join(","))
    }

    #[test]
    fn module_order_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "mean"}"#);
        write(dir.path(), "2_Dense/config.json", r#"{"in_features": 32, "out_features": 16}"#);
        // (modules.json as (path, type) pairs, parts the error must contain)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("", "Transformer"), ("2_Dense", "Dense"), ("1_Pooling", "Pooling")],
                &["module 1 (Dense", "\"2_Dense\"", "before the Pooling module"],
            ),
            (
                &[("", "Transformer"), ("2_Normalize", "Normalize"), ("1_Pooling", "Pooling")],
                &["module 1 (Normalize", "before the Pooling module"],
            ),
            (
                &[("", "Transformer"), ("", "Transformer"), ("1_Pooling", "Pooling")],
                &["module 1 (Transformer", "second Transformer", "first is module 0"],
            ),
            (&[("1_Pooling", "Pooling"), ("", "Transformer")], &["module 0 (Pooling", "before any Transformer"]),
            (
                &[("", "Transformer"), ("1_Pooling", "Pooling"), ("1_Pooling", "Pooling")],
                &["module 2 (Pooling", "second Pooling", "first is module 1"],
            ),
            (&[("2_Dense", "Dense"), ("", "Transformer")], &["module 0 (Dense", "before the Transformer module"]),
        ];
        for (modules, expected) in cases {
            write(dir.path(), "modules.json", &module_list(modules));
            let err = Pipeline::read(dir.path()).unwrap_err().to_string();
            for part in *expected {
                assert!(err.contains(part), "{modules:?}: {err:?} lacks {part:?}");
            }
            assert!(err.contains("the order must be one Transformer, then one Pooling"), "{err}");
            assert!(!err.contains("not supported"), "{err}");
        }
        // Several Dense and Normalize modules after pooling, in any order, are fine.
        write(
            dir.path(),
            "modules.json",
            &module_list(&[("", "Transformer"), ("1_Pooling", "Pooling"), ("", "Normalize"), ("2_Dense", "Dense")]),
        );
        let p = Pipeline::read(dir.path()).unwrap();
        assert!(matches!(p.after_pooling[..], [AfterPooling::Normalize, AfterPooling::Dense(_)]));
    }

    #[test]
    fn transformer_files_come_from_its_module_path() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            &module_list(&[("0_Transformer", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]),
        );
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_mean_tokens": true}"#);
        write(
            dir.path(),
            "0_Transformer/sentence_bert_config.json",
            r#"{"max_seq_length": 77, "do_lower_case": true}"#,
        );
        let p = Pipeline::read(dir.path()).unwrap();
        assert_eq!(p.transformer_dir, dir.path().join("0_Transformer"));
        assert_eq!((p.max_seq_length, p.do_lower_case), (Some(77), true));
    }

    #[test]
    fn unreadable_model_files_are_errors_never_absent_or_a_hang() {
        let optional = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"];
        for name in optional {
            for special in ["fifo", "dir", "zero", "dangling", "garbage"] {
                let dir = tempfile::tempdir().unwrap();
                write(dir.path(), "modules.json", MODULES);
                write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "mean"}"#);
                let path = dir.path().join(name);
                let _ = std::fs::remove_file(&path);
                match special {
                    "fifo" => mkfifo(&path),
                    "dir" => std::fs::create_dir(&path).unwrap(),
                    "zero" => std::os::unix::fs::symlink("/dev/zero", &path).unwrap(),
                    "dangling" => std::os::unix::fs::symlink("missing-blob", &path).unwrap(),
                    _ => std::fs::write(&path, "{not json").unwrap(),
                }
                let err = Pipeline::read(dir.path()).expect_err(&format!("{name} as {special}")).to_string();
                assert!(err.contains(path.to_str().unwrap()), "{name} as {special}: {err}");
            }
        }
        // The same for the files the listed modules point to.
        for name in ["1_Pooling/config.json", "2_Dense/config.json"] {
            let dir = tempfile::tempdir().unwrap();
            write(
                dir.path(),
                "modules.json",
                &module_list(&[("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense")]),
            );
            write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "mean"}"#);
            write(dir.path(), "2_Dense/config.json", r#"{"in_features": 32, "out_features": 16}"#);
            let path = dir.path().join(name);
            std::fs::remove_file(&path).unwrap();
            mkfifo(&path);
            let err = Pipeline::read(dir.path()).unwrap_err().to_string();
            assert!(err.contains(path.to_str().unwrap()) && err.contains("FIFO"), "{err}");
        }
    }

    #[test]
    fn pooling_flags_follow_python_truthiness_and_refuse_strings() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        let pooling = |json: &str| {
            write(dir.path(), "1_Pooling/config.json", json);
            Pipeline::read(dir.path()).map(|p| p.pooling)
        };
        let p =
            pooling(r#"{"pooling_mode_mean_tokens": 1, "pooling_mode_max_tokens": 2.5, "pooling_mode_cls_token": 0}"#);
        assert_eq!(p.unwrap().modes(), &[PoolingMode::Max, PoolingMode::Mean]);
        let p = pooling(r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": null, "include_prompt": 0}"#);
        let p = p.unwrap();
        assert_eq!(p.modes(), &[PoolingMode::Mean]);
        assert!(!p.include_prompt());
        assert!(
            pooling(r#"{"pooling_mode": null, "pooling_mode_cls_token": 1}"#).unwrap().modes() == [PoolingMode::Cls]
        );
        for (json, key, value) in [
            (r#"{"pooling_mode_mean_tokens": "yes"}"#, "pooling_mode_mean_tokens", "\"yes\""),
            (
                r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": "true"}"#,
                "pooling_mode_max_tokens",
                "\"true\"",
            ),
            (r#"{"pooling_mode_mean_tokens": true, "include_prompt": "false"}"#, "include_prompt", "\"false\""),
            (r#"{"pooling_mode_cls_token": [1]}"#, "pooling_mode_cls_token", "[1]"),
        ] {
            let err = pooling(json).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(value) && err.contains("1_Pooling"), "{json}: {err}");
            assert!(!err.contains("no pooling mode"), "{err}");
        }
    }
}
