//! The models the Dartboard docs name, with their output dimensions.
//!
//! The table exists so a service can size a vector index before the model is
//! loaded; it is never used to guess a dimension from words in a name.

/// `(Hub repo id, embedding dimension)` for every documented model.
pub const KNOWN_MODELS: &[(&str, usize)] = &[
    ("sentence-transformers/all-MiniLM-L6-v2", 384),
    ("sentence-transformers/all-MiniLM-L12-v2", 384),
    ("sentence-transformers/all-mpnet-base-v2", 768),
    ("sentence-transformers/multi-qa-mpnet-base-dot-v1", 768),
    ("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 384),
    ("intfloat/e5-small-v2", 384),
    ("intfloat/e5-base-v2", 768),
    ("BAAI/bge-small-en-v1.5", 384),
    ("BAAI/bge-base-en-v1.5", 768),
];

/// The Hub repo id for a model name: a bare name means `sentence-transformers/NAME`,
/// as in sentence-transformers itself. A trailing `@revision` is dropped.
pub fn canonical_repo_id(name: &str) -> String {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("sentence-transformers/{name}")
    }
}

/// The documented dimension of a model, if it is in [`KNOWN_MODELS`].
pub fn known_dim(name: &str) -> Option<usize> {
    let id = canonical_repo_id(name);
    KNOWN_MODELS.iter().find(|(known, _)| known.eq_ignore_ascii_case(&id)).map(|(_, dim)| *dim)
}
