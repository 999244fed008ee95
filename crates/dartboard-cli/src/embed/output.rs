//! The formats `dartboard embed` writes: JSON Lines (the default), a `.npy` that numpy
//! can memory-map, and Parquet (row index, optional text, embedding as a fixed-size
//! list) for Ray, Spark, pandas and LanceDB. Values are float32, or under `--precision`
//! int8/uint8 (one per dimension) or binary/ubinary (eight dimensions to a byte): JSON
//! integers, npy dtype `i1`/`u1`, Parquet lists of Int8/UInt8.
//!
//! Each writer takes rows window by window and is finished once, so the file is
//! complete only when [`RowWriter::finish`] returns.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow_array::builder::{ArrayBuilder, FixedSizeListBuilder, Float32Builder, Int8Builder, UInt8Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use clap::ValueEnum;
use dartboard_embeddings::{Precision, QuantizedData};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// What `--format` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `{"embedding":[...]}` per line (with `"text"` first under `--keep-text`).
    Jsonl,
    /// An array of shape (texts, values per row), little-endian, numpy format 1.0:
    /// float32, or int8/uint8 under `--precision`.
    Npy,
    /// Columns `index` (uint64), `text` (under `--keep-text`) and `embedding`
    /// (fixed-size list of float32, or int8/uint8 under `--precision`).
    Parquet,
}

impl OutputFormat {
    /// Whether the format can go to a pipe as it is produced (npy needs the row
    /// count in its header, Parquet its footer).
    pub fn streams(self) -> bool {
        self == OutputFormat::Jsonl
    }
}

/// The values of a window, by element type.
#[derive(Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl<'a> From<&'a QuantizedData> for Values<'a> {
    fn from(data: &'a QuantizedData) -> Self {
        match data {
            QuantizedData::Float32(v) => Values::F32(v),
            QuantizedData::Int8(v) => Values::I8(v),
            QuantizedData::Uint8(v) => Values::U8(v),
        }
    }
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I8(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }
}

/// A window of results: rows of `dim` values each (the embedding's dimension, or its
/// bytes for the bit precisions), and the texts under `--keep-text`.
pub struct Rows<'a> {
    pub dim: usize,
    pub values: Values<'a>,
    pub texts: Option<&'a [String]>,
}

impl Rows<'_> {
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// The element type a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    F32,
    I8,
    U8,
}

impl From<Precision> for Element {
    fn from(precision: Precision) -> Self {
        match precision {
            Precision::Float32 => Element::F32,
            Precision::Int8 | Precision::Binary => Element::I8,
            Precision::Uint8 | Precision::Ubinary => Element::U8,
        }
    }
}

impl Element {
    fn arrow(self) -> DataType {
        match self {
            Element::F32 => DataType::Float32,
            Element::I8 => DataType::Int8,
            Element::U8 => DataType::UInt8,
        }
    }

    fn npy_descr(self) -> &'static str {
        match self {
            Element::F32 => "<f4",
            Element::I8 => "|i1",
            Element::U8 => "|u1",
        }
    }
}

/// Writes one output file window by window.
pub enum RowWriter<W: Write + Send> {
    Jsonl { out: W, line: Vec<u8> },
    Npy { out: W, dim: usize, expected: u64, written: u64 },
    // Boxed: the Parquet writer is large and this enum lives on the stack.
    Parquet { writer: Box<ArrowWriter<W>>, schema: Arc<Schema>, dim: usize, element: Element, next_index: u64 },
}

impl<W: Write + Send> RowWriter<W> {
    /// Starts a file of `dim` values of type `element` per row. `total` rows must
    /// follow for npy, whose header holds the count.
    pub fn new(
        format: OutputFormat,
        mut out: W,
        element: Element,
        dim: usize,
        total: u64,
        keep_text: bool,
    ) -> Result<Self> {
        Ok(match format {
            OutputFormat::Jsonl => RowWriter::Jsonl { out, line: Vec::with_capacity(16 * dim + 64) },
            OutputFormat::Npy => {
                out.write_all(&npy_header(element, total, dim))?;
                RowWriter::Npy { out, dim, expected: total, written: 0 }
            }
            OutputFormat::Parquet => {
                let schema = parquet_schema(element, dim, keep_text)?;
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                let writer =
                    ArrowWriter::try_new(out, schema.clone(), Some(props)).context("cannot start the Parquet file")?;
                RowWriter::Parquet { writer: Box::new(writer), schema, dim, element, next_index: 0 }
            }
        })
    }

