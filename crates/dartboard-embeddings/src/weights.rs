//! Named weight tensors from `model.safetensors` (single or sharded) or
//! `pytorch_model.bin`, and the bookkeeping that turns "tensor not found" into one
//! error listing every missing or misshapen tensor.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::EmbedError;

/// All tensors of a checkpoint, converted to the compute device and precision.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// Checkpoints saved from a task model carry the base model's prefix (`bert.`).
    prefix: String,
    kind: Kind,
    device: Device,
    missing: RefCell<Vec<String>>,
    mismatched: RefCell<Vec<String>>,
}

impl Weights {
    /// Loads the weights of the model directory `dir`, preferring safetensors.
    pub fn load(dir: &Path, kind: Kind, device: Device) -> Result<Self, EmbedError> {
        let (path, named) = read_checkpoint(dir)?;
        let mut tensors = HashMap::with_capacity(named.len());
        for (name, tensor) in named {
            let tensor = if tensor.is_floating_point() { tensor.f_to_kind(kind)? } else { tensor };
            tensors.insert(name, tensor.f_to_device(device)?);
        }
        Ok(Weights {
            path,
            tensors,
            prefix: String::new(),
            kind,
            device,
            missing: RefCell::default(),
            mismatched: RefCell::default(),
        })
    }

    /// The file the weights came from (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Strips the prefix a task checkpoint puts before the base model's names, found
    /// by looking for `anchor` (a tensor every checkpoint of the architecture has).
    pub fn detect_prefix(&mut self, anchor: &str) {
        if self.tensors.contains_key(anchor) {
            return;
        }
        if let Some(name) = self.tensors.keys().find(|k| k.ends_with(&format!(".{anchor}"))) {
            self.prefix = name[..name.len() - anchor.len()].to_owned();
        }
    }

    /// A scope that prepends `prefix.` to every name, like a path in the checkpoint,
    /// under the detected base-model prefix.
    pub fn pp(&self, prefix: &str) -> Scope<'_> {
        let prefix = if prefix.is_empty() { self.prefix.clone() } else { format!("{}{prefix}.", self.prefix) };
        Scope { weights: self, prefix }
    }

    /// Like [`Weights::pp`] but from the checkpoint's root, for task heads that sit
    /// beside the base model (`classifier.*` next to `bert.*`).
    pub fn pp_root(&self, prefix: &str) -> Scope<'_> {
        Scope { weights: self, prefix: format!("{prefix}.") }
    }

    /// Fails with every missing or misshapen tensor recorded by [`Scope::get`].
    pub fn finish(self) -> Result<(), EmbedError> {
        let missing = self.missing.into_inner();
        let mismatched = self.mismatched.into_inner();
        if missing.is_empty() && mismatched.is_empty() {
            Ok(())
        } else {
            Err(EmbedError::Weights { path: self.path, missing, mismatched })
        }
    }

    fn get(&self, full: &str, shape: &[i64]) -> Tensor {
        let full = full.to_owned();
        // Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
        let legacy = full
            .strip_suffix(".weight")
            .map(|s| format!("{s}.gamma"))
            .or_else(|| full.strip_suffix(".bias").map(|s| format!("{s}.beta")));
        let found = self.tensors.get(&full).or_else(|| legacy.as_ref().and_then(|l| self.tensors.get(l)));
        match found {
            Some(t) if t.size() == shape => t.shallow_clone(),
            Some(t) => {
                self.mismatched.borrow_mut().push(format!("{full}: expected {shape:?}, found {:?}", t.size()));
                self.placeholder(shape)
            }
            None => {
                self.missing.borrow_mut().push(full);
                self.placeholder(shape)
            }
        }
    }

    /// Stands in for a missing tensor so loading can go on and report everything
    /// at once; [`Weights::finish`] then refuses the model.
    fn placeholder(&self, shape: &[i64]) -> Tensor {
        Tensor::zeros(shape, (self.kind, self.device))
    }
}

/// A view of [`Weights`] under a name prefix.
pub struct Scope<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> Scope<'a> {
    /// A nested scope: `pp("encoder").pp("layer.0")` reads `encoder.layer.0.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope<'a> {
        Scope { weights: self.weights, prefix: format!("{}{name}.", self.prefix) }
    }

    /// The tensor `name` in this scope, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[i64]) -> Tensor {
        self.weights.get(&format!("{}{name}", self.prefix), shape)
    }
}

fn read_checkpoint(dir: &Path) -> Result<(PathBuf, Vec<(String, Tensor)>), EmbedError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return read_safetensors(&single).map(|t| (single, t));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let mut all = Vec::new();
        for shard in shard_files(&index)? {
            all.extend(read_safetensors(&dir.join(shard))?);
        }
        return Ok((index, all));
    }
    let pickle = dir.join("pytorch_model.bin");
    if pickle.is_file() {
        let tensors = crate::pickle::read_torch_zip(&pickle).map_err(|e| EmbedError::InvalidFile {
            path: pickle.clone(),
            reason: format!("not a readable PyTorch checkpoint: {e}"),
        })?;
        return Ok((pickle, tensors));
    }
    Err(EmbedError::Hub(dartboard_hub::HubError::MissingFiles {
        dir: dir.to_path_buf(),
        missing: vec!["model.safetensors (or pytorch_model.bin)".to_owned()],
    }))
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, EmbedError> {
    Tensor::read_safetensors(path).map_err(|e| EmbedError::InvalidFile {
        path: path.to_path_buf(),
        reason: format!("not a readable safetensors file ({e})"),
    })
}

fn shard_files(index: &Path) -> Result<BTreeSet<String>, EmbedError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let parsed: Index = crate::pipeline::read_json(index)?;
    let shards: BTreeSet<String> = parsed.weight_map.into_values().collect();
    if let Some(bad) = shards.iter().find(|s| s.contains('/') || s.contains("..")) {
        return Err(EmbedError::InvalidFile {
            path: index.to_path_buf(),
            reason: format!("shard name {bad:?} points outside the model directory"),
        });
    }
    Ok(shards)
}
