//! Dartboard retrieval: pick passages that are relevant to a query *and* add
//! information beyond each other.
//!
//! This is the vanilla algorithm of Pickett et al. 2024, "Better RAG using Relevant
//! Information Gain" (arXiv:2407.12101), scored exactly as the Dartboard RAG system
//! that dartboard-rs serves scores it (its `dartboard/core.py`). Candidates are first
//! triaged to the `triage_k` most cosine-similar; then passages are chosen greedily,
//! each maximising
//!
//! ```text
//! log s(G ∪ {c}) = logsumexp_{t∈A} ( log P(t | q) + max(max_{g∈G} log N(t | g), log N(t | c)) )
//! log P(t | q) = −d(q, t)² / (2σ²)        log N(t | g) = −d(t, g)² / (2σ²)
//! ```
//!
//! where `A` is the triaged set, `G` the passages chosen so far and `d` the cosine
//! distance `1 − cos`. Like the system, we leave the kernels unnormalised: the
//! paper's normalisation over `A` and the Gaussian's `1/(σ√2π)` shift every
//! candidate's score by the same constant, so they never change a pick, only the
//! reported `score`. Everything is computed in log space with log-sum-exp, so small
//! σ does not underflow. The first pick is the most relevant passage; every later
//! pick is the one that raises `s` the most, which penalises near-duplicates of what
//! is already chosen. Ties go to the more similar candidate (the earlier in triage
//! order), as in the system.
//!
//! ```
//! use dartboard_retrieval::{dartboard, DartboardParams};
//!
//! let query = [1.0, 0.0, 0.0];
//! let passages = [[0.95, 0.31, 0.0], [0.95, 0.31, 0.001], [0.9, -0.2, 0.38]];
//! let picked = dartboard(&query, &passages, &DartboardParams { top_k: 2, ..Default::default() }).unwrap();
//! let indices: Vec<usize> = picked.iter().map(|s| s.index).collect();
//! assert_eq!(indices, [0, 2]); // the near-duplicate 1 is skipped
//! ```
#![deny(missing_docs)]

/// Parameters of the selection; the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DartboardParams {
    /// Kernel width σ.
    pub sigma: f64,
    /// Passages to return.
    pub top_k: usize,
    /// Candidates kept after the cosine triage.
    pub triage_k: usize,
}

impl Default for DartboardParams {
    fn default() -> Self {
        DartboardParams { sigma: 1.0, top_k: 5, triage_k: 100 }
    }
}

/// One chosen passage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Index into the candidates given.
    pub index: usize,
    /// `log s(G, q, A, σ)` of the chosen set right after this passage joined it.
    pub score: f64,
    /// Cosine similarity of the passage to the query.
    pub similarity: f64,
}

impl Selection {
    /// Cosine distance of the passage to the query, `1 − similarity`: what the
    /// Dartboard system reports as a result's score.
    pub fn distance(&self) -> f64 {
        1.0 - self.similarity
    }
}

/// Invalid inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// A candidate's length differs from the query's.
    #[error("candidate {index} has {found} dimensions but the query has {expected}")]
    DimensionMismatch {
        /// The candidate.
        index: usize,
        /// The query's dimension.
        expected: usize,
        /// The candidate's dimension.
        found: usize,
    },
    /// A vector holds NaN or an infinity.
    #[error("vector {index} holds a NaN or infinite value")]
    NotFinite {
        /// The candidate's index, or `usize::MAX` for the query.
        index: usize,
    },
    /// σ must be positive and finite.
    #[error("sigma must be a positive number, got {0}")]
    InvalidSigma(f64),
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The `k` candidates most cosine-similar to the query, best first (plain top-k).
pub fn top_k_cosine<C: AsRef<[f32]>>(
    query: &[f32],
    candidates: &[C],
    k: usize,
) -> Result<Vec<(usize, f64)>, RetrievalError> {
    check_dims(query, candidates)?;
    let mut scored: Vec<(usize, f64)> =
        candidates.iter().enumerate().map(|(i, c)| (i, cosine(query, c.as_ref()))).collect();
    // Stable sort keeps the earlier candidate first on ties, so results are deterministic.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    Ok(scored)
}

