//! `--calibration FILE`: the embeddings whose per-dimension minimum and maximum set
//! the int8/uint8 buckets (sentence-transformers' `calibration_embeddings`), read
//! row by row in the formats `dartboard embed` writes, so a calibration set made
//! with `dartboard embed` (or `numpy.save`) can be given back as is:
//!
//! - `.npy`: a 2-D C-order array of float32 or float64 (numpy's format 1.0 to 3.0);
//!   a `(2, dim)` array of minima and maxima (sentence-transformers' `ranges`) gives
//!   exactly those ranges.
//! - `.parquet`: a column `embedding` of lists of float32 or float64.
//! - anything else: JSON Lines with an `"embedding"` array of numbers on each line.
//!
//! float64 values are rounded to f32 before taking the ranges; rounding keeps order,
//! so that equals numpy's min/max in float64 cast to float32 afterwards (what
//! sentence-transformers does with float64 calibration embeddings).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, LargeListArray, ListArray};
use dartboard_embeddings::{QuantizationRanges, RangesBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::files::read_line;

/// Rows read and folded into the ranges at a time.
const ROWS_AT_ONCE: usize = 4096;

/// The per-dimension ranges of the embeddings in `path`.
pub fn read_ranges(path: &Path) -> Result<QuantizationRanges> {
    let name = path.display().to_string();
    let file = dartboard_fs::open_regular(path).with_context(|| format!("cannot read calibration file {name}"))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let builder = match extension.as_str() {
        "npy" => npy(file, &name)?,
        "parquet" => parquet(file, &name)?,
        _ => jsonl(file, &name)?,
    };
    builder.finish().map_err(|reason| anyhow::anyhow!("calibration file {name}: {reason}"))
}

fn add(builder: &mut Option<RangesBuilder>, row: &[f32], name: &str, at: &str) -> Result<()> {
    let b = builder.get_or_insert_with(|| RangesBuilder::new(row.len()));
    if row.is_empty() || row.len() != b.dim() {
        bail!(
            "calibration file {name}: {at} has {} values but the rows before it {}; every embedding must have the \
             same dimension",
            row.len(),
            b.dim()
        );
    }
    b.add_rows(row).map_err(|reason| anyhow::anyhow!("calibration file {name}: {reason}"))
}

fn jsonl(file: File, name: &str) -> Result<RangesBuilder> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut builder = None;
    let mut number = 0u64;
    while let Some(line) = read_line(&mut reader, name, number + 1)? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Line {
            embedding: Vec<f64>,
        }
        let parsed: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "line {number} of calibration file {name} is not a JSON object with an \"embedding\" array of \
                 numbers (as `dartboard embed` writes); give .npy, .parquet or such JSON Lines"
            )
        })?;
        let row: Vec<f32> = parsed.embedding.iter().map(|&x| x as f32).collect();
        add(&mut builder, &row, name, &format!("line {number}"))?;
    }
    builder.with_context(|| format!("calibration file {name} holds no embeddings"))
}

fn npy(file: File, name: &str) -> Result<RangesBuilder> {
    let bad = |what: &str| anyhow::anyhow!("calibration file {name} is not a usable .npy file: {what}");
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(|_| bad("too short"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("no numpy header"));
    }
    let header_len = match magic[6] {
        1 => {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).map_err(|_| bad("truncated header"))?;
            usize::from(u16::from_le_bytes(len))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).map_err(|_| bad("truncated header"))?;
            usize::try_from(u32::from_le_bytes(len)).map_err(|_| bad("header too long"))?
        }
        v => return Err(bad(&format!("format version {v}"))),
    };
    if header_len > 1 << 16 {
        return Err(bad("header too long"));
    }
    let mut header = vec![0u8; header_len];
    reader.read_exact(&mut header).map_err(|_| bad("truncated header"))?;
    let header = String::from_utf8_lossy(&header);
    let field = |key: &str| -> Option<String> {
        let start = header.find(&format!("'{key}':"))? + key.len() + 3;
        let rest = header[start..].trim_start();
        let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
        Some(rest[..end].trim().trim_matches('\'').to_owned())
    };
    let descr = field("descr").ok_or_else(|| bad("no descr in the header"))?;
    let width = match descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => return Err(bad(&format!("dtype {other}; save float32 or float64 embeddings"))),
    };
    if field("fortran_order").as_deref() != Some("False") {
        return Err(bad("Fortran order; save a C-order array (numpy.ascontiguousarray)"));
    }
    let shape = field("shape").ok_or_else(|| bad("no shape in the header"))?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad(&format!("shape {shape}")))?;
    let [rows, dim] = dims[..] else {
        return Err(bad(&format!("shape {shape}; calibration embeddings are a 2-D array (texts, dimensions)")));
    };
    if dim == 0 {
        return Err(bad("zero dimensions"));
    }
    let mut builder = RangesBuilder::new(dim);
    let mut raw = vec![0u8; dim * width * ROWS_AT_ONCE.min(rows.max(1))];
    let mut done = 0;
    while done < rows {
        let n = ROWS_AT_ONCE.min(rows - done);
        let bytes = &mut raw[..n * dim * width];
        reader.read_exact(bytes).map_err(|_| bad(&format!("shorter than its shape {shape} says")))?;
        let values: Vec<f32> = if width == 4 {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        } else {
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect()
        };
        builder.add_rows(&values).map_err(|reason| anyhow::anyhow!("calibration file {name}: {reason}"))?;
        done += n;
    }
    Ok(builder)
}

