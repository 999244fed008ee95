//! Per-layer attention time on the real shapes of Qwen3-Embedding-0.6B and
//! ModernBERT-base, our kernel against libtorch's `scaled_dot_product_attention`:
//! the measurement behind keeping causal attention, grouped-query heads and
//! sliding windows on our kernel (`docs/benchmarks.md`, "Attention on the real
//! shapes"). Timings only mean something in a release build on an idle machine:
//!
//! ```text
//! cargo test --release -p dartboard-embeddings --lib attention_timing -- --ignored --nocapture
//! ```
//!
//! Each case also checks that the two routes compute the same thing, so a route
//! that is fast because it is wrong cannot look like a win. "ours" is
//! `attend_split` on our kernel (building its fused buffer included), "SDPA"
//! `attend_split` on libtorch's fused kernel; the last column is the route
//! `AttentionMask::new` takes.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::attention::{AttentionMask, Kernel, Visibility};
use crate::backend::kernels;

struct Case {
    name: &'static str,
    batch: i64,
    /// Longest text; the others are up to 3 tokens shorter (batches are sorted by
    /// length, so texts in one batch are close in length).
    seq: i64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    visibility: Visibility,
    /// Qwen3 pads on the left, ModernBERT on the right.
    left_padding: bool,
}

const QWEN3: Case = Case {
    name: "Qwen3-0.6B causal GQA 16/8×128",
    batch: 32,
    seq: 12,
    heads: 16,
    kv_heads: 8,
    head_dim: 128,
    visibility: Visibility::CAUSAL,
    left_padding: true,
};
const MODERNBERT: Case = Case {
    name: "ModernBERT-base 12×64",
    batch: 32,
    seq: 12,
    heads: 12,
    kv_heads: 12,
    head_dim: 64,
    visibility: Visibility::ALL,
    left_padding: false,
};

fn cases() -> Vec<Case> {
    // STS-B sentences are 9–25 tokens with either tokenizer (10.5 on average); longer
    // texts show how each route scales, and ModernBERT's local layers only differ
    // from its global ones past 65 tokens (a window of 64 keys each side).
    let window = Visibility::window(64);
    vec![
        Case { seq: 12, ..QWEN3 },
        Case { seq: 16, ..QWEN3 },
        Case { seq: 20, ..QWEN3 },
        Case { seq: 24, ..QWEN3 },
        Case { seq: 128, batch: 8, ..QWEN3 },
        Case { seq: 12, ..MODERNBERT },
        Case { seq: 24, ..MODERNBERT },
        Case {
            name: "ModernBERT-base local (window 64 each side)",
            seq: 256,
            batch: 8,
            visibility: window,
            ..MODERNBERT
        },
        Case {
            name: "ModernBERT-base local (window 64 each side)",
            seq: 512,
            batch: 4,
            visibility: window,
            ..MODERNBERT
        },
    ]
}

/// Best of 5 rounds of `iters` calls, in microseconds per call.
fn time(iters: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    let _ = f();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..iters {
            let _ = f();
        }
        best = best.min(started.elapsed().as_secs_f64() / iters as f64);
    }
    best * 1e6
}

#[test]
#[ignore = "a measurement: run in release, alone, with --ignored --nocapture"]
fn attention_timing() {
    let _guard = tch::no_grad_guard();
    if !kernels::available() {
        eprintln!("this CPU lacks AVX-512: our kernel does not run here, nothing to compare");
        return;
    }
    println!("| case | dtype | B×T | ours µs | of which the kernel µs | libtorch's SDPA µs | route taken |");
    println!("|---|---|---|---:|---:|---:|---|");
    for c in cases() {
        for kind in [Kind::Float, Kind::BFloat16] {
            tch::manual_seed(3);
            let (b, t, d) = (c.batch, c.seq, c.head_dim);
            let lengths: Vec<i64> = (0..b).map(|i| t - (i % 4)).collect();
            let rows: Vec<i64> = lengths
                .iter()
                .flat_map(|&n| (0..t).map(move |p| i64::from(if c.left_padding { p >= t - n } else { p < n })))
                .collect();
            let mask = Tensor::from_slice(&rows).view([b, t]);
            let opts = (Kind::Float, Device::Cpu);
            let q = Tensor::randn([b, t, c.heads * d], opts).to_kind(kind);
            let k = Tensor::randn([b, t, c.kv_heads * d], opts).to_kind(kind);
            let v = Tensor::randn([b, t, c.kv_heads * d], opts).to_kind(kind);
            let iters = (2_000_000 / (b * t * t * c.heads * d / 64 + 1)).clamp(3, 200) as usize;

            // Each route as the models call it: the mask built once per forward
            // pass (not timed), then `attend_split` per layer.
            let on = |kernel: Kernel| AttentionMask::new_on(&mask, c.visibility, c.heads, None, Some(kernel)).unwrap();
            let (ours, sdpa) = (on(Kernel::Cpu), on(Kernel::Fused));
            let ours_us = time(iters, || ours.attend_split(&q, &k, &v, c.heads, c.kv_heads, None).unwrap());
            let sdpa_us = time(iters, || sdpa.attend_split(&q, &k, &v, c.heads, c.kv_heads, None).unwrap());
            // Our kernel alone, on a fused buffer built beforehand.
            let fused_qkv = {
                let group = c.heads / c.kv_heads;
                let expand = |x: &Tensor| {
                    x.view([b, t, c.kv_heads, 1, d]).expand([b, t, c.kv_heads, group, d], false).reshape([b, t, -1])
                };
                Tensor::cat(&[&q, &expand(&k), &expand(&v)], -1)
            };
            let kernel_us = time(iters, || ours.attend(&fused_qkv, c.heads).unwrap());
            let route = match AttentionMask::new(&mask, c.visibility, c.heads, None).unwrap() {
                AttentionMask::Fused(_) => "SDPA",
                AttentionMask::Cpu { .. } => "ours",
                AttentionMask::Explicit(_) => "explicit",
            };

            // Same results on every real token (padding rows never reach an output).
            let real = mask.unsqueeze(-1).to_kind(Kind::Double);
            let a = ours.attend_split(&q, &k, &v, c.heads, c.kv_heads, None).unwrap().to_kind(Kind::Double);
            let e = sdpa.attend_split(&q, &k, &v, c.heads, c.kv_heads, None).unwrap().to_kind(Kind::Double);
            let diff = ((a - e) * &real).abs().max().double_value(&[]);
            let tolerance = if kind == Kind::Float { 1e-4 } else { 3e-2 };
            assert!(diff < tolerance, "{} {kind:?} {b}×{t}: ours and SDPA differ by {diff}", c.name);
            println!(
                "| {} | {} | {b}×{t} | {ours_us:.0} | {kernel_us:.0} | {sdpa_us:.0} | {route} |",
                c.name,
                if kind == Kind::Float { "f32" } else { "bf16" }
            );
        }
    }
}
