//! Where `dartboard embed` reads its texts: plain lines, JSON Lines or Parquet, one
//! text at a time, so a corpus never has to fit in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::{Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use clap::ValueEnum;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::files::{read_line, MAX_LINE_BYTES};

/// How the input file holds its texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// One text per line; every line is a text.
    Lines,
    /// One JSON object per line; the text is in `--text-field`.
    Jsonl,
    /// A Parquet file; the texts are in the string column `--text-column`.
    Parquet,
}

/// Where the texts come from, and how to find them in it.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// A file, or `-` for stdin.
    pub path: PathBuf,
    pub format: InputFormat,
    /// The JSON field or Parquet column holding the text.
    pub field: String,
}

impl InputSpec {
    pub fn is_stdin(&self) -> bool {
        self.path == Path::new("-")
    }

    fn name(&self) -> String {
        if self.is_stdin() {
            "stdin".to_owned()
        } else {
            self.path.display().to_string()
        }
    }

    /// How many texts the input holds, when that is cheap to know (a regular file),
    /// for the progress bar's ETA.
    pub fn count(&self) -> Option<u64> {
        if self.is_stdin() || !std::fs::metadata(&self.path).is_ok_and(|m| m.is_file()) {
            return None;
        }
        match self.format {
            InputFormat::Parquet => {
                let file = File::open(&self.path).ok()?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).ok()?;
                u64::try_from(builder.metadata().file_metadata().num_rows()).ok()
            }
            InputFormat::Lines | InputFormat::Jsonl => {
                let mut reader = BufReader::with_capacity(1 << 20, File::open(&self.path).ok()?);
                let (mut lines, mut last) = (0u64, b'\n');
                loop {
                    let buf = reader.fill_buf().ok()?;
                    if buf.is_empty() {
                        break;
                    }
                    lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                    last = buf[buf.len() - 1];
                    let n = buf.len();
                    reader.consume(n);
                }
                Some(lines + u64::from(last != b'\n'))
            }
        }
    }

    /// Opens the input, positioned at its first text.
    pub fn open(&self) -> Result<Texts> {
        let reader: Box<dyn BufRead> = if self.is_stdin() {
            if io::stdin().is_terminal() {
                bail!("--input - reads texts from stdin, but stdin is a terminal; pipe the texts in");
            }
            Box::new(BufReader::new(io::stdin()))
        } else {
            let file =
                File::open(&self.path).with_context(|| format!("cannot open input file {}", self.path.display()))?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                bail!("input file {} is a directory; give a file of texts", self.path.display());
            }
            if self.format == InputFormat::Parquet {
                return Ok(Texts::from(TextSource::Parquet(ParquetTexts::open(file, &self.path, &self.field)?)));
            }
            Box::new(BufReader::with_capacity(1 << 20, file))
        };
        Ok(Texts::from(match self.format {
            InputFormat::Lines => TextSource::Lines { reader, name: self.name(), line: 0 },
            InputFormat::Jsonl => TextSource::Jsonl { reader, name: self.name(), field: self.field.clone(), line: 0 },
            InputFormat::Parquet => bail!("--input-format parquet needs a file, not stdin"),
        }))
    }
}

/// The texts of an input, in order.
pub enum TextSource {
    Lines {
        reader: Box<dyn BufRead>,
        name: String,
        line: u64,
    },
    Jsonl {
        reader: Box<dyn BufRead>,
        name: String,
        field: String,
        line: u64,
    },
    Parquet(ParquetTexts),
    /// Texts given as arguments.
    List(std::vec::IntoIter<String>),
}

/// The texts of an input, in order, with room for one text read ahead.
pub struct Texts {
    source: TextSource,
    peeked: Option<String>,
}

impl From<TextSource> for Texts {
    fn from(source: TextSource) -> Self {
        Texts { source, peeked: None }
    }
}

impl Texts {
    fn next_text(&mut self) -> Result<Option<String>> {
        match self.peeked.take() {
            Some(text) => Ok(Some(text)),
            None => self.source.next_text(),
        }
    }

    /// Reads up to `n` texts, stopping early once they hold `max_bytes` (a window of
    /// long documents must still fit one encode call). At least one text is read, so
    /// a single over-long text reaches the embedder and its clear error.
    pub fn take(&mut self, n: usize, max_bytes: usize) -> Result<Vec<String>> {
        let mut texts = Vec::with_capacity(n.min(1 << 16));
        let mut bytes = 0;
        while texts.len() < n {
            match self.next_text()? {
                Some(text) if !texts.is_empty() && bytes + text.len() > max_bytes => {
                    // Kept for the next window, so windows are the same on every run.
                    self.peeked = Some(text);
                    break;
                }
                Some(text) => {
                    bytes += text.len();
                    texts.push(text);
                }
                None => break,
            }
        }
        Ok(texts)
    }