fn parquet(file: File, name: &str) -> Result<RangesBuilder> {
    const COLUMN: &str = "embedding";
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("calibration file {name} is not a readable Parquet file"))?;
    let fields = builder.schema().fields().clone();
    let Some(index) = fields.iter().position(|f| f.name() == COLUMN) else {
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        bail!(
            "calibration file {name} has no column {COLUMN:?} (columns: {}); give a Parquet file as `dartboard \
             embed --format parquet` writes it",
            names.join(", ")
        );
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(ROWS_AT_ONCE)
        .build()
        .with_context(|| format!("cannot read calibration file {name}"))?;
    let mut ranges = None;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.with_context(|| format!("cannot read calibration file {name}"))?;
        let column = batch.column(0);
        for i in 0..column.len() {
            let at = format!("row {}", row + i as u64);
            let Some(values) = list_value(column.as_ref(), i) else {
                bail!("calibration file {name}: column {COLUMN:?} holds {}, not lists of numbers", column.data_type());
            };
            if column.is_null(i) || values.null_count() > 0 {
                bail!("calibration file {name}: {at} of column {COLUMN:?} is null or holds nulls");
            }
            let values: Vec<f32> = if let Some(v) = values.as_any().downcast_ref::<Float32Array>() {
                v.values().to_vec()
            } else if let Some(v) = values.as_any().downcast_ref::<Float64Array>() {
                v.values().iter().map(|&x| x as f32).collect()
            } else {
                bail!(
                    "calibration file {name}: column {COLUMN:?} holds lists of {}, not float32 or float64",
                    values.data_type()
                );
            };
            add(&mut ranges, &values, name, &at)?;
        }
        row += column.len() as u64;
    }
    ranges.with_context(|| format!("calibration file {name} holds no embeddings"))
}

/// Row `i` of a list column of any of arrow's list types; `None` if it is not one.
fn list_value(column: &dyn Array, i: usize) -> Option<ArrayRef> {
    let any = column.as_any();
    if let Some(list) = any.downcast_ref::<FixedSizeListArray>() {
        return Some(list.value(i));
    }
    if let Some(list) = any.downcast_ref::<ListArray>() {
        return Some(list.value(i));
    }
    any.downcast_ref::<LargeListArray>().map(|list| list.value(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::output::{npy_header, Element};

    fn npy_file(dir: &Path, header: &[u8], values: &[f32]) -> std::path::PathBuf {
        let path = dir.join("c.npy");
        let mut bytes = header.to_vec();
        bytes.extend(values.iter().flat_map(|x| x.to_le_bytes()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn npy_rows_give_per_dimension_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5, -1.0, 2.0, 3.0, 0.25, -4.0];
        let ranges = read_ranges(&npy_file(dir.path(), &npy_header(Element::F32, 3, 2), &values)).unwrap();
        assert_eq!((ranges.min(), ranges.max()), (&[0.25, -4.0][..], &[2.0, 3.0][..]));
    }

    #[test]
    fn npy_files_that_are_not_embedding_matrices_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let short = npy_file(dir.path(), &npy_header(Element::F32, 3, 2), &[1.0; 5]);
        assert!(read_ranges(&short).unwrap_err().to_string().contains("shorter than its shape"));
        let bytes = npy_header(Element::U8, 1, 2);
        let ints = npy_file(dir.path(), &bytes, &[]);
        assert!(read_ranges(&ints).unwrap_err().to_string().contains("dtype |u1"));
        // Same length, so the header stays aligned: "False" -> "True ".
        let mut header = npy_header(Element::F32, 2, 2);
        let at = header.windows(5).position(|w| w == b"False").unwrap();
        header[at..at + 5].copy_from_slice(b"True ");
        let fortran = npy_file(dir.path(), &header, &[0.0; 4]);
        assert!(read_ranges(&fortran).unwrap_err().to_string().contains("Fortran order"));
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_ranges(&empty).unwrap_err().to_string().contains("holds no embeddings"));
        let ragged = dir.path().join("ragged.jsonl");
        std::fs::write(&ragged, "{\"embedding\":[1,2]}\n{\"embedding\":[1]}\n").unwrap();
        assert!(read_ranges(&ragged).unwrap_err().to_string().contains("line 2 has 1 values"));
    }
}
