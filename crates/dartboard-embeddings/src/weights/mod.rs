//! Named weight tensors from `model.safetensors` or `pytorch_model.bin`, single or
//! sharded (`*.index.json`), and the bookkeeping that turns "tensor not found" into
//! one error listing every missing or misshapen tensor.
//!
//! Loading starts from the checkpoint's headers only (the safetensors JSON header,
//! the pickle in a `torch.save` archive): every tensor's dtype, shape and byte range,
//! no data. A tensor is read when the model asks for it with the shape it expects
//! and the header agrees. A tensor that is missing or misshapen gets a stand-in with
//! no data (so a `config.json` that asks for a 16M-row table allocates nothing) and
//! is reported by [`Weights::finish`]. [`Weights::build`] goes one step further for
//! whole models: it runs the model's loader on headers alone first, so a
//! `config.json` that disagrees with the checkpoint is refused before any tensor is
//! read at all.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::EmbedError;

mod pickle;
mod safetensors;

use safetensors::safetensors_header;

/// Where one tensor lies in a checkpoint file, as its header describes it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Index of the file among the checkpoint's shards.
    pub shard: usize,
    /// Element type in the file.
    pub kind: Kind,
    /// Shape, as the header says.
    pub shape: Vec<i64>,
    /// Strides in elements, relative to `start` (row-major for safetensors).
    pub stride: Vec<i64>,
    /// Byte position of the first element the tensor reaches.
    pub start: u64,
    /// Elements from `start` to the last one the tensor reaches (0 when empty).
    pub span: u64,
}

/// One checkpoint file, kept open so tensors are read where they lie.
struct Shard {
    path: PathBuf,
    file: File,
}

/// The tensors of a checkpoint, read on demand and converted to the compute device
/// and precision.
pub struct Weights {
    /// The file named in errors: the checkpoint, or its index when sharded.
    path: PathBuf,
    shards: Vec<Shard>,
    tensors: HashMap<String, Stored>,
    /// Checkpoints saved from a task model carry the base model's prefix (`bert.`).
    prefix: String,
    kind: Kind,
    device: Device,
    /// On a dry run [`Scope::get`] compares shapes and reads nothing.
    dry: bool,
    missing: RefCell<Vec<String>>,
    mismatched: RefCell<Vec<String>>,
    /// The first tensor that matched its header but could not be read.
    unreadable: RefCell<Option<EmbedError>>,
}

impl Weights {
    /// Opens the checkpoint of the model directory `dir` (safetensors preferred) and
    /// reads its headers; tensor data is read by [`Scope::get`].
    pub fn load(dir: &Path, kind: Kind, device: Device) -> Result<Self, EmbedError> {
        let (path, files) = checkpoint_files(dir)?;
        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = HashMap::new();
        for file_path in files {
            let index = shards.len();
            let file = dartboard_fs::open_regular(&file_path).map_err(fs_error)?;
            let listed = if file_path.extension().is_some_and(|e| e == "safetensors") {
                safetensors_header(&file, &file_path)?
            } else {
                pickle::read_torch_zip(&file_path).map_err(|e| EmbedError::InvalidFile {
                    path: file_path.clone(),
                    reason: format!("not a readable PyTorch checkpoint: {e}"),
                })?
            };
            for (name, mut stored) in listed {
                stored.shard = index;
                if tensors.contains_key(&name) {
                    return Err(EmbedError::InvalidFile {
                        path: file_path,
                        reason: format!("tensor {name:?} appears twice in the checkpoint"),
                    });
                }
                tensors.insert(name, stored);
            }
            shards.push(Shard { path: file_path, file });
        }
        Ok(Weights {
            path,
            shards,
            tensors,
            prefix: String::new(),
            kind,
            device,
            dry: false,
            missing: RefCell::default(),
            mismatched: RefCell::default(),
            unreadable: RefCell::default(),
        })
    }

    /// Runs `build` twice: first on the headers alone, where every tensor is a
    /// stand-in without data, and then, only if every tensor it asked for exists
    /// with the shape it expects, for real. A `config.json` that disagrees with the
    /// checkpoint is thus refused before a single tensor is read or allocated.
    /// `build` may only use the tensors to build the model (concatenate, convert),
    /// never to compute with them: on the dry run they are empty.
    pub fn build<T>(mut self, build: impl Fn(&mut Weights) -> Result<T, EmbedError>) -> Result<T, EmbedError> {
        self.dry = true;
        let dry = build(&mut self);
        if self.has_misfits() {
            // The misfits explain any error the stand-ins caused.
            return Err(self.into_misfit_error());
        }
        drop(dry?);
        self.dry = false;
        self.prefix.clear();
        let model = build(&mut self)?;
        self.finish()?;
        Ok(model)
    }

