//! Tests of the registry and of every architecture's load-time checks, on tiny
//! models written by the tests themselves (`model_files`; architectures may use it
//! for their own unit tests).

/// Tiny models written in the test itself: `config.json` plus weights of the shapes
/// it describes, in any of the checkpoint layouts `Weights` reads.
pub(crate) mod model_files {
    use std::path::Path;

    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use crate::weights::test_files::{write_index, write_safetensors, write_torch_zip, View};

    pub fn bert_config(model_type: &str) -> Value {
        json!({
            "model_type": model_type, "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 16, "type_vocab_size": 2, "pad_token_id": 1,
            "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1
        })
    }

    pub fn mpnet_config() -> Value {
        json!({
            "model_type": "mpnet", "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 16, "layer_norm_eps": 1e-5, "relative_attention_num_buckets": 32
        })
    }

    /// Named random tensors with the shapes `config` describes.
    pub fn tensors(config: &Value) -> Vec<(String, Tensor)> {
        let n = |k: &str| config[k].as_i64().unwrap();
        let (h, i) = (n("hidden_size"), n("intermediate_size"));
        let mpnet = config["model_type"] == "mpnet";
        let mut shapes: Vec<(String, Vec<i64>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![n("vocab_size"), h]),
            ("embeddings.position_embeddings.weight".into(), vec![n("max_position_embeddings"), h]),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        if mpnet {
            let heads = n("num_attention_heads");
            shapes.push(("encoder.relative_attention_bias.weight".into(), vec![32, heads]));
        } else {
            shapes.push(("embeddings.token_type_embeddings.weight".into(), vec![n("type_vocab_size"), h]));
        }
        let linear = |name: String, out: i64, inp: i64| {
            vec![(format!("{name}.weight"), vec![out, inp]), (format!("{name}.bias"), vec![out])]
        };
        let norm = |name: String| vec![(format!("{name}.weight"), vec![h]), (format!("{name}.bias"), vec![h])];
        for l in 0..n("num_hidden_layers") {
            let p = format!("encoder.layer.{l}");
            if mpnet {
                for x in ["q", "k", "v", "o"] {
                    shapes.extend(linear(format!("{p}.attention.attn.{x}"), h, h));
                }
                shapes.extend(norm(format!("{p}.attention.LayerNorm")));
            } else {
                for x in ["query", "key", "value"] {
                    shapes.extend(linear(format!("{p}.attention.self.{x}"), h, h));
                }
                shapes.extend(linear(format!("{p}.attention.output.dense"), h, h));
                shapes.extend(norm(format!("{p}.attention.output.LayerNorm")));
            }
            shapes.extend(linear(format!("{p}.intermediate.dense"), i, h));
            shapes.extend(linear(format!("{p}.output.dense"), h, i));
            shapes.extend(norm(format!("{p}.output.LayerNorm")));
        }
        tch::manual_seed(11);
        shapes.into_iter().map(|(name, shape)| (name, Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.5)).collect()
    }

    /// How the weights are stored.
    #[derive(Debug, Clone, Copy)]
    pub enum Layout {
        Safetensors,
        ShardedSafetensors,
        TorchZip,
        ShardedTorchZip,
    }

    /// Writes `config` and `weights` into `dir` in `layout`.
    pub fn write_model(dir: &Path, config: &Value, weights: &[(String, Tensor)], layout: Layout) {
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let named: Vec<(&str, Tensor)> = weights.iter().map(|(n, t)| (n.as_str(), t.copy())).collect();
        let views = |part: &[(&str, Tensor)]| part.iter().map(|(n, t)| View::of(n, t)).collect::<Vec<_>>();
        let half = named.len() / 2;
        let (first, second) = named.split_at(half);
        fn names<'a>(part: &[(&'a str, Tensor)]) -> Vec<&'a str> {
            part.iter().map(|(n, _)| *n).collect()
        }
        match layout {
            Layout::Safetensors => write_safetensors(&dir.join("model.safetensors"), &named),
            Layout::TorchZip => write_torch_zip(&dir.join("pytorch_model.bin"), &views(&named)),
            Layout::ShardedSafetensors => {
                let files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
                write_safetensors(&dir.join(files[0]), first);
                write_safetensors(&dir.join(files[1]), second);
                write_index(
                    &dir.join("model.safetensors.index.json"),
                    &[(files[0], &names(first)), (files[1], &names(second))],
                );
            }
            Layout::ShardedTorchZip => {
                let files = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"];
                write_torch_zip(&dir.join(files[0]), &views(first));
                write_torch_zip(&dir.join(files[1]), &views(second));
                write_index(
                    &dir.join("pytorch_model.bin.index.json"),
                    &[(files[0], &names(first)), (files[1], &names(second))],
                );
            }
        }
    }
}

