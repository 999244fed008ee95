//! Download (and upload) progress: a callback trait, and the console rendering the
//! binaries use (an indicatif bar per file on a terminal, plain log lines otherwise).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Receives download progress. Every method has a do-nothing default.
pub trait Progress: Send + Sync {
    /// A file's download starts; `resumed_from` bytes are already on disk.
    fn file_started(&self, _path: &str, _size: u64, _resumed_from: u64) {}
    /// `bytes` more bytes of `path` arrived.
    fn advanced(&self, _path: &str, _bytes: u64) {}
    /// A file is in the cache; `already_cached` when nothing had to be downloaded.
    fn file_finished(&self, _path: &str, _already_cached: bool) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Progress on stderr: bars when stderr is a terminal, one line per file otherwise
/// (Docker build logs, CI).
pub struct ConsoleProgress {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    words: Words,
}

/// What the plain lines say: (starting, nothing to do, done).
struct Words {
    started: &'static str,
    skipped: &'static str,
    finished: &'static str,
}

impl ConsoleProgress {
    /// Chooses bars or lines from whether stderr is a terminal.
    pub fn new() -> Self {
        Self::with_words(Words { started: "downloading", skipped: "cached     ", finished: "verified   " })
    }

    /// The same for `dartboard push`: "nothing to do" is a file the server already has.
    pub fn uploads() -> Self {
        Self::with_words(Words { started: "uploading", skipped: "on server  ", finished: "uploaded   " })
    }

    fn with_words(words: Words) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| (MultiProgress::new(), Mutex::new(HashMap::new())));
        ConsoleProgress { bars, words }
    }
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for ConsoleProgress {
    fn file_started(&self, path: &str, size: u64, resumed_from: u64) {
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template("{msg:40!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(path.to_owned());
                bar.set_position(resumed_from);
                // A file started again (a retried upload) replaces its bar.
                if let Some(old) = bars.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_owned(), bar) {
                    old.finish_and_clear();
                }
            }
            None if resumed_from > 0 => {
                eprintln!("{} {path} ({size} bytes, resuming at {resumed_from})", self.words.started)
            }
            None => eprintln!("{} {path} ({size} bytes)", self.words.started),
        }
    }

    fn advanced(&self, path: &str, bytes: u64) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
                bar.inc(bytes);
            }
        }
    }

    fn file_finished(&self, path: &str, already_cached: bool) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.lock().unwrap_or_else(|p| p.into_inner()).remove(path) {
                    bar.finish();
                }
            }
            None if already_cached => eprintln!("{} {path}", self.words.skipped),
            None => eprintln!("{} {path}", self.words.finished),
        }
    }
}

/// Progress as `tracing` events, one per file: what libraries use, so a service's
/// log shows what was downloaded without anything drawn on its terminal.
pub struct LogProgress;

impl Progress for LogProgress {
    fn file_started(&self, path: &str, size: u64, resumed_from: u64) {
        tracing::info!(file = path, size, resumed_from, "downloading");
    }

    fn file_finished(&self, path: &str, already_cached: bool) {
        if !already_cached {
            tracing::info!(file = path, "downloaded and verified");
        }
    }
}
