//! Model files that disagree with each other or ask for the impossible, through the
//! CLI: each must end with exit 1 and a message naming the file, the key or tensor
//! and the value, never a panic, a libtorch backtrace, a huge allocation, or vectors
//! of null. Also: sharded `pytorch_model.bin` checkpoints load.
//!
//! The models are the tiny fixtures `cargo xtask test` generates, copied and edited.

use std::path::Path;

use dartboard_tests::parity::copy_fixture;
use dartboard_tests::{dartboard, run, run_within, venv_python, Run};
use serde_json::{json, Value};

/// Sets `key` in the model's config.json.
fn set_config(dir: &Path, changes: &[(&str, Value)]) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (key, value) in changes {
        config[*key] = value.clone();
    }
    std::fs::write(&path, config.to_string()).unwrap();
}

fn assert_clean_failure(r: &Run, needles: &[&str]) {
    assert!(!r.ok, "expected failure, got success: {}", r.stdout);
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    for bad in ["panicked", "index out of range", "frame #", "Exception raised from"] {
        assert!(!r.stderr.contains(bad), "{bad:?} in: {}", r.stderr);
    }
    for needle in needles {
        assert!(r.stderr.contains(needle), "{needle:?} not in: {}", r.stderr);
    }
}

/// `info` and `embed` on `dir`, each within a time that rules out terabytes of zeros.
fn both_commands(dir: &Path) -> [Run; 2] {
    [
        run_within(dartboard().args(["info", "--model"]).arg(dir), 60),
        run_within(dartboard().args(["embed", "--model"]).arg(dir).arg("a text"), 60),
    ]
}

#[test]
fn config_sizes_the_weights_do_not_have_are_refused_without_allocating() {
    let cases: &[(&[(&str, Value)], &str)] = &[
        (
            &[("intermediate_size", json!(16_000_000))],
            "encoder.layer.0.intermediate.dense.weight: expected [16000000, 32], found [64, 32]",
        ),
        (
            &[("vocab_size", json!(16_000_000))],
            "embeddings.word_embeddings.weight: expected [16000000, 32], found [30522, 32]",
        ),
        (
            &[("max_position_embeddings", json!(16_000_000))],
            "embeddings.position_embeddings.weight: expected [16000000, 32], found [512, 32]",
        ),
        (
            &[("num_hidden_layers", json!(256)), ("intermediate_size", json!(1 << 20))],
            "encoder.layer.2.attention.self.query.weight (expected [32, 32])",
        ),
        // 2^48 floats for one table: libtorch cannot even try.
        (
            &[("vocab_size", json!(1 << 24)), ("hidden_size", json!(1 << 24)), ("num_attention_heads", json!(1))],
            "embeddings.word_embeddings.weight: expected [16777216, 16777216], found [30522, 32]",
        ),
    ];
    for (changes, expected) in cases {
        let dir = copy_fixture("bert_mean_norm");
        set_config(dir.path(), changes);
        for r in both_commands(dir.path()) {
            assert_clean_failure(&r, &[expected, "model.safetensors", "config.json"]);
        }
    }
}

#[test]
fn layer_norm_eps_must_be_positive() {
    for model in ["bert_mean_norm", "xlmr_mean_norm", "mpnet_mean_norm"] {
        for eps in [json!(-1), json!(0)] {
            let dir = copy_fixture(model);
            set_config(dir.path(), &[("layer_norm_eps", eps.clone())]);
            for r in both_commands(dir.path()) {
                assert_clean_failure(&r, &["config.json", &format!("layer_norm_eps is {eps}"), "positive finite"]);
            }
        }
    }
}

#[test]
fn a_config_without_a_model_type_says_so() {
    let dir = copy_fixture("bert_mean_norm");
    let path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("model_type");
    config.as_object_mut().unwrap().remove("architectures");
    std::fs::write(&path, config.to_string()).unwrap();
    let [info, embed] = both_commands(dir.path());
    for r in [info, embed] {
        let supported = dartboard_embeddings::SUPPORTED_MODEL_TYPES.join(", ");
        assert_clean_failure(&r, &["config.json has no model_type", &supported]);
        assert!(!r.stderr.contains("\"\" model"), "{}", r.stderr);
    }
    for remote in ["nomic_bert", "new", "jina_bert"] {
        set_config(dir.path(), &[("model_type", json!(remote))]);
        let r = run(dartboard().args(["info", "--model"]).arg(dir.path()));
        assert_clean_failure(&r, &[remote, "trust_remote_code", "out of scope"]);
    }
}

#[test]
fn a_token_beyond_the_vocabulary_is_an_error_naming_both_files() {
    // The tokenizer knows one token more than config.json's vocab_size allows.
    let dir = copy_fixture("bert_mean_norm");
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tokenizer["added_tokens"].as_array_mut().unwrap().push(json!({
        "id": 30522, "content": "zzzbeyond", "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": false
    }));
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let r = run(dartboard().args(["embed", "--model"]).arg(dir.path()).arg("a zzzbeyond b"));
    assert_clean_failure(&r, &["30522", "vocab_size", "config.json", "tokenizer.json"]);
}

/// Splits a `pytorch_model.bin` into two `torch.save` shards and an index, with torch.
fn shard_with_torch(dir: &Path) {
    let script = r#"
import json, sys, torch
from pathlib import Path
d = Path(sys.argv[1])
sd = torch.load(d / "pytorch_model.bin", weights_only=True)
keys = list(sd)
parts = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
names = [f"pytorch_model-0000{i + 1}-of-00002.bin" for i in range(2)]
for name, part in zip(names, parts):
    torch.save({k: sd[k] for k in part}, d / name)
weight_map = {k: name for name, part in zip(names, parts) for k in part}
(d / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
(d / "pytorch_model.bin").unlink()
"#;
    let out = std::process::Command::new(venv_python()).arg("-c").arg(script).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sharded_pytorch_model_bin_embeds_like_the_single_file() {
    let single = copy_fixture("bert_bin");
    let sharded = copy_fixture("bert_bin");
    shard_with_torch(sharded.path());
    assert!(!sharded.path().join("pytorch_model.bin").exists());
    let texts = ["A man is playing guitar.", "A woman is cutting an onion."];
    let embed = |dir: &Path| {
        let r = run(dartboard().args(["embed", "--model"]).arg(dir).args(texts));
        assert!(r.ok, "{}", r.stderr);
        r.stdout
    };
    assert_eq!(embed(sharded.path()), embed(single.path()));
    let r = run(dartboard().args(["info", "--model"]).arg(sharded.path()));
    assert!(r.ok, "{}", r.stderr);
}
