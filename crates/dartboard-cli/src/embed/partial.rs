//! The resumable state of a `dartboard embed --output FILE` run: a folder
//! `FILE.partial/` beside the output holding a manifest (what the run is: input,
//! model, options) and one chunk file per finished window, each written to a
//! temporary name, synced and renamed, so a run killed at any point (SIGKILL, out
//! of memory, preemption) leaves only whole chunks. `--resume` checks the manifest,
//! skips the windows that have chunks, and the final file is assembled from the
//! chunks in order, so it is byte-identical to that of an uninterrupted run.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Everything that decides the output's bytes; a resumed run must match it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub input: String,
    pub input_bytes: Option<u64>,
    pub input_modified_ns: Option<u64>,
    pub input_format: String,
    pub text_field: String,
    pub model: String,
    pub revision: Option<String>,
    pub dtype: String,
    pub device: String,
    pub prompt: String,
    pub format: String,
    pub keep_text: bool,
    pub window: usize,
    /// `--truncate-dim` (the chunks hold truncated rows). Defaulted, so a partial run
    /// made before the flag existed still reads (and matches a run without it).
    #[serde(default)]
    pub truncate_dim: Option<usize>,
    /// `--precision` (applied when the file is assembled, like the format).
    #[serde(default = "float32")]
    pub precision: String,
}

fn float32() -> String {
    "float32".to_owned()
}

impl Manifest {
    /// The fields that differ from `other`, for the error message.
    fn differences(&self, other: &Manifest) -> Vec<String> {
        let (a, b) = (serde_json::to_value(self).unwrap_or_default(), serde_json::to_value(other).unwrap_or_default());
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["everything".to_owned()] };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} (was {}, now {v})", b.get(k).cloned().unwrap_or_default()))
            .collect()
    }
}

/// One stored window: its dimension, `rows × dim` values, and the texts under
/// `--keep-text`.
pub type Chunk = (usize, Vec<f32>, Option<Vec<String>>);

/// The `FILE.partial/` folder of one output.
pub struct Partial {
    dir: PathBuf,
}

const MANIFEST: &str = "manifest.json";
const MAGIC: &[u8; 8] = b"DBCHUNK1";

impl Partial {
    pub fn dir_for(output: &Path) -> PathBuf {
        let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".partial");
        output.with_file_name(name)
    }

    /// Starts a new run, or continues the one recorded for `output`. Returns the
    /// state and how many windows are already done.
    pub fn open(output: &Path, manifest: &Manifest, resume: bool) -> Result<(Partial, u64)> {
        let dir = Self::dir_for(output);
        let manifest_path = dir.join(MANIFEST);
        if dir.exists() {
            if !resume {
                bail!(
                    "{} holds a partial run for this output; continue it with --resume, or delete it to start over",
                    dir.display()
                );
            }
            let bytes = dartboard_fs::read_capped(&manifest_path, dartboard_fs::limits::MODEL_JSON)
                .with_context(|| format!("{} is not a partial run of dartboard embed; delete it", dir.display()))?;
            let recorded: Manifest = serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is damaged; delete {} to start over", manifest_path.display(), dir.display())
            })?;
            if &recorded != manifest {
                bail!(
                    "the partial run in {} was made with other settings: {}; run with the same ones, or delete it \
                     to start over",
                    dir.display(),
                    manifest.differences(&recorded).join(", ")
                );
            }
            let partial = Partial { dir };
            let done = partial.done_windows()?;
            return Ok((partial, done));
        }
        if resume {
            eprintln!("dartboard: no partial run at {}; starting from the beginning", dir.display());
        }
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let partial = Partial { dir };
        partial.write_atomically(MANIFEST, &serde_json::to_vec_pretty(manifest)?)?;
        Ok((partial, 0))
    }

    fn chunk_name(index: u64) -> String {
        format!("chunk-{index:010}.bin")
    }

    /// The windows whose chunks exist, counted from the first; anything after a gap
    /// (which a crash cannot make, but a hand can) is redone.
    fn done_windows(&self) -> Result<u64> {
        let mut done = 0;
        while self.dir.join(Self::chunk_name(done)).is_file() {
            done += 1;
        }
        Ok(done)
    }

    /// Stores a finished window: temporary name, data synced, then renamed.
    pub fn write_chunk(&self, index: u64, dim: usize, values: &[f32], texts: Option<&[String]>) -> Result<()> {
        let rows = values.len().checked_div(dim).unwrap_or(0);
        let mut bytes = Vec::with_capacity(21 + values.len() * 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(rows as u64).to_le_bytes());
        bytes.extend_from_slice(&(dim as u32).to_le_bytes());
        bytes.push(u8::from(texts.is_some()));
        for x in values {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        for text in texts.unwrap_or_default() {
            bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        self.write_atomically(&Self::chunk_name(index), &bytes)
    }

    /// Reads chunk `index`: its dimension, values and texts.
    pub fn read_chunk(&self, index: u64) -> Result<Option<Chunk>> {
        let path = self.dir.join(Self::chunk_name(index));
        if !path.is_file() {
            return Ok(None);
        }
        let damaged = || format!("{} is damaged; delete {} to start over", path.display(), self.dir.display());
        let mut reader = BufReader::new(File::open(&path).with_context(|| format!("cannot read {}", path.display()))?);
        let mut head = [0u8; 21];
        reader.read_exact(&mut head).with_context(damaged)?;
        if &head[..8] != MAGIC {
            bail!(damaged());
        }
        let rows = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")) as usize;
        let dim = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
        let has_text = head[20] == 1;
        let mut raw = vec![0u8; rows.checked_mul(dim).and_then(|n| n.checked_mul(4)).with_context(damaged)?];
        reader.read_exact(&mut raw).with_context(damaged)?;
        let values = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        let texts = if has_text {
            let mut texts = Vec::with_capacity(rows);
            for _ in 0..rows {
                let mut len = [0u8; 8];
                reader.read_exact(&mut len).with_context(damaged)?;
                let mut text = vec![0u8; usize::try_from(u64::from_le_bytes(len)).with_context(damaged)?];
                reader.read_exact(&mut text).with_context(damaged)?;
                texts.push(String::from_utf8(text).with_context(damaged)?);
            }
            Some(texts)
        } else {
            None
        };
        Ok(Some((dim, values, texts)))
    }

    /// The rows of chunk `index`, from its header.
    pub fn rows_in(&self, index: u64) -> Result<u64> {
        let path = self.dir.join(Self::chunk_name(index));
        let mut head = [0u8; 16];
        File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .with_context(|| format!("{} is damaged; delete {} to start over", path.display(), self.dir.display()))?;
        if &head[..8] != MAGIC {
            bail!("{} is damaged; delete {} to start over", path.display(), self.dir.display());
        }
        Ok(u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")))
    }

    /// The rows of the first `windows` chunks together.
    pub fn total_rows(&self, windows: u64) -> Result<u64> {
        (0..windows).map(|i| self.rows_in(i)).sum()
    }

    /// Deletes the state once the output is in place.
    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).with_context(|| format!("cannot remove {}", self.dir.display()))
    }

    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot write in {}", self.dir.display()))?;
        {
            let mut out = BufWriter::new(tmp.as_file_mut());
            out.write_all(bytes).with_context(|| format!("cannot write in {}", self.dir.display()))?;
            out.flush()?;
        }
        // Synced before the rename, so a chunk that exists after a crash is whole.
        tmp.as_file().sync_data().with_context(|| format!("cannot write in {}", self.dir.display()))?;
        tmp.persist(self.dir.join(name))
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write in {}", self.dir.display()))?;
        Ok(())
    }
}
