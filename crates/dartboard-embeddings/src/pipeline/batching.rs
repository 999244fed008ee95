//! The batching both pipelines share: texts (or pairs) are tokenized once, run
//! longest first in passes bounded by a batch size and a token budget, and put
//! back in input order. Sorting by length keeps padding low (as
//! sentence-transformers does); the token budget bounds a pass's memory.
//! Results do not depend on how inputs are grouped.

use tch::Tensor;
use tokenizers::Encoding;

use crate::error::EmbedError;

/// Runs `pass` over `encodings` in passes, longest first; each call gets one
/// pass's encodings and returns `[n, width]` f32 values on the CPU, contiguous.
/// Returns every row in input order, flat. A row holding NaN or infinity is an
/// error naming `model` and the lowest input index concerned: such a value would
/// poison every similarity or ranking computed with it.
pub(crate) fn run(
    encodings: &[&Encoding],
    batch_size: usize,
    width: usize,
    model: &str,
    mut pass: impl FnMut(&[&Encoding]) -> Result<Tensor, EmbedError>,
) -> Result<Vec<f32>, EmbedError> {
    let mut out = vec![0f32; encodings.len() * width];
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
    let lengths: Vec<usize> = order.iter().map(|&i| encodings[i].len()).collect();
    let mut rows = Vec::new();
    for range in batches(&lengths, batch_size, MAX_BATCH_TOKENS) {
        let chunk = &order[range];
        let batch: Vec<&Encoding> = chunk.iter().map(|&i| encodings[i]).collect();
        let values = pass(&batch)?;
        rows.resize(chunk.len() * width, 0.0);
        values.f_copy_data(&mut rows, chunk.len() * width)?;
        if let Some(index) = first_non_finite(&rows, width, chunk) {
            return Err(EmbedError::NonFinite { model: model.to_owned(), index });
        }
        for (row, &index) in chunk.iter().enumerate() {
            out[index * width..(index + 1) * width].copy_from_slice(&rows[row * width..(row + 1) * width]);
        }
    }
    Ok(out)
}

/// Most padded tokens one forward pass may hold. With texts sorted longest first,
/// a large batch of long passages would otherwise pad many of them to the longest
/// and build activations of hundreds of MB; capping the pass keeps its matrix
/// products large enough to run at full speed while bounding padding and memory.
/// Results do not depend on how texts are grouped.
const MAX_BATCH_TOKENS: usize = 8192;

/// Splits texts sorted by decreasing length into passes of at most `batch_size`
/// texts and at most `max_tokens` padded tokens (a single text always fits).
fn batches(sorted_lengths: &[usize], batch_size: usize, max_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sorted_lengths.len() {
        let width = sorted_lengths[start].max(1);
        let fit = (max_tokens / width).clamp(1, batch_size.max(1));
        let end = (start + fit).min(sorted_lengths.len());
        out.push(start..end);
        start = end;
    }
    out
}

/// The input index of the first (lowest-index) row of a pass holding NaN or
/// infinity: a backstop so that a model that overflows never hands out a vector
/// that would poison every similarity computed with it. One pass over values that
/// were just copied, so it costs nothing next to the forward pass.
fn first_non_finite(rows: &[f32], dim: usize, chunk: &[usize]) -> Option<usize> {
    rows.chunks_exact(dim).zip(chunk).filter(|(row, _)| !row.iter().all(|x| x.is_finite())).map(|(_, &i)| i).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_input_index_of_a_non_finite_row_is_named() {
        // Rows of a pass hold texts 7, 2 and 5 (sorted by length, not by index).
        let rows = [0.5, 0.5, f32::NAN, 1.0, 0.0, 0.0];
        assert_eq!(first_non_finite(&rows, 2, &[7, 2, 5]), Some(2));
        let rows = [f32::INFINITY, 0.0, 0.5, 0.5, 0.0, f32::NEG_INFINITY];
        assert_eq!(first_non_finite(&rows, 2, &[7, 2, 5]), Some(5));
        assert_eq!(first_non_finite(&[1.0, 2.0, 3.0, 4.0], 2, &[0, 1]), None);
    }

    #[test]
    fn passes_respect_both_limits() {
        // Sorted longest first: two long texts, then many short ones.
        let lengths = [256, 200, 20, 20, 20, 20, 20, 20, 20, 20];
        assert_eq!(batches(&lengths, 4, 512), vec![0..2, 2..6, 6..10]);
        assert_eq!(batches(&lengths, 100, 100_000), vec![0..10]);
        assert_eq!(batches(&[1000, 10], 8, 512), vec![0..1, 1..2], "an over-long text still gets its own pass");
        assert!(batches(&[], 8, 512).is_empty());
    }
}
