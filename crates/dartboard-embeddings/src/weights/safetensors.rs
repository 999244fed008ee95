//! The safetensors format's header: every tensor's dtype, shape and byte range,
//! checked against the file before anything is read (the data is read in place
//! by [`super::Weights`] when the model asks for a tensor).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tch::Kind;

use super::Stored;
use crate::error::EmbedError;

/// Largest safetensors header accepted, as in the safetensors crate.
const MAX_HEADER: u64 = 100_000_000;

/// Every tensor a safetensors file lists, checked against the file: a known dtype,
/// a byte range that holds exactly the shape's elements and lies inside the file.
pub(super) fn safetensors_header(file: &File, path: &Path) -> Result<Vec<(String, Stored)>, EmbedError> {
    let invalid = |reason: String| EmbedError::InvalidFile { path: path.to_path_buf(), reason };
    let io = |source| EmbedError::Io { path: path.to_path_buf(), source };
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(|_| invalid("not a safetensors file (too short)".to_owned()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len > file_len - 8 {
        return Err(invalid(format!("not a safetensors file (a header of {header_len} bytes)")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(io)?;
    let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .map_err(|e| invalid(format!("not a safetensors file (its header is not the expected JSON: {e})")))?;
    let data_start = 8 + header_len;
    let mut out = Vec::new();
    for (name, info) in metadata.tensors() {
        let kind = Kind::try_from(info.dtype)
            .map_err(|_| invalid(format!("tensor {name:?} has dtype {:?}, which libtorch cannot hold", info.dtype)))?;
        let shape: Vec<i64> = info.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
        let (begin, end) = info.data_offsets;
        let numel = info.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        let bytes = numel.and_then(|n| n.checked_mul(kind.elt_size_in_bytes() as u64));
        let inside = (begin as u64)
            .checked_add(data_start)
            .zip((end as u64).checked_add(data_start))
            .is_some_and(|(b, e)| b <= e && e <= file_len);
        if !inside || bytes != Some((end - begin.min(end)) as u64) {
            return Err(invalid(format!(
                "tensor {name:?} of shape {:?} ({:?}) does not match its byte range {begin}..{end}",
                info.shape, info.dtype
            )));
        }
        out.push((
            name,
            Stored {
                shard: 0,
                kind,
                stride: row_major(&shape),
                shape,
                start: data_start + begin as u64,
                span: numel.unwrap_or(0),
            },
        ));
    }
    Ok(out)
}

/// Strides of a contiguous tensor of `shape`.
pub(super) fn row_major(shape: &[i64]) -> Vec<i64> {
    let mut stride = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1].saturating_mul(shape[i + 1]);
    }
    stride
}
