//! Output precisions, computed as sentence-transformers' `quantize_embeddings` computes
//! them (`sentence_transformers/util/quantization.py`), so a vector quantized here is
//! the same bytes as one quantized there:
//!
//! - `float32`: the values unchanged.
//! - `int8` / `uint8` (scalar quantization): per dimension, 256 buckets of width
//!   `(max - min) / 255` from a calibration range; a value lands in bucket
//!   `floor((x - min) / width)`, clipped to 0..=255 (`int8` then subtracts 128). A
//!   dimension whose range is a single value gets width 1. Without calibration the
//!   range comes from the embeddings being quantized, which needs at least two of them.
//! - `binary` / `ubinary`: one bit per dimension, set where the value is above 0,
//!   packed eight to a byte with the first dimension in the highest bit (numpy's
//!   `packbits`); the last byte of a row is padded with zero bits. `binary` is that
//!   byte minus 128, as `i8`.
//!
//! Every step is done in f32, as numpy does it on float32 embeddings (subtraction,
//! division, floor, each correctly rounded), so the buckets agree exactly, boundary
//! values included.

use std::fmt;
use std::str::FromStr;

use crate::error::EmbedError;
use crate::pipeline::embeddings::Embeddings;

/// The number type of output vectors, by sentence-transformers' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 values, unchanged.
    Float32,
    /// One signed byte per dimension (bucket − 128).
    Int8,
    /// One unsigned byte per dimension (bucket).
    Uint8,
    /// One bit per dimension, eight to a signed byte (packed byte − 128).
    Binary,
    /// One bit per dimension, eight to an unsigned byte.
    Ubinary,
}

impl Precision {
    /// All precisions, in sentence-transformers' order.
    pub const ALL: [Precision; 5] =
        [Precision::Float32, Precision::Int8, Precision::Uint8, Precision::Binary, Precision::Ubinary];

    /// The name sentence-transformers uses (`float32`, `int8`, `uint8`, `binary`, `ubinary`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Int8 => "int8",
            Precision::Uint8 => "uint8",
            Precision::Binary => "binary",
            Precision::Ubinary => "ubinary",
        }
    }

    /// Whether the precision needs per-dimension ranges (scalar quantization).
    pub fn needs_ranges(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Uint8)
    }

    /// Values per output row for `dim`-dimensional embeddings: `dim`, or
    /// `ceil(dim / 8)` bytes for the bit precisions.
    pub fn row_len(self, dim: usize) -> usize {
        match self {
            Precision::Binary | Precision::Ubinary => dim.div_ceil(8),
            _ => dim,
        }
    }

    /// Whether the output values are signed bytes (`int8`, `binary`).
    pub fn is_signed_byte(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Binary)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A precision name that is none of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?}; use one of float32, int8, uint8, binary, ubinary")]
pub struct ParsePrecisionError(pub String);

impl FromStr for Precision {
    type Err = ParsePrecisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| ParsePrecisionError(s.to_owned()))
    }
}

/// Per-dimension minimum and maximum for `int8`/`uint8` (sentence-transformers'
/// `ranges`, a `(2, dim)` array): the values outside are clipped to the end buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizationRanges {
    min: Vec<f32>,
    max: Vec<f32>,
}

impl QuantizationRanges {
    /// Ranges from explicit minima and maxima (equal lengths, finite, `min <= max`).
    pub fn new(min: Vec<f32>, max: Vec<f32>) -> Result<Self, String> {
        if min.len() != max.len() {
            return Err(format!("{} minima but {} maxima; give one of each per dimension", min.len(), max.len()));
        }
        if min.is_empty() {
            return Err("the ranges have no dimensions".to_owned());
        }
        if let Some(i) = (0..min.len()).find(|&i| !(min[i].is_finite() && max[i].is_finite() && min[i] <= max[i])) {
            return Err(format!(
                "dimension {i} has range {}..{}; ranges must be finite with min <= max",
                min[i], max[i]
            ));
        }
        Ok(QuantizationRanges { min, max })
    }

    /// The ranges of `rows × dim` calibration values (numpy's `min`/`max` over axis 0).
    pub fn from_rows(dim: usize, values: &[f32]) -> Result<Self, String> {
        let mut builder = RangesBuilder::new(dim);
        builder.add_rows(values)?;
        builder.finish()
    }

