//! `dartboard._dartboard`: the Rust half of the `dartboard` Python package.
//!
//! Two classes over `dartboard-embeddings`, configured exactly as the CLI is (explicit
//! arguments over `EMBEDDING_*` variables over `dartboard.toml` over defaults, through
//! [`EmbeddingConfig::load`]), so Python, the CLI and sentence-transformers share
//! one model cache:
//! - [`Embedder`]: `encode(texts)` returns a `numpy.float32` array of shape `(n, dim)`;
//! - [`CrossEncoder`]: `predict(pairs)` returns sentence-transformers' scores.
//!
//! Every call that loads or runs a model releases the GIL, so other Python threads
//! (a Ray actor's, a web server's) run meanwhile. Every library error becomes a
//! `dartboard.DartboardError` carrying the Rust message and its causes; a bad
//! argument value (a device or dtype that does not parse, a zero batch size) is a
//! `ValueError`.
//!
//! The Python-facing parts (re-exports, `compat`, `ray`) are in `python/dartboard/`.

use std::error::Error;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use dartboard_config::{DType, DeviceSpec, EmbeddingConfig, Overrides};
use dartboard_embeddings::Prompt;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

pyo3::create_exception!(
    _dartboard,
    DartboardError,
    PyException,
    "An error from dartboard's Rust library; the message names the file or value and the fix."
);

/// `err` and its causes, `: `-separated (what the CLI prints for an error).
fn message(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // A wrapper that repeats its cause's text adds nothing.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn library_error(err: &dyn Error) -> PyErr {
    DartboardError::new_err(message(err))
}

/// The configuration the CLI would load with these flags.
fn load_config(
    model: Option<String>,
    device: Option<&str>,
    dtype: Option<&str>,
    batch_size: Option<usize>,
) -> PyResult<EmbeddingConfig> {
    let device = device
        .map(DeviceSpec::from_str)
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("device: {e} (expected {})", DeviceSpec::EXPECTED)))?;
    let dtype = dtype
        .map(DType::from_str)
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("dtype: {e} (expected {})", DType::EXPECTED)))?;
    let batch_size = check_batch_size(batch_size)?;
    let overrides = Overrides { model, device, dtype, batch_size, ..Overrides::default() };
    EmbeddingConfig::load(&overrides).map_err(|e| library_error(&e))
}

fn check_batch_size(batch_size: Option<usize>) -> PyResult<Option<usize>> {
    match batch_size {
        Some(0) => Err(PyValueError::new_err("batch_size must be at least 1")),
        other => Ok(other),
    }
}

/// A model in a mutex: the model is `Send` but not `Sync` (libtorch tensors), and
/// PyO3 classes must be `Sync`, since any Python thread may call a method once the
/// GIL is released. The mutex serializes calls on one model; it is taken after the
/// GIL is released, so a thread waiting for it never blocks the interpreter.
///
/// Not `unsendable`: that would pin the object to the thread that created it and
/// raise on any other, and Ray actors with `max_concurrency > 1`, thread pools
/// and async servers call from threads of their own.
fn lock<T>(model: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a call cannot leave the model half-changed (calls take it by
    // shared reference and set the batch size afresh each time), so a poisoned
    // lock is still a usable model.
    model.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sentence-transformers embedding model, configured like the `dartboard` CLI:
/// each argument left as None comes from `EMBEDDING_MODEL`, `EMBEDDING_DEVICE`,
/// `EMBEDDING_DTYPE`, `EMBEDDING_BATCH_SIZE`, then `dartboard.toml`, then the
/// defaults (all-MiniLM-L6-v2, cpu, f32, 32).
#[pyclass(module = "dartboard", name = "Embedder", frozen)]
struct Embedder {
    model: Mutex<dartboard_embeddings::SentenceEmbedder>,
    batch_size: usize,
    embedding_dim: usize,
    max_seq_length: usize,
    name: String,
    device: String,
    dtype: String,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model=None, device=None, dtype=None, batch_size=None))]
    fn new(
        py: Python<'_>,
        model: Option<String>,
        device: Option<&str>,
        dtype: Option<&str>,
        batch_size: Option<usize>,
    ) -> PyResult<Self> {
        let config = load_config(model, device, dtype, batch_size)?;
        // What the CLI and dartboard-api's shared model opt into at start-up: freed
        // activation memory is kept for the next batch instead of being returned to
        // the kernel and faulted in again (a few percent of throughput).
        dartboard_embeddings::retain_freed_memory();
        let embedder = py.detach(|| dartboard_embeddings::SentenceEmbedder::from_config(&config)).map_err(|e| {
            DartboardError::new_err(format!("cannot load embedding model {}: {}", config.model, message(&e)))
        })?;
        Ok(Embedder {
            batch_size: config.batch_size,
            embedding_dim: embedder.embedding_dim(),
            max_seq_length: embedder.max_seq_length(),
            name: embedder
                .files()
                .repo_id()
                .map_or_else(|| embedder.files().dir().display().to_string(), str::to_owned),
            device: embedder.device_name(),
            dtype: embedder.dtype().to_string(),
            model: Mutex::new(embedder),
        })
    }

    /// Embeds a list of texts: a `numpy.float32` array of shape `(len(texts), dim)`
    /// (`dim` = `truncate_dim` when given), row `i` for `texts[i]`, equal to
    /// sentence-transformers' `encode(texts)`. `prompt_name` picks one of the
    /// model's prompts (None: its default prompt, if it has one). Texts are batched
    /// longest first, at most `batch_size` per pass (None: the configured size).
    #[pyo3(signature = (texts, batch_size=None, prompt_name=None, truncate_dim=None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        batch_size: Option<usize>,
        prompt_name: Option<String>,
        truncate_dim: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let texts = text_list(texts)?;
        let batch_size = check_batch_size(batch_size)?.unwrap_or(self.batch_size);
        let embeddings = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let prompt = prompt_name.as_deref().map_or(Prompt::Default, Prompt::Name);
                let mut model = lock(&self.model);
                model.set_batch_size(batch_size);
                let embeddings = model.encode_with(&refs, prompt)?;
                match truncate_dim {
                    Some(dim) => embeddings.truncate_dim(dim),
                    None => Ok(embeddings),
                }
            })
            .map_err(|e| library_error(&e))?;
        let rows = embeddings.len();
        let dim = embeddings.dim();
        Ok(PyArray1::from_slice(py, embeddings.as_slice()).reshape([rows, dim])?.into_any())
    }

    /// Width of the embeddings.
    #[getter]
    fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// The token limit texts are truncated to.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The model: its repo id, else its directory.
    #[getter]
    fn model(&self) -> &str {
        &self.name
    }

    /// The device it runs on (`cpu`, `cuda:0`).
    #[getter]
    fn device(&self) -> &str {
        &self.device
    }

    /// The compute precision (`f32`, `bf16`, `f16`).
    #[getter]
    fn dtype(&self) -> &str {
        &self.dtype
    }

    /// The batch size `encode` uses when it is given none.
    #[getter]
    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder(model={:?}, device={:?}, dtype={:?}, embedding_dim={})",
            self.name, self.device, self.dtype, self.embedding_dim
        )
    }
}

