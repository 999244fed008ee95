//! The CLI's `--input` and `--output` files.
//!
//! Input is read line by line with a cap on each line, so `--input /dev/zero` (one
//! endless line) fails fast instead of filling memory; FIFOs and stdin still work,
//! since piping texts in is ordinary use.
//!
//! Output goes where the user pointed, and nowhere else:
//! - a regular file (or a new one) is written to a temporary file beside it and
//!   renamed into place, so a failure never leaves a truncated file; the new file
//!   gets the old one's mode, or the user's umask;
//! - a symlink is followed: its target is written and the link stays;
//! - anything else (`/dev/stdout`, `/dev/full`, a FIFO) is written in place, since
//!   renaming over it would replace a device or pipe with a regular file, and its
//!   write errors (ENOSPC on `/dev/full`) are reported.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The longest input line accepted: far above any text a model reads (texts are
/// truncated to a few hundred tokens), yet a bound on what one line may cost.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Every line of `path` (`-` is stdin) as a text, in order.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    if path == Path::new("-") {
        if io::stdin().is_terminal() {
            bail!("--input - reads texts from stdin, but stdin is a terminal; pipe the texts in");
        }
        return lines_of(io::stdin().lock(), "stdin");
    }
    let file = File::open(path).with_context(|| format!("cannot open input file {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("input file {} is a directory; give a text file with one text per line", path.display());
    }
    lines_of(BufReader::new(file), &path.display().to_string())
}

fn lines_of(mut reader: impl BufRead, name: &str) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    while let Some(line) = read_line(&mut reader, name, lines.len() as u64 + 1)? {
        lines.push(line);
    }
    Ok(lines)
}

/// The next line of `reader` (line number `number` of `name`, for messages) without
/// its line end, or `None` at the end. A line longer than [`MAX_LINE_BYTES`] is an
/// error, found after reading at most that much.
pub fn read_line(reader: &mut impl BufRead, name: &str, number: u64) -> Result<Option<String>> {
    let mut line = Vec::new();
    // One byte past the cap tells an over-long line from one exactly at it.
    let read = reader
        .take(MAX_LINE_BYTES as u64 + 2)
        .read_until(b'\n', &mut line)
        .with_context(|| format!("cannot read input file {name}"))?;
    if read == 0 {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    } else if read > MAX_LINE_BYTES {
        bail!(
            "line {number} of {name} is longer than {} MiB; texts are one per line, so this is not a text file \
             (or split the text)",
            MAX_LINE_BYTES >> 20
        );
    }
    String::from_utf8(line).map(Some).map_err(|_| anyhow::anyhow!("line {number} of {name} is not UTF-8 text"))
}

/// What an `--output` path is, once symlinks are followed.
pub enum OutputTarget {
    /// A regular file, or none yet: written beside and renamed into place.
    Replace(PathBuf),
    /// A device or FIFO: written in place, never replaced.
    InPlace(PathBuf),
}

/// Classifies `path` for [`write_output`]; a directory is an error.
pub fn output_target(path: &Path) -> Result<OutputTarget> {
    let target = follow_symlinks(path)?;
    match fs::metadata(&target) {
        Ok(meta) if meta.is_dir() => bail!("output {} is a directory; give a file name", path.display()),
        Ok(meta) if !meta.is_file() => Ok(OutputTarget::InPlace(target)),
        Ok(_) => Ok(OutputTarget::Replace(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(OutputTarget::Replace(target)),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

/// Writes `--output`: see the module docs for what happens to each kind of path.
pub fn write_output(path: &Path, write: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>) -> Result<()> {
    match output_target(path)? {
        OutputTarget::InPlace(target) => {
            // A device or a pipe: write in place, no truncation games, no rename.
            let file = OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("cannot open output {}", path.display()))?;
            let mut out = BufWriter::new(file);
            write(&mut out).with_context(|| format!("cannot write {}", path.display()))?;
            out.flush().with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        }
        OutputTarget::Replace(target) => {
            let mode = fs::metadata(&target).ok().map(|m| m.permissions().mode());
            replace_atomically(&target, mode, write)
        }
    }
}

/// The path a chain of symlinks ends at (which may not exist yet).
fn follow_symlinks(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    // Linux's own limit on links followed in one path lookup.
    for _ in 0..40 {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link =
                    fs::read_link(&current).with_context(|| format!("cannot read link {}", current.display()))?;
                current = match current.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    bail!("output {} is a chain of more than 40 symlinks (a loop?)", path.display())
}

/// Writes to a temporary file beside `path` and renames it into place, so a failure
/// half-way never leaves a truncated output file.
fn replace_atomically(
    path: &Path,
    mode: Option<u32>,
    write: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp =
        dartboard_fs::temp_file_in(dir).with_context(|| format!("cannot create output file in {}", dir.display()))?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        write(&mut out).with_context(|| format!("cannot write {}", path.display()))?;
        out.flush().with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(mode) = mode {
        // Replacing a file keeps its mode, as `>` in a shell would.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_empty_ones_and_strip_line_ends() {
        let lines = lines_of(&b"a\r\n\nb\nlast"[..], "t").unwrap();
        assert_eq!(lines, ["a", "", "b", "last"]);
        assert!(lines_of(&b"\xff\n"[..], "t").unwrap_err().to_string().contains("line 1 of t is not UTF-8"));
    }

    #[test]
    fn an_endless_line_fails_fast() {
        let err = lines_of(BufReader::new(io::repeat(b'x')), "zeros").unwrap_err().to_string();
        assert!(err.contains("line 1 of zeros is longer than 64 MiB"), "{err}");
        // A line exactly at the cap is still a text.
        let mut exact = vec![b'y'; MAX_LINE_BYTES];
        exact.push(b'\n');
        assert_eq!(lines_of(&exact[..], "t").unwrap()[0].len(), MAX_LINE_BYTES);
    }
}