    /// Strips the prefix a task checkpoint puts before the base model's names, found
    /// by looking for `anchor` (a tensor every checkpoint of the architecture has).
    pub fn detect_prefix(&mut self, anchor: &str) {
        if self.tensors.contains_key(anchor) {
            return;
        }
        let suffix = format!(".{anchor}");
        // The shortest prefix, so the choice does not depend on hash order.
        if let Some(name) = self.tensors.keys().filter(|k| k.ends_with(&suffix)).min_by_key(|k| (k.len(), *k)) {
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

    /// Fails with the first unreadable tensor, or with every missing or misshapen
    /// tensor recorded by [`Scope::get`].
    pub fn finish(self) -> Result<(), EmbedError> {
        if let Some(error) = self.unreadable.borrow_mut().take() {
            return Err(error);
        }
        if self.has_misfits() {
            return Err(self.into_misfit_error());
        }
        Ok(())
    }

    fn has_misfits(&self) -> bool {
        !self.missing.borrow().is_empty() || !self.mismatched.borrow().is_empty()
    }

    fn into_misfit_error(self) -> EmbedError {
        EmbedError::Weights {
            path: self.path,
            missing: self.missing.into_inner(),
            mismatched: self.mismatched.into_inner(),
        }
    }

    fn get(&self, full: &str, shape: &[i64]) -> Tensor {
        // Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
        let legacy = full
            .strip_suffix(".weight")
            .map(|s| format!("{s}.gamma"))
            .or_else(|| full.strip_suffix(".bias").map(|s| format!("{s}.beta")));
        let found = self.tensors.get(full).or_else(|| legacy.as_ref().and_then(|l| self.tensors.get(l)));
        match found {
            Some(stored) if stored.shape == shape => {
                if self.dry {
                    return self.stand_in();
                }
                match self.read(stored) {
                    Ok(tensor) => tensor,
                    Err(error) => {
                        self.unreadable.borrow_mut().get_or_insert(error);
                        self.stand_in()
                    }
                }
            }
            Some(stored) => {
                // Name the shard when there are several: that is the file to look at.
                let place = match self.shards.as_slice() {
                    [_] => String::new(),
                    shards => format!(" in {}", shards[stored.shard].path.display()),
                };
                self.mismatched
                    .borrow_mut()
                    .push(format!("{full}: expected {shape:?}, found {:?}{place}", stored.shape));
                self.stand_in()
            }
            None => {
                self.missing.borrow_mut().push(format!("{full} (expected {shape:?})"));
                self.stand_in()
            }
        }
    }

    /// Stands in for a tensor that is not read (a dry run) or cannot be (missing,
    /// misshapen), so loading can go on and report everything at once. It holds no
    /// data whatever shape was asked for; [`Weights::finish`] refuses the model
    /// before it could be used.
    fn stand_in(&self) -> Tensor {
        Tensor::from_slice::<f32>(&[]).to_kind(self.kind)
    }

    /// Reads one tensor whose header matched: exactly its bytes, from where it lies.
    fn read(&self, stored: &Stored) -> Result<Tensor, EmbedError> {
        let shard = &self.shards[stored.shard];
        let invalid = |reason: String| EmbedError::InvalidFile { path: shard.path.clone(), reason };
        let element = stored.kind.elt_size_in_bytes() as u64;
        // The header checks bounded the range by the file's length.
        let len = stored
            .span
            .checked_mul(element)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| invalid(format!("a tensor of {} elements does not fit in memory", stored.span)))?;
        let mut bytes = vec![0u8; len];
        shard
            .file
            .read_exact_at(&mut bytes, stored.start)
            .map_err(|source| EmbedError::Io { path: shard.path.clone(), source })?;
        let flat = Tensor::f_from_data_size(&bytes, &[stored.span as i64], stored.kind)?;
        let tensor = flat.f_as_strided(stored.shape.as_slice(), stored.stride.as_slice(), 0)?.f_contiguous()?;
        let tensor = if tensor.is_floating_point() { tensor.f_to_kind(self.kind)? } else { tensor };
        Ok(tensor.f_to_device(self.device)?)
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

    /// The tensor `name` in this scope, which must have `shape`. When it is missing,
    /// misshapen or unreadable (or on [`Weights::build`]'s dry run), the tensor
    /// returned is an empty stand-in, and [`Weights::finish`] fails.
    pub fn get(&self, name: &str, shape: &[i64]) -> Tensor {
        self.weights.get(&format!("{}{name}", self.prefix), shape)
    }

    /// Whether the checkpoint has the tensor `name` in this scope, for weights that
    /// checkpoints store under one of two names (T5's tied embedding table is
    /// `shared.weight`, `encoder.embed_tokens.weight` or both).
    pub fn has(&self, name: &str) -> bool {
        self.weights.tensors.contains_key(&format!("{}{name}", self.prefix))
    }
}

fn fs_error(error: dartboard_fs::FsError) -> EmbedError {
    match error {
        dartboard_fs::FsError::Io { path, source } => EmbedError::Io { path, source },
        other => EmbedError::InvalidFile { path: other.path().to_path_buf(), reason: other.to_string() },
    }
}

/// The file to name in errors and the checkpoint files, in the order of preference
/// transformers uses: safetensors over pickles, a single file over shards.
fn checkpoint_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), EmbedError> {
    for (single, index) in
        [("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")]
    {
        let single = dir.join(single);
        if single.is_file() {
            return Ok((single.clone(), vec![single]));
        }
        let index = dir.join(index);
        if index.is_file() {
            let shards = shard_files(&index)?.into_iter().map(|s| dir.join(s)).collect();
            return Ok((index, shards));
        }
    }
    Err(EmbedError::Hub(dartboard_hub::HubError::MissingFiles {
        dir: dir.to_path_buf(),
        missing: vec!["model.safetensors (or pytorch_model.bin, or a sharded index of either)".to_owned()],
    }))
}

fn shard_files(index: &Path) -> Result<BTreeSet<String>, EmbedError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let parsed: Index = crate::spec::read_json(index)?;
    let shards: BTreeSet<String> = parsed.weight_map.into_values().collect();
    if let Some(bad) = shards.iter().find(|s| s.contains('/') || s.contains('\\') || s.contains("..")) {
        return Err(EmbedError::InvalidFile {
            path: index.to_path_buf(),
            reason: format!("shard name {bad:?} points outside the model directory"),
        });
    }
    if shards.is_empty() {
        return Err(EmbedError::InvalidFile {
            path: index.to_path_buf(),
            reason: "its weight_map lists no shard".to_owned(),
        });
    }
    Ok(shards)
}

