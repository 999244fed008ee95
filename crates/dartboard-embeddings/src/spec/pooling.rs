//! The configuration of sentence-transformers' `Pooling` module
//! (`1_Pooling/config.json`): which modes, in which order, and whether prompt
//! tokens count. What the modes compute is in `pipeline/pooling.rs`.

/// One way of pooling. With several enabled, outputs are concatenated in the order
/// sentence-transformers uses: cls, max, mean, mean_sqrt_len, weightedmean, lasttoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PoolingMode {
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
    /// Mean over real tokens.
    Mean,
    /// Sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// Mean weighted by position (1, 2, ..., T).
    WeightedMean,
    /// The last real token.
    LastToken,
}

impl PoolingMode {
    /// Names accepted in `pooling_mode` and shown in errors.
    pub const NAMES: &'static [&'static str] =
        &["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"];

    /// Parses the `pooling_mode` string form.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            "mean" => PoolingMode::Mean,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            "weightedmean" => PoolingMode::WeightedMean,
            "lasttoken" => PoolingMode::LastToken,
            _ => return None,
        })
    }

    /// Parses the suffix of a `pooling_mode_*` boolean key.
    pub fn from_config_key(key: &str) -> Option<Self> {
        Some(match key {
            "cls_token" => PoolingMode::Cls,
            "max_tokens" => PoolingMode::Max,
            "mean_tokens" => PoolingMode::Mean,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            "weightedmean_tokens" => PoolingMode::WeightedMean,
            "lasttoken" => PoolingMode::LastToken,
            _ => return None,
        })
    }
}

/// The pooling modes of a model, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    modes: Vec<PoolingMode>,
    include_prompt: bool,
}

impl Pooling {
    /// Pooling with these modes, output in the order given (repeats dropped).
    pub fn new(modes: Vec<PoolingMode>) -> Self {
        let mut unique = Vec::with_capacity(modes.len());
        for mode in modes {
            if !unique.contains(&mode) {
                unique.push(mode);
            }
        }
        Pooling { modes: unique, include_prompt: true }
    }

    /// Whether prompt tokens take part in pooling (`include_prompt`).
    pub fn with_include_prompt(mut self, include_prompt: bool) -> Self {
        self.include_prompt = include_prompt;
        self
    }

    /// See [`Pooling::with_include_prompt`].
    pub fn include_prompt(&self) -> bool {
        self.include_prompt
    }

    /// The enabled modes in output order.
    pub fn modes(&self) -> &[PoolingMode] {
        &self.modes
    }

    /// Width of the pooled vector for token embeddings of width `hidden`.
    pub fn output_dim(&self, hidden: i64) -> i64 {
        hidden * self.modes.len() as i64
    }
}