/// Chooses up to `params.top_k` candidates with the Dartboard algorithm.
pub fn dartboard<C: AsRef<[f32]>>(
    query: &[f32],
    candidates: &[C],
    params: &DartboardParams,
) -> Result<Vec<Selection>, RetrievalError> {
    if !(params.sigma > 0.0 && params.sigma.is_finite()) {
        return Err(RetrievalError::InvalidSigma(params.sigma));
    }
    let triaged = top_k_cosine(query, candidates, params.triage_k)?;
    let n = triaged.len();
    let want = params.top_k.min(n);
    if want == 0 {
        return Ok(Vec::new());
    }
    let two_sigma_sq = 2.0 * params.sigma * params.sigma;

    // log P(t | q): Gaussian kernel on the query distance (unnormalised, see the
    // crate docs).
    let log_p: Vec<f64> = triaged.iter().map(|&(_, sim)| -(1.0 - sim).powi(2) / two_sigma_sq).collect();

    // log N(t | g) for every pair in A.
    let log_n: Vec<Vec<f64>> = triaged
        .iter()
        .map(|&(t, _)| {
            triaged
                .iter()
                .map(|&(g, _)| -(1.0 - cosine(candidates[t].as_ref(), candidates[g].as_ref())).powi(2) / two_sigma_sq)
                .collect()
        })
        .collect();

    // best[t] = max_{g∈G} log N(t | g, σ); empty G is −∞.
    let mut best = vec![f64::NEG_INFINITY; n];
    let mut chosen = vec![false; n];
    let mut selections = Vec::with_capacity(want);
    let mut terms = vec![0f64; n];
    for round in 0..want {
        let mut pick: Option<(usize, f64)> = None;
        // G starts with the most relevant passage (the head of the triage).
        let pool = if round == 0 { 0..1 } else { 0..n };
        for c in pool.filter(|&c| !chosen[c]) {
            for t in 0..n {
                terms[t] = log_p[t] + best[t].max(log_n[t][c]);
            }
            let score = logsumexp(&terms);
            if pick.is_none_or(|(_, s)| score > s) {
                pick = Some((c, score));
            }
        }
        let (c, score) = pick.expect("fewer picks than candidates");
        chosen[c] = true;
        for t in 0..n {
            best[t] = best[t].max(log_n[t][c]);
        }
        selections.push(Selection { index: triaged[c].0, score, similarity: triaged[c].1 });
    }
    Ok(selections)
}

fn logsumexp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