    /// Skips `n` texts (what a resumed run has done already).
    pub fn skip(&mut self, n: u64) -> Result<()> {
        for done in 0..n {
            if self.next_text()?.is_none() {
                bail!("the input has only {done} texts, but the partial run had embedded {n}; it changed since");
            }
        }
        Ok(())
    }
}

impl TextSource {
    /// The next text, or `None` at the end.
    fn next_text(&mut self) -> Result<Option<String>> {
        match self {
            TextSource::Lines { reader, name, line } => {
                *line += 1;
                read_line(reader, name, *line)
            }
            TextSource::Jsonl { reader, name, field, line } => {
                *line += 1;
                let Some(text) = read_line(reader, name, *line)? else { return Ok(None) };
                let value: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("line {line} of {name} is not a JSON object"))?;
                match value.get(field.as_str()) {
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => {
                        bail!("line {line} of {name}: field {field:?} is {}, not a string", json_kind(other))
                    }
                    None if value.is_object() => {
                        bail!("line {line} of {name} has no field {field:?}; name the text's field with --text-field")
                    }
                    None => bail!("line {line} of {name} is not a JSON object"),
                }
            }
            TextSource::Parquet(texts) => texts.next_text(),
            TextSource::List(texts) => Ok(texts.next()),
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The string column of a Parquet file, batch by batch.
pub struct ParquetTexts {
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    next: usize,
    row: u64,
    name: String,
    column: String,
}

impl ParquetTexts {
    fn open(file: File, path: &Path, column: &str) -> Result<Self> {
        let name = path.display().to_string();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{name} is not a readable Parquet file"))?;
        let schema = builder.parquet_schema();
        let Some(index) = (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == column) else {
            let columns: Vec<String> = (0..schema.num_columns()).map(|i| schema.column(i).path().string()).collect();
            bail!("{name} has no column {column:?} (columns: {}); name it with --text-column", columns.join(", "));
        };
        let mask = ProjectionMask::leaves(schema, [index]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(1024)
            .build()
            .with_context(|| format!("cannot read {name}"))?;
        Ok(ParquetTexts { reader, batch: None, next: 0, row: 0, name, column: column.to_owned() })
    }

    fn next_text(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(batch) = &self.batch {
                if self.next < batch.num_rows() {
                    let i = self.next;
                    self.next += 1;
                    self.row += 1;
                    let column = batch.column(0);
                    if column.is_null(i) {
                        bail!("row {} of {}: column {:?} is null", self.row - 1, self.name, self.column);
                    }
                    let any = column.as_any();
                    let text = if let Some(a) = any.downcast_ref::<StringArray>() {
                        a.value(i)
                    } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                        a.value(i)
                    } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
                        a.value(i)
                    } else {
                        bail!("{}: column {:?} holds {}, not strings", self.name, self.column, column.data_type());
                    };
                    if text.len() > MAX_LINE_BYTES {
                        bail!("row {} of {} is longer than {} MiB", self.row - 1, self.name, MAX_LINE_BYTES >> 20);
                    }
                    return Ok(Some(text.to_owned()));
                }
            }
            match self.reader.next() {
                None => return Ok(None),
                Some(batch) => {
                    self.batch = Some(batch.with_context(|| format!("cannot read {}", self.name))?);
                    self.next = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(texts: &[&str]) -> Texts {
        Texts::from(TextSource::List(texts.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>().into_iter()))
    }

    #[test]
    fn windows_stop_at_the_byte_budget_and_keep_the_next_text() {
        let mut texts = list(&["aaaa", "bbbb", "cc", "dddddddd"]);
        assert_eq!(texts.take(10, 9).unwrap(), ["aaaa", "bbbb"]);
        assert_eq!(texts.take(10, 9).unwrap(), ["cc"]);
        assert_eq!(texts.take(10, 9).unwrap(), ["dddddddd"]);
        assert!(texts.take(10, 9).unwrap().is_empty());
        // A text over the budget alone still goes through: the embedder names it.
        assert_eq!(list(&["xxxxxxxxxxxxxxxxxxxx"]).take(10, 9).unwrap().len(), 1);
        // The count bound still holds.
        assert_eq!(list(&["a", "b", "c"]).take(2, 100).unwrap(), ["a", "b"]);
    }
}
