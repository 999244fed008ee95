//! The formats `dartboard embed` writes: JSON Lines (the default), a float32 `.npy`
//! that numpy can memory-map, and Parquet (row index, optional text, embedding as a
//! fixed-size list of f32) for Ray, Spark, pandas and LanceDB.
//!
//! Each writer takes rows window by window and is finished once, so the file is
//! complete only when [`RowWriter::finish`] returns.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use clap::ValueEnum;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// What `--format` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `{"embedding":[...]}` per line (with `"text"` first under `--keep-text`).
    Jsonl,
    /// A float32 array of shape (texts, dim), little-endian, numpy format 1.0.
    Npy,
    /// Columns `index` (uint64), `text` (under `--keep-text`) and `embedding`
    /// (fixed-size list of float32).
    Parquet,
}

impl OutputFormat {
    /// Whether the format can go to a pipe as it is produced (npy needs the row
    /// count in its header, Parquet its footer).
    pub fn streams(self) -> bool {
        self == OutputFormat::Jsonl
    }
}

/// A window of results: `rows × dim` floats, and the texts under `--keep-text`.
pub struct Rows<'a> {
    pub dim: usize,
    pub values: &'a [f32],
    pub texts: Option<&'a [String]>,
}

impl Rows<'_> {
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// Writes one output file window by window.
pub enum RowWriter<W: Write + Send> {
    Jsonl { out: W, line: Vec<u8> },
    Npy { out: W, dim: usize, expected: u64, written: u64 },
    // Boxed: the Parquet writer is large and this enum lives on the stack.
    Parquet { writer: Box<ArrowWriter<W>>, schema: Arc<Schema>, dim: usize, next_index: u64 },
}

impl<W: Write + Send> RowWriter<W> {
    /// Starts a file. `total` rows must follow for npy, whose header holds the count.
    pub fn new(format: OutputFormat, mut out: W, dim: usize, total: u64, keep_text: bool) -> Result<Self> {
        Ok(match format {
            OutputFormat::Jsonl => RowWriter::Jsonl { out, line: Vec::with_capacity(16 * dim + 64) },
            OutputFormat::Npy => {
                out.write_all(&npy_header(total, dim))?;
                RowWriter::Npy { out, dim, expected: total, written: 0 }
            }
            OutputFormat::Parquet => {
                let schema = parquet_schema(dim, keep_text)?;
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                let writer =
                    ArrowWriter::try_new(out, schema.clone(), Some(props)).context("cannot start the Parquet file")?;
                RowWriter::Parquet { writer: Box::new(writer), schema, dim, next_index: 0 }
            }
        })
    }

    /// Appends a window of rows.
    pub fn write(&mut self, rows: &Rows<'_>) -> Result<()> {
        match self {
            RowWriter::Jsonl { out, line } => {
                let mut floats = ryu::Buffer::new();
                for (i, row) in rows.values.chunks_exact(rows.dim.max(1)).enumerate() {
                    line.clear();
                    line.push(b'{');
                    if let Some(texts) = rows.texts {
                        line.extend_from_slice(b"\"text\":");
                        serde_json::to_writer(&mut *line, &texts[i])?;
                        line.push(b',');
                    }
                    line.extend_from_slice(b"\"embedding\":[");
                    for (j, &x) in row.iter().enumerate() {
                        if j > 0 {
                            line.push(b',');
                        }
                        // Finite by construction: the embedder refuses NaN and infinity.
                        line.extend_from_slice(floats.format_finite(x).as_bytes());
                    }
                    line.extend_from_slice(b"]}\n");
                    out.write_all(line)?;
                }
            }
            RowWriter::Npy { out, dim, written, .. } => {
                debug_assert_eq!(*dim, rows.dim);
                let mut bytes = Vec::with_capacity(rows.values.len() * 4);
                for x in rows.values {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                out.write_all(&bytes)?;
                *written += rows.len() as u64;
            }
            RowWriter::Parquet { writer, schema, dim, next_index } => {
                let n = rows.len();
                let index = UInt64Array::from_iter_values(*next_index..*next_index + n as u64);
                let mut values =
                    FixedSizeListBuilder::with_capacity(Float32Builder::with_capacity(n * *dim), *dim as i32, n)
                        .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
                for row in rows.values.chunks_exact((*dim).max(1)) {
                    values.values().append_slice(row);
                    values.append(true);
                }
                let mut columns: Vec<ArrayRef> = vec![Arc::new(index)];
                if let Some(texts) = rows.texts {
                    columns.push(Arc::new(StringArray::from_iter_values(texts.iter())));
                }
                columns.push(Arc::new(values.finish()));
                let batch = RecordBatch::try_new(schema.clone(), columns).context("building a Parquet row group")?;
                writer.write(&batch).context("writing Parquet")?;
                // One row group per window keeps memory bounded.
                writer.flush().context("writing Parquet")?;
                *next_index += n as u64;
            }
        }
        Ok(())
    }

    /// Completes the file and returns the underlying writer.
    pub fn finish(self) -> Result<W> {
        match self {
            RowWriter::Jsonl { mut out, .. } => {
                out.flush()?;
                Ok(out)
            }
            RowWriter::Npy { mut out, expected, written, .. } => {
                if expected != written {
                    bail!("internal error: the .npy header says {expected} rows but {written} were written");
                }
                out.flush()?;
                Ok(out)
            }
            RowWriter::Parquet { writer, .. } => {
                let mut out = (*writer).into_inner().context("finishing the Parquet file")?;
                out.flush()?;
                Ok(out)
            }
        }
    }
}

fn parquet_schema(dim: usize, keep_text: bool) -> Result<Arc<Schema>> {
    let dim = i32::try_from(dim).context("embedding dimension too large for Parquet")?;
    let mut fields = vec![Field::new("index", DataType::UInt64, false)];
    if keep_text {
        fields.push(Field::new("text", DataType::Utf8, false));
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    fields.push(Field::new("embedding", DataType::FixedSizeList(item, dim), false));
    Ok(Arc::new(Schema::new(fields)))
}

/// numpy's format 1.0 header for a C-order little-endian float32 array of shape
/// `(rows, dim)`, padded so the data starts on a 64-byte boundary.
pub fn npy_header(rows: u64, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(10 + header_len);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_names_the_shape() {
        for (rows, dim) in [(0, 384), (3, 2), (110_320, 1024), (u64::MAX, 4096)] {
            let h = npy_header(rows, dim);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
            let text = std::str::from_utf8(&h[10..]).unwrap();
            assert!(text.contains(&format!("'shape': ({rows}, {dim})")), "{text}");
            assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn jsonl_rows_round_trip_exactly() {
        let values = [0.1f32, -2.5e-8, 1.0, 3.4028235e38];
        let texts = ["a \"quoted\"\ntext".to_owned(), "b".to_owned()];
        let mut w = RowWriter::new(OutputFormat::Jsonl, Vec::new(), 2, 2, true).unwrap();
        w.write(&Rows { dim: 2, values: &values, texts: Some(&texts) }).unwrap();
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows[0]["text"], texts[0].as_str());
        let back: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                r["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(back, values, "shortest round-trip floats parse back to the same f32");
    }

    #[test]
    fn npy_refuses_a_short_write() {
        let w = RowWriter::new(OutputFormat::Npy, Vec::new(), 2, 3, false).unwrap();
        assert!(w.finish().is_err());
    }
}