mod validation {
    use serde_json::{json, Value};
    use tch::{Device, Kind, Tensor};

    use super::super::*;
    use super::model_files::{bert_config, mpnet_config, tensors, write_model, Layout};
    use crate::encoder::EncoderInput;

    /// Loads a model whose config is `config` with the weights of `weights_of`.
    fn load_with(config: &Value, weights_of: &Value) -> Result<Box<dyn Encoder>, EmbedError> {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), config, &tensors(weights_of), Layout::Safetensors);
        load_encoder(dir.path(), Kind::Float, Device::Cpu)
    }

    fn with(mut config: Value, key: &str, value: Value) -> Value {
        config[key] = value;
        config
    }

    fn error(result: Result<Box<dyn Encoder>, EmbedError>) -> String {
        result.err().expect("loading must fail").to_string()
    }

    fn input(ids: &[i64], types: &[i64]) -> EncoderInput {
        let n = ids.len() as i64;
        EncoderInput {
            input_ids: Tensor::from_slice(ids).view([1, n]),
            attention_mask: Tensor::ones([1, n], (Kind::Int64, Device::Cpu)),
            token_type_ids: Tensor::from_slice(types).view([1, n]),
        }
    }

    #[test]
    fn config_sizes_the_weights_do_not_have_are_refused_before_any_allocation() {
        let base = bert_config("bert");
        // 2^48 floats for the word embeddings alone: libtorch cannot allocate that.
        let huge = with(
            with(with(base.clone(), "vocab_size", json!(1 << 24)), "hidden_size", json!(1 << 24)),
            "num_attention_heads",
            json!(1),
        );
        let err = error(load_with(&huge, &base));
        assert!(
            err.contains("embeddings.word_embeddings.weight: expected [16777216, 16777216], found [20, 8]"),
            "{err}"
        );
        // Sizes a model could have, that these weights do not: up to 2 TB of stand-ins before.
        for (key, value, expected) in [
            (
                "intermediate_size",
                json!(16_000_000),
                "encoder.layer.0.intermediate.dense.weight: expected [16000000, 8], found [16, 8]",
            ),
            (
                "vocab_size",
                json!(16_000_000),
                "embeddings.word_embeddings.weight: expected [16000000, 8], found [20, 8]",
            ),
            (
                "max_position_embeddings",
                json!(16_000_000),
                "embeddings.position_embeddings.weight: expected [16000000, 8], found [16, 8]",
            ),
        ] {
            let err = error(load_with(&with(base.clone(), key, value), &base));
            assert!(err.contains(expected) && err.contains("model.safetensors"), "{key}: {err}");
        }
        let deep = with(with(base.clone(), "num_hidden_layers", json!(256)), "intermediate_size", json!(1 << 20));
        let err = error(load_with(&deep, &base));
        assert!(
            err.contains("missing tensors (")
                && err.contains("encoder.layer.2.attention.self.query.weight (expected [8, 8])"),
            "{err}"
        );
    }

    #[test]
    fn every_checkpoint_layout_gives_the_same_model() {
        for config in [bert_config("bert"), bert_config("xlm-roberta"), mpnet_config()] {
            let weights = tensors(&config);
            let ids = [0i64, 5, 7, 19, 3];
            let mut outputs = Vec::new();
            for layout in [Layout::Safetensors, Layout::ShardedSafetensors, Layout::TorchZip, Layout::ShardedTorchZip] {
                let dir = tempfile::tempdir().unwrap();
                write_model(dir.path(), &config, &weights, layout);
                let encoder = load_encoder(dir.path(), Kind::Float, Device::Cpu)
                    .unwrap_or_else(|e| panic!("{} {layout:?}: {e}", config["model_type"]));
                outputs.push(encoder.forward(&input(&ids, &[0; 5])).unwrap());
            }
            assert_eq!(outputs[0].size(), [1, 5, 8]);
            for (layout, output) in outputs.iter().enumerate() {
                assert!(output.f_equal(&outputs[0]).unwrap(), "{} layout {layout}", config["model_type"]);
            }
        }
    }

    #[test]
    fn layer_norm_eps_must_be_a_positive_finite_number() {
        for config in [bert_config("bert"), bert_config("roberta"), mpnet_config()] {
            for eps in [json!(-1), json!(0), json!(0.0)] {
                let err = error(load_with(&with(config.clone(), "layer_norm_eps", eps.clone()), &config));
                assert!(err.contains("config.json is invalid: layer_norm_eps is"), "{eps}: {err}");
                assert!(err.contains("it must be a positive finite number"), "{err}");
            }
        }
    }

    #[test]
    fn other_config_values_outside_what_the_model_can_use_are_refused() {
        let mpnet = mpnet_config();
        let err = error(load_with(&with(mpnet.clone(), "relative_attention_num_buckets", json!(16)), &mpnet));
        assert!(err.contains("relative_attention_num_buckets is 16; it must be at least 32"), "{err}");
        let roberta = bert_config("xlm-roberta");
        let err = error(load_with(&with(roberta.clone(), "pad_token_id", json!(-1)), &roberta));
        assert!(err.contains("pad_token_id is -1; it must be 0 or more"), "{err}");
        let bert = bert_config("bert");
        let err = error(load_with(&with(bert.clone(), "num_attention_heads", json!(3)), &bert));
        assert!(err.contains("hidden_size 8 is not a multiple of num_attention_heads 3"), "{err}");
        let err = error(load_with(&with(bert.clone(), "type_vocab_size", json!(0)), &bert));
        assert!(err.contains("type_vocab_size is 0; it must be between 1 and"), "{err}");
    }

    #[test]
    fn limits_come_from_the_config() {
        let limits = |config: Value| load_with(&config, &config).unwrap().limits();
        let bert = limits(bert_config("bert"));
        assert_eq!(bert, crate::encoder::EncoderLimits { vocab_size: 20, type_vocab_size: Some(2), max_positions: 16 });
        // Positions after the padding id 1: 16 - 2 usable.
        assert_eq!(limits(bert_config("xlm-roberta")).max_positions, 14);
        let mpnet = limits(mpnet_config());
        assert_eq!((mpnet.type_vocab_size, mpnet.max_positions), (None, 14));
    }

    #[test]
    fn ids_outside_the_embedding_tables_are_errors_naming_config_and_tokenizer() {
        for config in [bert_config("bert"), bert_config("xlm-roberta"), mpnet_config()] {
            let encoder = load_with(&config, &config).unwrap();
            let max = encoder.limits().max_positions;
            assert!(encoder.forward(&input(&vec![2; max], &vec![0; max])).is_ok());
            let mut cases = vec![
                (input(&[2, 20, 3], &[0; 3]), "token id 20 is not between 0 and vocab_size - 1 = 19"),
                (input(&[2, -1, 3], &[0; 3]), "token id -1 is not between 0"),
                (input(&vec![2; max + 1], &vec![0; max + 1]), "needs more than the"),
            ];
            if config["model_type"] != "mpnet" {
                cases.push((
                    input(&[2, 3, 4], &[0, 1, 2]),
                    "token type id 2 is not between 0 and type_vocab_size - 1 = 1",
                ));
            }
            for (input, expected) in cases {
                let err = encoder.forward(&input).unwrap_err().to_string();
                assert!(err.contains(expected), "{}: {err}", config["model_type"]);
                assert!(err.contains("config.json") && err.contains("tokenizer.json"), "{err}");
                assert!(!err.contains("index out of range") && !err.contains("libtorch"), "{err}");
            }
        }
    }

    #[test]
    fn configs_without_a_type_or_of_remote_code_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = bert_config("bert");
        config.as_object_mut().unwrap().remove("model_type");
        write_model(dir.path(), &config, &tensors(&bert_config("bert")), Layout::Safetensors);
        let err = error(load_encoder(dir.path(), Kind::Float, Device::Cpu));
        assert!(err.contains("config.json has no model_type"), "{err}");
        assert!(SUPPORTED.iter().all(|t| err.contains(t)) && !err.contains("\"\""), "{err}");
        for (key, value) in [("model_type", "nomic_bert"), ("model_type", "new"), ("model_type", "jina_bert")] {
            std::fs::write(dir.path().join("config.json"), json!({ key: value }).to_string()).unwrap();
            let err = error(load_encoder(dir.path(), Kind::Float, Device::Cpu));
            assert!(err.contains(&format!("{value:?} model")) && err.contains("trust_remote_code"), "{err}");
            assert!(err.contains("out of scope"), "{err}");
        }
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
        let err = error(load_encoder(dir.path(), Kind::Float, Device::Cpu));
        assert!(err.contains("\"gpt2\" model, which is not supported"), "{err}");
    }
}
