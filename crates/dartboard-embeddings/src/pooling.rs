//! Sentence-transformers' `Pooling` module: token embeddings to one vector.
//! Shared by every architecture (models never pool).

use tch::{Kind, Tensor};

use crate::EmbedError;

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

    /// `[B, T, H]` token embeddings and a `[B, T]` 0/1 mask (right-padded) to `[B, D]`.
    /// `prompt_length` leading tokens are left out when the model excludes prompts.
    pub fn forward(&self, tokens: &Tensor, mask: &Tensor, prompt_length: Option<i64>) -> Result<Tensor, EmbedError> {
        let kind = tokens.kind();
        let excluded;
        let mask = match prompt_length.filter(|&n| n > 0 && !self.include_prompt) {
            Some(n) => {
                let seq = mask.size()[1];
                let keep = Tensor::f_arange(seq, (Kind::Int64, mask.device()))?.f_ge(n)?.f_to_kind(mask.kind())?;
                excluded = mask.f_mul(&keep.f_unsqueeze(0)?)?;
                &excluded
            }
            None => mask,
        };
        let mask_f = mask.f_unsqueeze(-1)?.f_to_kind(kind)?; // [B, T, 1]
        let hidden = tokens.size()[2];
        // The first and last positions the mask keeps (cls and lasttoken pooling).
        let gather_at = |index: Tensor| -> Result<Tensor, EmbedError> {
            let index = index.f_view([-1, 1, 1])?.f_expand([-1, 1, hidden], false)?;
            Ok(tokens.f_gather(1, &index, false)?.f_squeeze_dim(1)?)
        };
        let count =
            || -> Result<Tensor, EmbedError> { Ok(mask_f.f_sum_dim_intlist(1, false, kind)?.f_clamp_min(1e-9)?) };
        let masked_sum =
            || -> Result<Tensor, EmbedError> { Ok(tokens.f_mul(&mask_f)?.f_sum_dim_intlist(1, false, kind)?) };
        let mut parts = Vec::with_capacity(self.modes.len());
        for mode in &self.modes {
            parts.push(match mode {
                PoolingMode::Cls => gather_at(mask.f_to_kind(Kind::Int)?.f_argmax(1, false)?)?,
                PoolingMode::Max => tokens.f_masked_fill(&mask_f.f_eq(0.0)?, f64::NEG_INFINITY)?.f_amax(1, false)?,
                PoolingMode::Mean => masked_sum()?.f_div(&count()?)?,
                PoolingMode::MeanSqrtLen => masked_sum()?.f_div(&count()?.f_sqrt()?)?,
                PoolingMode::WeightedMean => {
                    let seq = tokens.size()[1];
                    let positions = Tensor::f_arange_start(1, seq + 1, (kind, tokens.device()))?.f_view([1, seq, 1])?;
                    let weights = mask_f.f_mul(&positions)?;
                    let sum = tokens.f_mul(&weights)?.f_sum_dim_intlist(1, false, kind)?;
                    sum.f_div(&weights.f_sum_dim_intlist(1, false, kind)?.f_clamp_min(1e-9)?)?
                }
                PoolingMode::LastToken => {
                    let seq = mask.size()[1];
                    let from_end = mask.f_flip([1])?.f_to_kind(Kind::Int)?.f_argmax(1, false)?;
                    let last = from_end.f_neg()?.f_add_scalar(seq - 1)?;
                    gather_at(last)?.f_mul(&mask_f.f_amax(1, false)?)?
                }
            });
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Tensor::f_cat(&parts, 1)? })
    }
}

/// L2 normalization as `torch.nn.functional.normalize` does it (eps 1e-12).
pub fn normalize(xs: &Tensor) -> Result<Tensor, EmbedError> {
    let norm = xs.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?.f_clamp_min(1e-12)?;
    Ok(xs.f_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (Tensor, Tensor) {
        // Two texts: 3 real tokens, and 1 real token followed by 2 pads.
        let t = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., 10., 20., 99., 99., -99., -99.]).view([2, 3, 2]);
        let m = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0]).view([2, 3]);
        (t, m)
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        let (b, d) = t.size2().unwrap();
        let flat = Vec::<f32>::try_from(t.contiguous().view(-1)).unwrap();
        (0..b as usize).map(|i| flat[i * d as usize..(i + 1) * d as usize].to_vec()).collect()
    }

    #[test]
    fn modes_ignore_padding() {
        let (t, m) = tokens();
        let pool = |modes| rows(&Pooling::new(modes).forward(&t, &m, None).unwrap());
        assert_eq!(pool(vec![PoolingMode::Mean]), vec![vec![3., 4.], vec![10., 20.]]);
        assert_eq!(pool(vec![PoolingMode::Cls]), vec![vec![1., 2.], vec![10., 20.]]);
        assert_eq!(pool(vec![PoolingMode::Max]), vec![vec![5., 6.], vec![10., 20.]]);
        assert_eq!(pool(vec![PoolingMode::LastToken]), vec![vec![5., 6.], vec![10., 20.]]);
        // Weights 1, 2, 3: (1 + 6 + 15) / 6, (2 + 8 + 18) / 6.
        let w = pool(vec![PoolingMode::WeightedMean]);
        assert!((w[0][0] - 22. / 6.).abs() < 1e-6 && (w[0][1] - 28. / 6.).abs() < 1e-6, "{w:?}");
        let s = pool(vec![PoolingMode::MeanSqrtLen]);
        assert!((s[0][0] - 9. / 3f32.sqrt()).abs() < 1e-5, "{s:?}");
    }

    #[test]
    fn combined_modes_concatenate_in_the_order_given() {
        let (t, m) = tokens();
        let p = Pooling::new(vec![PoolingMode::Mean, PoolingMode::Cls]);
        assert_eq!(p.output_dim(2), 4);
        assert_eq!(rows(&p.forward(&t, &m, None).unwrap())[0], vec![3., 4., 1., 2.]);
    }

    #[test]
    fn excluded_prompt_tokens_do_not_count() {
        let (t, m) = tokens();
        let p = Pooling::new(vec![PoolingMode::Mean, PoolingMode::Cls]).with_include_prompt(false);
        // Row 0 without its first token: mean of (3,4),(5,6); cls is the first kept token.
        assert_eq!(rows(&p.forward(&t, &m, Some(1)).unwrap())[0], vec![4., 5., 3., 4.]);
        let kept = Pooling::new(vec![PoolingMode::Mean]);
        assert_eq!(rows(&kept.forward(&t, &m, Some(1)).unwrap())[0], vec![3., 4.], "include_prompt keeps them");
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zeros() {
        let x = Tensor::from_slice(&[3f32, 4., 0., 0.]).view([2, 2]);
        assert_eq!(rows(&normalize(&x).unwrap()), vec![vec![0.6, 0.8], vec![0., 0.]]);
    }
}
