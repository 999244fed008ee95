use super::*;

fn load(env: &Env) -> Result<EmbeddingConfig, ConfigError> {
    EmbeddingConfig::load_from(&Overrides::default(), env)
}

#[test]
fn defaults() {
    let cfg = load(&Env::from_pairs::<&str, &str>([])).unwrap();
    assert_eq!(cfg.model, "all-MiniLM-L6-v2");
    assert_eq!(cfg.device, DeviceSpec::Cpu);
    assert_eq!(cfg.dtype, DType::F32);
    assert_eq!(cfg.batch_size, 32);
    assert_eq!(cfg.embedding_dim, None);
    assert_eq!(cfg.cache_dir, PathBuf::from("/home/user/.cache/torch/sentence_transformers"));
    assert_eq!(cfg.expected_dim(), Some(384));
}

#[test]
fn env_overrides_file_and_explicit_overrides_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dartboard.toml"), "model = \"from-file\"\ndevice = \"cuda:2\"\nbatch_size = 7\n")
        .unwrap();
    let env = Env::from_pairs([("EMBEDDING_MODEL", "from-env")]).with_cwd(dir.path());
    let cfg = load(&env).unwrap();
    assert_eq!(cfg.model, "from-env");
    assert_eq!(cfg.device, DeviceSpec::Cuda(2), "file value kept where env is silent");
    assert_eq!(cfg.batch_size, 7);
    assert_eq!(cfg.config_file, Some(dir.path().join("dartboard.toml")));

    let explicit = Overrides { model: Some("explicit".into()), device: Some(DeviceSpec::Cpu), ..Default::default() };
    let cfg = EmbeddingConfig::load_from(&explicit, &env).unwrap();
    assert_eq!(cfg.model, "explicit");
    assert_eq!(cfg.device, DeviceSpec::Cpu);
}

#[test]
fn model_name_alias_and_precedence() {
    let cfg = load(&Env::from_pairs([("EMBEDDING_MODEL_NAME", "BAAI/bge-base-en-v1.5")])).unwrap();
    assert_eq!(cfg.model, "BAAI/bge-base-en-v1.5");
    assert_eq!(cfg.expected_dim(), Some(768));
    let both = Env::from_pairs([("EMBEDDING_MODEL_NAME", "alias"), ("EMBEDDING_MODEL", "main")]);
    assert_eq!(load(&both).unwrap().model, "main");
}

#[test]
fn empty_env_values_count_as_unset() {
    let cfg = load(&Env::from_pairs([("EMBEDDING_DIM", ""), ("EMBEDDING_MODEL", "  ")])).unwrap();
    assert_eq!(cfg.embedding_dim, None);
    assert_eq!(cfg.model, DEFAULT_MODEL);
}

#[test]
fn bad_device_names_the_variable_and_the_choices() {
    let err = load(&Env::from_pairs([("EMBEDDING_DEVICE", "tpu")])).unwrap_err().to_string();
    assert!(err.contains("EMBEDDING_DEVICE") && err.contains("tpu") && err.contains("cuda:N"), "{err}");
}

#[test]
fn bad_dim_names_the_variable() {
    for bad in ["abc", "-3", "0", "3.5"] {
        let err = load(&Env::from_pairs([("EMBEDDING_DIM", bad)])).unwrap_err().to_string();
        assert!(err.contains("EMBEDDING_DIM") && err.contains(bad), "{err}");
    }
}

#[test]
fn dim_mismatch_names_both_numbers() {
    let cfg = load(&Env::from_pairs([("EMBEDDING_DIM", "768")])).unwrap();
    assert_eq!(cfg.expected_dim(), Some(768));
    let err = cfg.check_dim(384).unwrap_err().to_string();
    assert!(err.contains("768") && err.contains("384"), "{err}");
    assert!(cfg.check_dim(768).is_ok());
}

#[test]
fn device_spellings() {
    assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
    assert_eq!("CUDA:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
    assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
    assert!("cuda:x".parse::<DeviceSpec>().is_err());
    assert_eq!("bfloat16".parse::<DType>().unwrap(), DType::Bf16);
}

#[test]
fn missing_config_file_from_env_is_an_error() {
    let err = load(&Env::from_pairs([("DARTBOARD_CONFIG", "/nonexistent/dartboard.toml")])).unwrap_err();
    assert!(matches!(err, ConfigError::ConfigFileMissing { .. }), "{err}");
}

/// The error and its sources, as the CLI prints them (`{:#}`).
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[test]
fn bad_file_values_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, "device = \"tpu\"\n").unwrap();
    let err = chain(&load(&Env::from_pairs([("DARTBOARD_CONFIG", path.to_str().unwrap())])).unwrap_err());
    assert!(err.contains("custom.toml") && err.contains("tpu"), "{err}");
    assert_eq!(err.matches("tpu").count(), 1, "the cause is printed once: {err}");
    std::fs::write(&path, "modle = \"typo\"\n").unwrap();
    let err = chain(&load(&Env::from_pairs([("DARTBOARD_CONFIG", path.to_str().unwrap())])).unwrap_err());
    assert!(err.contains("modle"), "{err}");
}

/// A config file that is a FIFO or a link to /dev/zero is refused by name, never
/// read until it ends (a FIFO without a writer would hang; /dev/zero never ends), and
/// a dartboard.toml that is not a regular file is never skipped as if absent.
#[test]
fn special_config_files_are_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for path in [&fifo, &zero] {
        let err = load(&Env::from_pairs([("DARTBOARD_CONFIG", path.to_str().unwrap())])).unwrap_err();
        assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
        let text = chain(&err);
        assert!(text.contains(path.to_str().unwrap()) && text.contains("not a regular file"), "{text}");
    }
    let cwd = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", cwd.path().join("dartboard.toml")).unwrap();
    let env = Env::from_pairs([("SENTENCE_TRANSFORMERS_HOME", "/tmp/models")]).with_cwd(cwd.path());
    let err = load(&env).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
}

#[test]
fn cache_dir_sources() {
    let cfg = load(&Env::from_pairs([("SENTENCE_TRANSFORMERS_HOME", "/models")])).unwrap();
    assert_eq!(cfg.cache_dir, PathBuf::from("/models"));
    let cfg = load(&Env::from_pairs([("TORCH_HOME", "/t")])).unwrap();
    assert_eq!(cfg.cache_dir, PathBuf::from("/t/sentence_transformers"));
    let err = load(&Env::from_pairs::<&str, &str>([]).with_home(None)).unwrap_err();
    assert!(matches!(err, ConfigError::NoCacheDir));
}

#[test]
fn known_dims_use_canonical_names() {
    assert_eq!(known_dim("all-mpnet-base-v2"), Some(768));
    assert_eq!(known_dim("sentence-transformers/all-MiniLM-L12-v2@main"), Some(384));
    assert_eq!(known_dim("someone/tiny-small-model"), None, "no guessing from the name");
    assert_eq!(canonical_repo_id("all-MiniLM-L6-v2"), "sentence-transformers/all-MiniLM-L6-v2");
}

#[test]
fn explicit_value_makes_a_bad_env_value_irrelevant() {
    let env = Env::from_pairs([("EMBEDDING_DEVICE", "tpu"), ("EMBEDDING_DIM", "abc")]);
    let explicit = Overrides { device: Some(DeviceSpec::Cpu), embedding_dim: Some(384), ..Default::default() };
    let cfg = EmbeddingConfig::load_from(&explicit, &env).unwrap();
    assert_eq!(cfg.device, DeviceSpec::Cpu);
    assert_eq!(cfg.embedding_dim, Some(384));
}