/// A list (or other sequence) of strings; a lone string is refused rather than
/// read as a sequence of one-character texts.
fn text_list(texts: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if texts.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "texts must be a list of strings, not one string; pass [text] (dartboard.compat.SentenceTransformerModel \
             takes either)",
        ));
    }
    texts.extract().map_err(|_| PyTypeError::new_err("texts must be a list of strings"))
}

/// A sentence-transformers cross-encoder (reranker), configured like
/// `dartboard rerank`: `model` is required; device, dtype and batch size default
/// as for [`Embedder`].
#[pyclass(module = "dartboard", name = "CrossEncoder", frozen)]
struct CrossEncoder {
    model: Mutex<dartboard_embeddings::CrossEncoder>,
    num_labels: usize,
    max_length: usize,
    name: String,
}

#[pymethods]
impl CrossEncoder {
    #[new]
    #[pyo3(signature = (model, device=None, dtype=None, batch_size=None))]
    fn new(
        py: Python<'_>,
        model: String,
        device: Option<&str>,
        dtype: Option<&str>,
        batch_size: Option<usize>,
    ) -> PyResult<Self> {
        // The model given here is the cross-encoder; EMBEDDING_MODEL is not read
        // for it (it names the embedding model), but the rest of the config is.
        let config = load_config(None, device, dtype, batch_size)?;
        dartboard_embeddings::retain_freed_memory();
        let progress = dartboard_hub::progress::NoProgress;
        let encoder = py
            .detach(|| dartboard_embeddings::CrossEncoder::from_config(&model, &config, &progress))
            .map_err(|e| DartboardError::new_err(format!("cannot load cross-encoder {model}: {}", message(&e))))?;
        Ok(CrossEncoder {
            num_labels: encoder.num_labels(),
            max_length: encoder.max_length(),
            name: model,
            model: Mutex::new(encoder),
        })
    }

    /// Scores `(text, text)` pairs as sentence-transformers' `CrossEncoder.predict`
    /// does (with the model's activation): a `numpy.float32` array of shape
    /// `(len(pairs),)` for a one-label model, else `(len(pairs), num_labels)`.
    fn predict<'py>(&self, py: Python<'py>, pairs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let pairs = pair_list(pairs)?;
        let scores = py
            .detach(|| {
                let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                lock(&self.model).predict(&refs)
            })
            .map_err(|e| library_error(&e))?;
        let flat: Vec<f32> = scores.iter().flatten().copied().collect();
        let array = PyArray1::from_vec(py, flat);
        if self.num_labels == 1 {
            Ok(array.into_any())
        } else {
            Ok(array.reshape([pairs.len(), self.num_labels])?.into_any())
        }
    }

    /// How many scores each pair gets (1 for rerankers).
    #[getter]
    fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// The token limit pairs are truncated to.
    #[getter]
    fn max_length(&self) -> usize {
        self.max_length
    }

    fn __repr__(&self) -> String {
        format!("CrossEncoder(model={:?}, num_labels={})", self.name, self.num_labels)
    }
}

/// Pairs as tuples or two-element lists, as sentence-transformers accepts them.
fn pair_list(pairs: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    if pairs.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("pairs must be a list of (text, text) pairs, not a string"));
    }
    let items: Vec<Bound<'_, PyAny>> =
        pairs.extract().map_err(|_| PyTypeError::new_err("pairs must be a list of (text, text) pairs"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let texts: Vec<String> =
                if item.is_instance_of::<PyString>() { Vec::new() } else { item.extract().unwrap_or_default() };
            match <[String; 2]>::try_from(texts) {
                Ok([a, b]) => Ok((a, b)),
                Err(_) => Err(PyTypeError::new_err(format!("pair {i} is not two texts: {item}"))),
            }
        })
        .collect()
}

#[pymodule]
fn _dartboard(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Embedder>()?;
    m.add_class::<CrossEncoder>()?;
    m.add("DartboardError", m.py().get_type::<DartboardError>())?;
    m.add("LIBTORCH_VERSION", dartboard_embeddings::LIBTORCH_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
