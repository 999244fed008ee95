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

    /// One `Vec` per row.
    pub fn to_vecs(&self) -> Vec<Vec<f32>> {
        self.rows().map(<[f32]>::to_vec).collect()
    }
}