    /// The ranges of a set of embeddings (`calibration_embeddings`).
    pub fn from_embeddings(embeddings: &Embeddings) -> Result<Self, String> {
        Self::from_rows(embeddings.dim(), embeddings.as_slice())
    }

    /// Dimensions covered.
    pub fn dim(&self) -> usize {
        self.min.len()
    }

    /// Per-dimension minima.
    pub fn min(&self) -> &[f32] {
        &self.min
    }

    /// Per-dimension maxima.
    pub fn max(&self) -> &[f32] {
        &self.max
    }

    /// The ranges of the first `dim` dimensions: what calibration embeddings truncated
    /// to `dim` would give, since each dimension's range is its own.
    pub fn truncated(&self, dim: usize) -> Result<Self, String> {
        if dim == 0 || dim > self.dim() {
            return Err(format!("cannot take the first {dim} of {} calibrated dimensions", self.dim()));
        }
        Ok(QuantizationRanges { min: self.min[..dim].to_vec(), max: self.max[..dim].to_vec() })
    }
}

/// Accumulates per-dimension ranges over rows that arrive a few at a time (a corpus
/// read window by window), giving the same ranges as all rows at once.
#[derive(Debug, Clone)]
pub struct RangesBuilder {
    dim: usize,
    rows: u64,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl RangesBuilder {
    /// No rows yet, for `dim`-dimensional rows.
    pub fn new(dim: usize) -> Self {
        RangesBuilder { dim, rows: 0, min: vec![f32::INFINITY; dim], max: vec![f32::NEG_INFINITY; dim] }
    }

    /// Adds `values.len() / dim` rows. Non-finite values are refused: numpy's range
    /// would be NaN and every bucket undefined.
    pub fn add_rows(&mut self, values: &[f32]) -> Result<(), String> {
        if self.dim == 0 || !values.len().is_multiple_of(self.dim) {
            return Err(format!("{} values are not whole rows of {}", values.len(), self.dim));
        }
        for (r, row) in values.chunks_exact(self.dim).enumerate() {
            if let Some(i) = row.iter().position(|x| !x.is_finite()) {
                return Err(format!(
                    "calibration row {} has a non-finite value ({}) in dimension {i}",
                    self.rows + r as u64,
                    row[i]
                ));
            }
            for ((lo, hi), &x) in self.min.iter_mut().zip(&mut self.max).zip(row) {
                *lo = lo.min(x);
                *hi = hi.max(x);
            }
        }
        self.rows += (values.len() / self.dim) as u64;
        Ok(())
    }

    /// Width of the rows.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The ranges; at least one row is needed.
    pub fn finish(self) -> Result<QuantizationRanges, String> {
        if self.rows == 0 {
            return Err("there are no calibration embeddings to take ranges from".to_owned());
        }
        Ok(QuantizationRanges { min: self.min, max: self.max })
    }
}

/// Quantized values, by element type.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantizedData {
    /// `float32`.
    Float32(Vec<f32>),
    /// `int8` and `binary`.
    Int8(Vec<i8>),
    /// `uint8` and `ubinary`.
    Uint8(Vec<u8>),
}

/// Quantized embeddings: `rows` rows of [`Precision::row_len`] values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    precision: Precision,
    dim: usize,
    rows: usize,
    data: QuantizedData,
}

impl Quantized {
    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Dimensions of the embeddings that were quantized.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values per row (bytes for the bit precisions: `ceil(dim / 8)`).
    pub fn row_len(&self) -> usize {
        self.precision.row_len(self.dim)
    }

    /// The values.
    pub fn data(&self) -> &QuantizedData {
        &self.data
    }

    /// The values, owned.
    pub fn into_data(self) -> QuantizedData {
        self.data
    }
}

/// `quantize_embeddings(embeddings, precision, ranges=…)`: with `ranges` `None`,
/// `int8`/`uint8` take the ranges from `embeddings` themselves (which then needs at
/// least two rows, as in sentence-transformers). `ranges` is ignored by the other
/// precisions, as there.
pub fn quantize(
    embeddings: &Embeddings,
    precision: Precision,
    ranges: Option<&QuantizationRanges>,
) -> Result<Quantized, EmbedError> {
    quantize_rows(embeddings.dim(), embeddings.as_slice(), precision, ranges)
}

