//! Sentence-transformers' `Pooling` module: token embeddings to one vector.
//! Shared by every architecture (models never pool). Padding may be on either
//! side (decoder models pad on the left), as sentence-transformers allows.

use tch::{Kind, Tensor};

use crate::error::EmbedError;
use crate::spec::pooling::{Pooling, PoolingMode};

impl Pooling {
    /// `[B, T, H]` token embeddings and a `[B, T]` 0/1 mask to `[B, D]`.
    /// `prompt_length` tokens after any left padding are left out when the model
    /// excludes prompts.
    pub fn forward(&self, tokens: &Tensor, mask: &Tensor, prompt_length: Option<i64>) -> Result<Tensor, EmbedError> {
        let kind = tokens.kind();
        let seq = mask.size()[1];
        // Where each text starts: the number of left-padding positions (0 when
        // padded on the right).
        let starts = mask.f_to_kind(Kind::Int)?.f_argmax(1, false)?.f_unsqueeze(1)?; // [B, 1]
        let excluded;
        let mask = match prompt_length.filter(|&n| n > 0 && !self.include_prompt()) {
            Some(n) => {
                let positions = Tensor::f_arange(seq, (Kind::Int64, mask.device()))?.f_unsqueeze(0)?;
                let keep = positions.f_ge_tensor(&starts.f_add_scalar(n)?)?.f_to_kind(mask.kind())?;
                excluded = mask.f_mul(&keep)?;
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
        let mut parts = Vec::with_capacity(self.modes().len());
        for mode in self.modes() {
            parts.push(match mode {
                PoolingMode::Cls => gather_at(mask.f_to_kind(Kind::Int)?.f_argmax(1, false)?)?,
                PoolingMode::Max => tokens.f_masked_fill(&mask_f.f_eq(0.0)?, f64::NEG_INFINITY)?.f_amax(1, false)?,
                PoolingMode::Mean => masked_sum()?.f_div(&count()?)?,
                PoolingMode::MeanSqrtLen => masked_sum()?.f_div(&count()?.f_sqrt()?)?,
                PoolingMode::WeightedMean => {
                    // Weights 1, 2, … from each text's first token, wherever padding is.
                    let positions = Tensor::f_arange_start(1, seq + 1, (kind, tokens.device()))?.f_view([1, seq, 1])?;
                    let positions = positions.f_sub(&starts.f_to_kind(kind)?.f_unsqueeze(-1)?)?;
                    let weights = mask_f.f_mul(&positions)?;
                    let sum = tokens.f_mul(&weights)?.f_sum_dim_intlist(1, false, kind)?;
                    sum.f_div(&weights.f_sum_dim_intlist(1, false, kind)?.f_clamp_min(1e-9)?)?
                }
                PoolingMode::LastToken => {
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
    fn left_padding_pools_like_right_padding() {
        // Row 1 of `tokens()` (one real token, two pads) moved to the right end, with
        // a prompt of one token in a three-token row 0 and a two-token row 1.
        let right = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., 10., 20., 30., 40., -99., -99.]).view([2, 3, 2]);
        let right_mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0]).view([2, 3]);
        let left = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., -99., -99., 10., 20., 30., 40.]).view([2, 3, 2]);
        let left_mask = Tensor::from_slice(&[1i64, 1, 1, 0, 1, 1]).view([2, 3]);
        let all = vec![
            PoolingMode::Cls,
            PoolingMode::Max,
            PoolingMode::Mean,
            PoolingMode::MeanSqrtLen,
            PoolingMode::WeightedMean,
            PoolingMode::LastToken,
        ];
        for include_prompt in [true, false] {
            let p = Pooling::new(all.clone()).with_include_prompt(include_prompt);
            for prompt in [None, Some(1)] {
                let a = rows(&p.forward(&right, &right_mask, prompt).unwrap());
                let b = rows(&p.forward(&left, &left_mask, prompt).unwrap());
                assert_eq!(a, b, "include_prompt {include_prompt}, prompt {prompt:?}");
            }
        }
        // Without the prompt, row 1 is the single token (30, 40) whatever the side.
        let p = Pooling::new(vec![PoolingMode::Cls]).with_include_prompt(false);
        assert_eq!(rows(&p.forward(&left, &left_mask, Some(1)).unwrap())[1], vec![30., 40.]);
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zeros() {
        let x = Tensor::from_slice(&[3f32, 4., 0., 0.]).view([2, 2]);
        assert_eq!(rows(&normalize(&x).unwrap()), vec![vec![0.6, 0.8], vec![0., 0.]]);
    }
}