/// Checkpoint writers for tests: safetensors through tch, and `torch.save`'s zip
/// format written the way torch writes it (protocol-2 pickle, stored entries), so
/// tests can build tiny models, shards and malformed files without Python.
#[cfg(test)]
pub(crate) mod test_files {
    use std::io::Write;
    use std::path::Path;

    use tch::{Kind, Tensor};

    /// One tensor of a `torch.save` archive: a view of `storage` (f32 values).
    pub struct View {
        pub name: String,
        pub storage: Vec<f32>,
        pub offset: i64,
        pub size: Vec<i64>,
        pub stride: Vec<i64>,
    }

    impl View {
        /// A contiguous tensor that owns its storage.
        pub fn of(name: &str, tensor: &Tensor) -> View {
            let size = tensor.size();
            let storage = Vec::<f32>::try_from(tensor.to_kind(Kind::Float).contiguous().view(-1)).unwrap();
            View { name: name.to_owned(), storage, offset: 0, stride: super::safetensors::row_major(&size), size }
        }
    }

    pub fn write_safetensors(path: &Path, tensors: &[(&str, Tensor)]) {
        Tensor::write_safetensors(tensors, path).unwrap();
    }

    /// Writes `views` as `torch.save(OrderedDict(...))` does.
    pub fn write_torch_zip(path: &Path, views: &[View]) {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.push(b'X');
            out.extend((s.len() as u32).to_le_bytes());
            out.extend(s.as_bytes());
        }
        fn int(out: &mut Vec<u8>, v: i64) {
            out.push(b'J');
            out.extend((v as i32).to_le_bytes());
        }
        fn ints(out: &mut Vec<u8>, vs: &[i64]) {
            out.push(b'(');
            vs.iter().for_each(|v| int(out, *v));
            out.push(b't');
        }
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\n)R(");
        for (key, view) in views.iter().enumerate() {
            string(&mut p, &view.name);
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            string(&mut p, "storage");
            p.extend(b"ctorch\nFloatStorage\n");
            string(&mut p, &key.to_string());
            string(&mut p, "cpu");
            int(&mut p, view.storage.len() as i64);
            p.extend(b"tQ");
            int(&mut p, view.offset);
            ints(&mut p, &view.size);
            ints(&mut p, &view.stride);
            p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend(b"u.");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", stored).unwrap();
        zip.write_all(&p).unwrap();
        for (key, view) in views.iter().enumerate() {
            zip.start_file(format!("archive/data/{key}"), stored).unwrap();
            let bytes: Vec<u8> = view.storage.iter().flat_map(|v| v.to_le_bytes()).collect();
            zip.write_all(&bytes).unwrap();
        }
        zip.start_file("archive/version", stored).unwrap();
        zip.write_all(b"3\n").unwrap();
        zip.finish().unwrap();
    }

    /// `*.index.json` mapping each tensor to the shard that holds it.
    pub fn write_index(path: &Path, shards: &[(&str, &[&str])]) {
        let map: serde_json::Map<String, serde_json::Value> = shards
            .iter()
            .flat_map(|(file, names)| names.iter().map(move |n| ((*n).to_owned(), serde_json::json!(file))))
            .collect();
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(path, serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::test_files::{write_index, write_safetensors, write_torch_zip, View};
    use super::*;

    fn load(dir: &Path) -> Weights {
        Weights::load(dir, Kind::Float, Device::Cpu).unwrap()
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && a.f_equal(b).unwrap()
    }

    #[test]
    fn misfits_are_refused_from_the_headers_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(
            &dir.path().join("model.safetensors"),
            &[
                ("a.weight", Tensor::ones([2, 3], (Kind::Float, Device::Cpu))),
                ("b", Tensor::ones([4], (Kind::Float, Device::Cpu))),
            ],
        );
        let passes = Cell::new(0);
        // A config asking for 2^48 floats: the stand-ins hold nothing, so this is an
        // error naming the tensor, not an allocation failure or a libtorch panic.
        let huge = 1i64 << 24;
        let err = load(dir.path())
            .build(|w| {
                passes.set(passes.get() + 1);
                let root = w.pp("");
                Ok((root.get("a.weight", &[huge, huge]), root.get("b", &[4]), root.pp("c").get("bias", &[huge, 8])))
            })
            .err()
            .unwrap()
            .to_string();
        assert_eq!(passes.get(), 1, "the model is never built for real");
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(err.contains("a.weight: expected [16777216, 16777216], found [2, 3]"), "{err}");
        assert!(err.contains("missing tensors (1): c.bias (expected [16777216, 8])"), "{err}");
        assert!(!err.contains("b:"), "{err}");

        // When everything fits, the second pass reads the data.
        let (a, b) = load(dir.path())
            .build(|w| {
                passes.set(passes.get() + 1);
                Ok((w.pp("").get("a.weight", &[2, 3]), w.pp("").get("b", &[4])))
            })
            .unwrap();
        assert_eq!(passes.get(), 3);
        assert!(same(&a, &Tensor::ones([2, 3], (Kind::Float, Device::Cpu))) && b.size() == [4]);
    }

    #[test]
    fn a_single_pass_never_allocates_from_the_asked_shape() {
        // The Dense modules' path (`load`, `get`, `finish` without `build`).
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(
            &dir.path().join("model.safetensors"),
            &[("w", Tensor::ones([2], (Kind::Float, Device::Cpu)))],
        );
        let weights = load(dir.path());
        let stand_in = weights.pp("").get("w", &[1 << 24, 1 << 24]);
        assert_eq!(stand_in.numel(), 0);
        let err = weights.finish().unwrap_err().to_string();
        assert!(err.contains("w: expected [16777216, 16777216], found [2]"), "{err}");
    }

    #[test]
    fn sharded_safetensors_load_and_name_the_shard_of_a_misfit() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) =
            (Tensor::randn([3, 2], (Kind::Float, Device::Cpu)), Tensor::randn([5], (Kind::Float, Device::Cpu)));
        write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &[("x", x.copy())]);
        write_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), &[("y", y.copy())]);
        write_index(
            &dir.path().join("model.safetensors.index.json"),
            &[("model-00001-of-00002.safetensors", &["x"]), ("model-00002-of-00002.safetensors", &["y"])],
        );
        let (gx, gy) = load(dir.path()).build(|w| Ok((w.pp("").get("x", &[3, 2]), w.pp("").get("y", &[5])))).unwrap();
        assert!(same(&gx, &x) && same(&gy, &y));
        let err = load(dir.path()).build(|w| Ok(w.pp("").get("y", &[6]))).err().unwrap().to_string();
        assert!(err.contains("model.safetensors.index.json"), "{err}");
        assert!(
            err.contains("y: expected [6], found [5] in ") && err.contains("model-00002-of-00002.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn torch_zip_tensors_are_read_in_place_with_their_views() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        write_torch_zip(
            &dir.path().join("pytorch_model.bin"),
            &[
                // [2, 3] transposed out of a [3, 2] block starting at element 2.
                View { name: "t".into(), storage: values.clone(), offset: 2, size: vec![2, 3], stride: vec![1, 2] },
                View::of("plain", &Tensor::from_slice(&[1.5f32, -2.0])),
            ],
        );
        let weights = Weights::load(dir.path(), Kind::Double, Device::Cpu).unwrap();
        let t = weights.pp("").get("t", &[2, 3]);
        let plain = weights.pp("").get("plain", &[2]);
        weights.finish().unwrap();
        let expected = Tensor::from_slice(&[2.0f64, 4.0, 6.0, 3.0, 5.0, 7.0]).view([2, 3]);
        assert!(same(&t, &expected), "{t}");
        assert_eq!(plain.kind(), Kind::Double, "converted to the compute precision");
        assert!(same(&plain, &Tensor::from_slice(&[1.5f64, -2.0])));
    }

    #[test]
    fn sharded_pytorch_model_bin_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) =
            (Tensor::randn([4, 2], (Kind::Float, Device::Cpu)), Tensor::randn([3], (Kind::Float, Device::Cpu)));
        write_torch_zip(&dir.path().join("pytorch_model-00001-of-00002.bin"), &[View::of("x", &x)]);
        write_torch_zip(&dir.path().join("pytorch_model-00002-of-00002.bin"), &[View::of("y", &y)]);
        write_index(
            &dir.path().join("pytorch_model.bin.index.json"),
            &[("pytorch_model-00001-of-00002.bin", &["x"]), ("pytorch_model-00002-of-00002.bin", &["y"])],
        );
        let weights = load(dir.path());
        assert!(weights.path.ends_with("pytorch_model.bin.index.json"));
        let (gx, gy) = weights.build(|w| Ok((w.pp("").get("x", &[4, 2]), w.pp("").get("y", &[3])))).unwrap();
        assert!(same(&gx, &x) && same(&gy, &y));

        // A shard the index names but the directory lacks is an error naming it.
        std::fs::remove_file(dir.path().join("pytorch_model-00002-of-00002.bin")).unwrap();
        let err = Weights::load(dir.path(), Kind::Float, Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("pytorch_model-00002-of-00002.bin"), "{err}");
    }

    #[test]
    fn a_tensor_in_two_shards_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let one = Tensor::ones([1], (Kind::Float, Device::Cpu));
        write_safetensors(&dir.path().join("a.safetensors"), &[("x", one.copy())]);
        write_safetensors(&dir.path().join("b.safetensors"), &[("x", one.copy())]);
        write_index(
            &dir.path().join("model.safetensors.index.json"),
            &[("a.safetensors", &["x"]), ("b.safetensors", &["y"])],
        );
        let err = Weights::load(dir.path(), Kind::Float, Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("\"x\" appears twice"), "{err}");
    }

    #[test]
    fn safetensors_headers_that_disagree_with_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let file = |header: &str, data: usize| {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend(header.as_bytes());
            bytes.extend(vec![0u8; data]);
            std::fs::write(&path, bytes).unwrap();
            Weights::load(dir.path(), Kind::Float, Device::Cpu).err().map(|e| e.to_string())
        };
        let ok = r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        assert_eq!(file(ok, 16), None);
        // The shape claims more than the byte range holds, or the range leaves the file.
        let err = file(r#"{"x":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,16]}}"#, 16).unwrap();
        assert!(err.contains("does not match its byte range"), "{err}");
        assert!(file(ok, 8).unwrap().contains("does not match its byte range"));
        assert!(file(r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}}"#, 16).is_some());
        assert!(file("not json", 0).unwrap().contains("header"));
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        assert!(Weights::load(dir.path(), Kind::Float, Device::Cpu).is_err());
        std::fs::write(&path, b"abc").unwrap();
        assert!(Weights::load(dir.path(), Kind::Float, Device::Cpu).is_err());
    }
}