/// [`quantize`] on `values.len() / dim` rows of `dim` values.
pub fn quantize_rows(
    dim: usize,
    values: &[f32],
    precision: Precision,
    ranges: Option<&QuantizationRanges>,
) -> Result<Quantized, EmbedError> {
    let fail = |reason: String| EmbedError::Quantization { precision, reason };
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(fail(format!("{} values are not whole rows of {dim}", values.len())));
    }
    let rows = values.len() / dim;
    let data = match precision {
        Precision::Float32 => QuantizedData::Float32(values.to_vec()),
        Precision::Int8 | Precision::Uint8 => {
            // Nothing to quantize means nothing to calibrate (sentence-transformers returns
            // an empty array before looking at ranges).
            let own;
            let ranges = match ranges {
                Some(r) => r,
                None if rows == 0 => {
                    own = QuantizationRanges { min: vec![0.0; dim], max: vec![0.0; dim] };
                    &own
                }
                None if rows == 1 => {
                    return Err(fail(
                        "ranges cannot be computed from a single embedding; give calibration embeddings (or \
                         ranges) from a representative set of texts"
                            .to_owned(),
                    ))
                }
                None => {
                    own = QuantizationRanges::from_rows(dim, values).map_err(fail)?;
                    &own
                }
            };
            if ranges.dim() != dim {
                return Err(fail(format!(
                    "the calibration ranges have {} dimensions but the embeddings {dim}; calibrate with \
                     embeddings of the same model and dimension",
                    ranges.dim()
                )));
            }
            let buckets = buckets(dim, values, ranges);
            if precision == Precision::Uint8 {
                QuantizedData::Uint8(buckets)
            } else {
                QuantizedData::Int8(buckets.into_iter().map(|b| (i16::from(b) - 128) as i8).collect())
            }
        }
        Precision::Ubinary => QuantizedData::Uint8(pack_bits(dim, values)),
        Precision::Binary => {
            QuantizedData::Int8(pack_bits(dim, values).into_iter().map(|b| (i16::from(b) - 128) as i8).collect())
        }
    };
    Ok(Quantized { precision, dim, rows, data })
}

