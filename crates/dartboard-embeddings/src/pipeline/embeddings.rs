//! [`Embeddings`]: what encoding returns, one f32 row per text, and Matryoshka
//! truncation of those rows ([`Embeddings::truncate_dim`]).

use crate::error::EmbedError;

/// Embeddings of a list of texts: one row of `dim` f32 values per text, in input
/// order, stored contiguously.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
}

impl Embeddings {
    pub(crate) fn new(dim: usize, data: Vec<f32>) -> Self {
        debug_assert!(dim > 0 && data.len().is_multiple_of(dim));
        Embeddings { dim, data }
    }

    /// Number of rows (texts).
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Width of each row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`. Panics if `i >= len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Rows in input order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        self.data.chunks_exact(self.dim)
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The first `dim` values of every row: sentence-transformers' `truncate_dim`
    /// (Matryoshka embeddings). Applied to the finished embeddings, after Normalize if
    /// the model has it, and not normalized again, as sentence-transformers does; a
    /// Matryoshka model's leading dimensions carry most of the meaning, so the
    /// truncated vectors still compare well by cosine similarity.
    ///
    /// `dim` must be from 1 to [`Embeddings::dim`]: sentence-transformers quietly
    /// keeps every dimension when asked for more, which hides a mistaken size, so a
    /// larger value is an error here.
    pub fn truncate_dim(self, dim: usize) -> Result<Embeddings, EmbedError> {
        if dim == 0 || dim > self.dim {
            return Err(EmbedError::TruncateDim { requested: dim, dim: self.dim });
        }
        if dim == self.dim {
            return Ok(self);
        }
        let mut data = self.data;
        let rows = data.len() / self.dim;
        // In place, row by row: row `r` moves to `r * dim`, never past its own start.
        for r in 0..rows {
            data.copy_within(r * self.dim..r * self.dim + dim, r * dim);
        }
        data.truncate(rows * dim);
        Ok(Embeddings { dim, data })
    }

    /// One `Vec` per row.
    pub fn to_vecs(&self) -> Vec<Vec<f32>> {
        self.rows().map(<[f32]>::to_vec).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_leading_values_of_each_row_unchanged() {
        let e = Embeddings::new(4, (0..12).map(|i| i as f32 * 0.5).collect());
        let t = e.clone().truncate_dim(3).unwrap();
        assert_eq!((t.len(), t.dim()), (3, 3));
        for (full, short) in e.rows().zip(t.rows()) {
            assert_eq!(short, &full[..3], "not renormalized");
        }
        assert_eq!(e.clone().truncate_dim(4).unwrap(), e);
        assert_eq!(Embeddings::new(4, Vec::new()).truncate_dim(2).unwrap().dim(), 2);
    }

    #[test]
    fn truncation_to_zero_or_beyond_the_dimension_names_both() {
        for bad in [0, 5, 1024] {
            let err = Embeddings::new(4, vec![0.0; 8]).truncate_dim(bad).unwrap_err().to_string();
            assert!(err.contains(&format!(" {bad} ")) && err.contains("from 1 to 4"), "{err}");
        }
    }
}