    /// Appends a window of rows.
    pub fn write(&mut self, rows: &Rows<'_>) -> Result<()> {
        match self {
            RowWriter::Jsonl { out, line } => {
                let mut floats = ryu::Buffer::new();
                for i in 0..rows.len() {
                    let span = i * rows.dim..(i + 1) * rows.dim;
                    line.clear();
                    line.push(b'{');
                    if let Some(texts) = rows.texts {
                        line.extend_from_slice(b"\"text\":");
                        serde_json::to_writer(&mut *line, &texts[i])?;
                        line.push(b',');
                    }
                    line.extend_from_slice(b"\"embedding\":[");
                    match rows.values {
                        // Finite by construction: the embedder refuses NaN and infinity.
                        Values::F32(v) => {
                            join(line, &v[span], |line, x| line.extend_from_slice(floats.format_finite(*x).as_bytes()))
                        }
                        Values::I8(v) => {
                            join(line, &v[span], |line, x| line.extend_from_slice(x.to_string().as_bytes()))
                        }
                        Values::U8(v) => {
                            join(line, &v[span], |line, x| line.extend_from_slice(x.to_string().as_bytes()))
                        }
                    }
                    line.extend_from_slice(b"]}\n");
                    out.write_all(line)?;
                }
            }
            RowWriter::Npy { out, dim, written, .. } => {
                debug_assert_eq!(*dim, rows.dim);
                let bytes: Vec<u8> = match rows.values {
                    Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Values::I8(v) => v.iter().map(|&x| x as u8).collect(),
                    Values::U8(v) => v.to_vec(),
                };
                out.write_all(&bytes)?;
                *written += rows.len() as u64;
            }
            RowWriter::Parquet { writer, schema, dim, element, next_index } => {
                let n = rows.len();
                let index = UInt64Array::from_iter_values(*next_index..*next_index + n as u64);
                let embedding = match rows.values {
                    Values::F32(v) => fixed_size_list(Float32Builder::with_capacity(v.len()), *element, *dim, n, |b| {
                        b.append_slice(v)
                    }),
                    Values::I8(v) => {
                        fixed_size_list(Int8Builder::with_capacity(v.len()), *element, *dim, n, |b| b.append_slice(v))
                    }
                    Values::U8(v) => {
                        fixed_size_list(UInt8Builder::with_capacity(v.len()), *element, *dim, n, |b| b.append_slice(v))
                    }
                };
                let mut columns: Vec<ArrayRef> = vec![Arc::new(index)];
                if let Some(texts) = rows.texts {
                    columns.push(Arc::new(StringArray::from_iter_values(texts.iter())));
                }
                columns.push(embedding);
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

/// Appends `items` to `line`, comma-separated, each written by `write`.
fn join<T>(line: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    for (j, x) in items.iter().enumerate() {
        if j > 0 {
            line.push(b',');
        }
        write(line, x);
    }
}

/// A fixed-size list column of `n` rows of `dim` values, filled by `fill` with all
/// `n × dim` values at once (then cut into rows).
fn fixed_size_list<B: ArrayBuilder>(
    values: B,
    element: Element,
    dim: usize,
    n: usize,
    fill: impl FnOnce(&mut B),
) -> ArrayRef {
    let mut list = FixedSizeListBuilder::with_capacity(values, dim as i32, n).with_field(Arc::new(Field::new(
        "item",
        element.arrow(),
        false,
    )));
    fill(list.values());
    for _ in 0..n {
        list.append(true);
    }
    Arc::new(list.finish())
}

fn parquet_schema(element: Element, dim: usize, keep_text: bool) -> Result<Arc<Schema>> {
    let dim = i32::try_from(dim).context("embedding dimension too large for Parquet")?;
    let mut fields = vec![Field::new("index", DataType::UInt64, false)];
    if keep_text {
        fields.push(Field::new("text", DataType::Utf8, false));
    }
    let item = Arc::new(Field::new("item", element.arrow(), false));
    fields.push(Field::new("embedding", DataType::FixedSizeList(item, dim), false));
    Ok(Arc::new(Schema::new(fields)))
}

/// numpy's format 1.0 header for a C-order little-endian array of `element` of shape
/// `(rows, dim)`, padded so the data starts on a 64-byte boundary.
pub fn npy_header(element: Element, rows: u64, dim: usize) -> Vec<u8> {
    let descr = element.npy_descr();
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
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
            let h = npy_header(Element::F32, rows, dim);
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
        let mut w = RowWriter::new(OutputFormat::Jsonl, Vec::new(), Element::F32, 2, 2, true).unwrap();
        w.write(&Rows { dim: 2, values: Values::F32(&values), texts: Some(&texts) }).unwrap();
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
        let w = RowWriter::new(OutputFormat::Npy, Vec::new(), Element::F32, 2, 3, false).unwrap();
        assert!(w.finish().is_err());
    }

    #[test]
    fn byte_rows_are_json_integers_and_raw_npy_bytes() {
        let values = [-128i8, 0, 127, -1];
        let mut w = RowWriter::new(OutputFormat::Jsonl, Vec::new(), Element::I8, 2, 2, false).unwrap();
        w.write(&Rows { dim: 2, values: Values::I8(&values), texts: None }).unwrap();
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(out, "{\"embedding\":[-128,0]}\n{\"embedding\":[127,-1]}\n");
        let mut w = RowWriter::new(OutputFormat::Npy, Vec::new(), Element::U8, 2, 2, false).unwrap();
        w.write(&Rows { dim: 2, values: Values::U8(&[0, 255, 7, 8]), texts: None }).unwrap();
        let out = w.finish().unwrap();
        let header = npy_header(Element::U8, 2, 2);
        assert!(String::from_utf8_lossy(&header).contains("'descr': '|u1'"));
        assert_eq!(&out[..header.len()], &header[..]);
        assert_eq!(&out[header.len()..], &[0, 255, 7, 8]);
    }
}
