//! Criterion benchmark of the Dartboard selection: 100 triaged candidates of
//! all-MiniLM-L6-v2's width, top 5 (the paper's defaults).

use criterion::{criterion_group, criterion_main, Criterion};
use dartboard_retrieval::{dartboard, top_k_cosine, DartboardParams};

/// Deterministic pseudo-random unit vectors (no RNG dependency needed).
fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn select(c: &mut Criterion) {
    let query = vectors(1, 384, 1).remove(0);
    let candidates = vectors(1000, 384, 2);
    c.bench_function("dartboard 1000 candidates, triage 100, top 5", |b| {
        b.iter(|| dartboard(&query, &candidates, &DartboardParams::default()).unwrap())
    });
    c.bench_function("top-k cosine 1000 candidates", |b| b.iter(|| top_k_cosine(&query, &candidates, 5).unwrap()));
}

criterion_group!(benches, select);
criterion_main!(benches);