fn check_dims<C: AsRef<[f32]>>(query: &[f32], candidates: &[C]) -> Result<(), RetrievalError> {
    // NaN would sort above every similarity and be picked first.
    if !query.iter().all(|x| x.is_finite()) {
        return Err(RetrievalError::NotFinite { index: usize::MAX });
    }
    if let Some(index) = candidates.iter().position(|c| !c.as_ref().iter().all(|x| x.is_finite())) {
        return Err(RetrievalError::NotFinite { index });
    }
    match candidates.iter().position(|c| c.as_ref().len() != query.len()) {
        Some(index) => Err(RetrievalError::DimensionMismatch {
            index,
            expected: query.len(),
            found: candidates[index].as_ref().len(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: [f32; 3]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Three near-copies of one relevant passage, and two passages about other,
    /// slightly less relevant aspects of the query.
    fn corpus() -> (Vec<f32>, Vec<Vec<f32>>) {
        let query = unit([1.0, 0.0, 0.0]);
        let passages = vec![
            unit([0.95, 0.30, 0.00]),
            unit([0.95, 0.30, 0.01]),
            unit([0.95, 0.31, 0.00]),
            unit([0.90, -0.25, 0.30]),
            unit([0.90, 0.00, -0.40]),
            unit([0.10, 0.90, 0.40]), // irrelevant
        ];
        (query, passages)
    }

    #[test]
    fn plain_top_k_picks_near_duplicates_and_dartboard_does_not() {
        let (query, passages) = corpus();
        let plain: Vec<usize> = top_k_cosine(&query, &passages, 3).unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(plain, [0, 1, 2], "plain top-k takes all three copies");

        // A wide kernel (σ = 1) weighs far passages almost as much as near ones, so
        // it relies on the triage to drop the irrelevant one; a narrow one does not.
        for (sigma, triage_k) in [(0.1, 100), (1.0, 5)] {
            let params = DartboardParams { sigma, top_k: 3, triage_k };
            let picked: Vec<usize> = dartboard(&query, &passages, &params).unwrap().iter().map(|s| s.index).collect();
            assert_eq!(picked[0], 0, "first pick is the most relevant");
            let copies = picked.iter().filter(|i| **i <= 2).count();
            assert_eq!(copies, 1, "sigma {sigma}: one copy only, got {picked:?}");
            assert!(picked.contains(&3) && picked.contains(&4), "sigma {sigma}: {picked:?}");
        }
    }

    #[test]
    fn scores_grow_and_triage_limits_the_pool() {
        let (query, passages) = corpus();
        let all = dartboard(&query, &passages, &DartboardParams { top_k: 6, ..Default::default() }).unwrap();
        assert_eq!(all.len(), 6);
        assert!(all.windows(2).all(|w| w[1].score >= w[0].score - 1e-12), "{all:?}");
        // With triage_k = 2 only the two most similar candidates can be chosen.
        let few = dartboard(&query, &passages, &DartboardParams { top_k: 5, triage_k: 2, sigma: 1.0 }).unwrap();
        let mut idx: Vec<usize> = few.iter().map(|s| s.index).collect();
        idx.sort();
        assert_eq!(idx, [0, 1]);
    }

    /// The score of a set is the system's formula, computed here directly: a
    /// brute-force check of the greedy loop's bookkeeping.
    #[test]
    fn scores_are_the_systems_formula() {
        let (query, passages) = corpus();
        let sigma = 0.5;
        let picked = dartboard(&query, &passages, &DartboardParams { sigma, top_k: 3, triage_k: 100 }).unwrap();
        let d = |a: &[f32], b: &[f32]| 1.0 - cosine(a, b);
        let k = |dist: f64| -dist * dist / (2.0 * sigma * sigma);
        for round in 1..picked.len() {
            let chosen: Vec<usize> = picked[..=round].iter().map(|s| s.index).collect();
            let terms: Vec<f64> = (0..passages.len())
                .map(|t| {
                    let best =
                        chosen.iter().map(|&g| k(d(&passages[t], &passages[g]))).fold(f64::NEG_INFINITY, f64::max);
                    k(d(&query, &passages[t])) + best
                })
                .collect();
            let expected = logsumexp(&terms);
            assert!(
                (picked[round].score - expected).abs() < 1e-12,
                "round {round}: {} vs {expected}",
                picked[round].score
            );
        }
        assert!((picked[0].distance() - d(&query, &passages[picked[0].index])).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs() {
        let (query, mut passages) = corpus();
        assert!(dartboard(&query, &passages, &DartboardParams { sigma: 0.0, ..Default::default() }).is_err());
        assert!(dartboard::<Vec<f32>>(&query, &[], &DartboardParams::default()).unwrap().is_empty());
        passages.push(vec![1.0, 2.0]);
        let err = dartboard(&query, &passages, &DartboardParams::default()).unwrap_err();
        assert_eq!(err, RetrievalError::DimensionMismatch { index: 6, expected: 3, found: 2 });
        passages[6] = vec![f32::NAN, 0.0, 0.0];
        let err = dartboard(&query, &passages, &DartboardParams::default()).unwrap_err();
        assert_eq!(err, RetrievalError::NotFinite { index: 6 });
    }
}
