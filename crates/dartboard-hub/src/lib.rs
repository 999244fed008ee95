//! Where models live: turns a model reference into a directory of model files.
//!
//! A reference is either a local directory (used as is) or a Hub name:
//! `all-MiniLM-L6-v2` (short for `sentence-transformers/all-MiniLM-L6-v2`), `org/name`,
//! optionally pinned with `@revision`. Names are looked up in a cache laid out exactly as
//! the Hugging Face hub cache (`models--org--name/{blobs,refs,snapshots}`), which is what
//! sentence-transformers, `huggingface_hub` and the `hf-hub` crate write, so a cache can
//! be shared with Python in both directions.
//!
//! Brief overview:
//! - [`ModelRef`] parses and validates what the user typed; names that could escape the
//!   cache (`..`, odd characters) are rejected before any path is built from them.
//! - [`ModelStore`] is the cache: [`ModelStore::resolve`] finds a cached snapshot and
//!   [`ModelStore::import_dir`] places a directory of files into it as a given
//!   repo and revision, the way a download would.
//! - [`ModelFiles`] is the result: a checked directory holding a loadable model.
//! - [`ModelHub::push`] is the other direction: a model folder or a cached model
//!   committed to a Hub repository (`dartboard push`).
//!
//! This crate never reads tensors; it only deals in files.
//!
//! ```no_run
//! use dartboard_hub::{ModelRef, ModelStore};
//!
//! let store = ModelStore::new("/root/.cache/torch/sentence_transformers");
//! let files = store.resolve(&ModelRef::parse("all-MiniLM-L6-v2")?)?;
//! println!("{}", files.dir().display());
//! # Ok::<(), dartboard_hub::HubError>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod download;
mod error;
mod files;
mod hash;
mod hub;
mod model_ref;
pub mod progress;
mod push;
mod remote;
mod store;

pub use cache::{CachedRepo, CachedRevision, Problem, Removed};
pub use download::is_wanted;
pub use error::HubError;
pub use files::ModelFiles;
pub use hash::{git_blob_sha1, sha256_file};
pub use hub::ModelHub;
pub use model_ref::ModelRef;
pub use push::{PushOptions, Pushed};
pub use remote::{HubConfig, RemoteFile};
pub use store::{content_commit, ModelStore};
