//! Criterion benchmarks of the pipeline's parts on the real all-MiniLM-L6-v2 (cached
//! by `cargo xtask setup`): tokenization, one forward pass per batch shape, pooling.
//! Whole-corpus throughput against sentence-transformers is `cargo xtask bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dartboard_config::{DType, EmbeddingConfig, Overrides};
use dartboard_embeddings::{LoadOptions, Pooling, PoolingMode, SentenceEmbedder};
use dartboard_hub::{ModelRef, ModelStore};

fn model(dtype: DType) -> SentenceEmbedder {
    let config = EmbeddingConfig::load(&Overrides::default()).expect("configuration");
    let files = ModelStore::new(&config.cache_dir)
        .resolve(&ModelRef::parse("all-MiniLM-L6-v2").unwrap())
        .expect("all-MiniLM-L6-v2 is cached (run `cargo xtask setup`)");
    SentenceEmbedder::load(&files, LoadOptions { dtype, ..LoadOptions::default() }).expect("model loads")
}

/// A text of about `tokens` WordPiece tokens ([CLS] and [SEP] included).
fn text_of(tokens: usize) -> String {
    vec!["retrieval"; tokens.saturating_sub(2)].join(" ")
}

fn tokenization(c: &mut Criterion) {
    let model = model(DType::F32);
    let texts: Vec<String> =
        (0..256).map(|i| format!("Passage {i} explains how Dartboard balances relevance and diversity.")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("tokenize");
    group.throughput(Throughput::Elements(refs.len() as u64));
    group.bench_function("256 sentences", |b| b.iter(|| model.token_counts(&refs).unwrap()));
    group.finish();
}

fn forward(c: &mut Criterion) {
    for dtype in [DType::F32, DType::Bf16] {
        let model = model(dtype);
        let mut group = c.benchmark_group(format!("forward/{dtype}"));
        group.sample_size(10);
        for (batch, tokens) in [(1, 16), (32, 16), (32, 64), (128, 16), (8, 256)] {
            let text = text_of(tokens);
            let texts = vec![text.as_str(); batch];
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::from_parameter(format!("{batch}x{tokens}")), &texts, |b, texts| {
                b.iter(|| model.encode(texts).unwrap())
            });
        }
        group.finish();
    }
}

fn pooling(c: &mut Criterion) {
    let tokens = tch::Tensor::randn([32, 64, 384], (tch::Kind::Float, tch::Device::Cpu));
    let mask = tch::Tensor::ones([32, 64], (tch::Kind::Int64, tch::Device::Cpu));
    let mut group = c.benchmark_group("pooling");
    for (name, mode) in [("mean", PoolingMode::Mean), ("cls", PoolingMode::Cls), ("max", PoolingMode::Max)] {
        let pooling = Pooling::new(vec![mode]);
        group
            .bench_function(format!("{name} 32x64x384"), |b| b.iter(|| pooling.forward(&tokens, &mask, None).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, tokenization, forward, pooling);
criterion_main!(benches);