/// `clip(floor((x - start) / step), 0, 255)` with `step = (max - min) / 255` (1 where
/// that is 0), all in f32 like numpy on float32 arrays.
fn buckets(dim: usize, values: &[f32], ranges: &QuantizationRanges) -> Vec<u8> {
    let steps: Vec<f32> = ranges
        .min
        .iter()
        .zip(&ranges.max)
        .map(|(lo, hi)| {
            let step = (hi - lo) / 255.0;
            if step == 0.0 {
                1.0
            } else {
                step
            }
        })
        .collect();
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(dim) {
        for ((&x, &start), &step) in row.iter().zip(&ranges.min).zip(&steps) {
            // `as u8` saturates, but the clamp makes that moot; a NaN (not produced by the
            // embedder) would become 0, as no bucket is defined for it anyway.
            out.push(((x - start) / step).floor().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// `packbits(x > 0, axis=-1)`: big-endian bit order, rows padded to whole bytes.
fn pack_bits(dim: usize, values: &[f32]) -> Vec<u8> {
    let row_len = dim.div_ceil(8);
    let mut out = Vec::with_capacity(values.len() / dim * row_len);
    for row in values.chunks_exact(dim) {
        for byte in row.chunks(8) {
            let mut packed = 0u8;
            for (bit, &x) in byte.iter().enumerate() {
                if x > 0.0 {
                    packed |= 0x80 >> bit;
                }
            }
            out.push(packed);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(dim: usize, values: &[f32], precision: Precision, ranges: Option<&QuantizationRanges>) -> QuantizedData {
        quantize_rows(dim, values, precision, ranges).unwrap().into_data()
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_five() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        let err = "int4".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("\"int4\"") && err.contains("float32, int8, uint8, binary, ubinary"), "{err}");
        assert!("INT8".parse::<Precision>().is_err(), "names are case-sensitive, as in sentence-transformers");
    }

    #[test]
    fn bits_are_packed_first_dimension_highest_and_rows_padded() {
        // 10 dimensions: two bytes per row, the second holding 2 bits then 6 zero bits.
        let row = [1.0, -1.0, 0.0, 2.0, -0.0, 0.5, 0.0, 1e-30, 3.0, 1.0];
        let values: Vec<f32> = row.iter().chain(row.iter().map(|x| -x).collect::<Vec<_>>().iter()).copied().collect();
        // -0.0 and 0.0 are not above 0; 1e-30 is. Expected bytes from sentence-transformers 6.2.
        let expected = vec![0b1001_0101, 0b1100_0000, 0b0100_0000, 0b0000_0000];
        assert_eq!(q(10, &values, Precision::Ubinary, None), QuantizedData::Uint8(expected.clone()));
        let signed = expected.iter().map(|&b| (i32::from(b) - 128) as i8).collect();
        assert_eq!(q(10, &values, Precision::Binary, None), QuantizedData::Int8(signed));
        assert_eq!(Precision::Binary.row_len(10), 2);
    }

    #[test]
    fn scalar_buckets_follow_the_range_and_clip() {
        let ranges = QuantizationRanges::new(vec![-1.0, 0.0, 5.0], vec![1.0, 0.0, 5.0]).unwrap();
        // Dimension 0: step 2/255; dimension 1 and 2: a single value, step 1.
        let values = [-1.0, 0.0, 5.0, 1.0, 0.5, 6.5, -2.0, -0.5, 4.0, 0.0, 0.0, 5.0];
        // Expected values from sentence-transformers 6.2's quantize_embeddings on the same
        // f32 inputs. The maximum itself lands in bucket 254, not 255: 2 / (2/255 in f32)
        // is just below 255 and floor keeps it there.
        let u = q(3, &values, Precision::Uint8, Some(&ranges));
        assert_eq!(u, QuantizedData::Uint8(vec![0, 0, 0, 254, 0, 1, 0, 0, 0, 127, 0, 0]));
        let i = q(3, &values, Precision::Int8, Some(&ranges));
        assert_eq!(i, QuantizedData::Int8(vec![-128, -128, -128, 126, -128, -127, -128, -128, -128, -1, -128, -128]));
    }

    #[test]
    fn own_ranges_need_two_rows_and_matching_dimensions() {
        for p in [Precision::Int8, Precision::Uint8] {
            let err = quantize_rows(2, &[0.1, 0.2], p, None).unwrap_err().to_string();
            assert!(err.contains(p.name()) && err.contains("single embedding") && err.contains("calibration"), "{err}");
            assert!(quantize_rows(2, &[], p, None).unwrap().is_empty());
            let ranges = QuantizationRanges::new(vec![0.0; 3], vec![1.0; 3]).unwrap();
            let err = quantize_rows(2, &[0.1, 0.2], p, Some(&ranges)).unwrap_err().to_string();
            assert!(err.contains("3 dimensions") && err.contains("2"), "{err}");
        }
        // Bits and float32 need no ranges, so one row is fine.
        assert_eq!(q(2, &[0.1, -0.2], Precision::Ubinary, None), QuantizedData::Uint8(vec![0x80]));
        assert_eq!(q(2, &[0.1, -0.2], Precision::Float32, None), QuantizedData::Float32(vec![0.1, -0.2]));
    }

    #[test]
    fn windowed_ranges_equal_whole_ranges() {
        let values: Vec<f32> = (0..60).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let whole = QuantizationRanges::from_rows(4, &values).unwrap();
        let mut builder = RangesBuilder::new(4);
        for window in values.chunks(12) {
            builder.add_rows(window).unwrap();
        }
        assert_eq!(builder.rows(), 15);
        assert_eq!(builder.finish().unwrap(), whole);
        assert!(RangesBuilder::new(4).finish().is_err());
        assert!(RangesBuilder::new(2).add_rows(&[1.0, f32::NAN]).unwrap_err().contains("non-finite"));
        assert!(QuantizationRanges::new(vec![1.0], vec![0.0]).unwrap_err().contains("min <= max"));
        assert_eq!(whole.truncated(2).unwrap().min(), &whole.min()[..2]);
        assert!(whole.truncated(5).is_err());
    }
}
