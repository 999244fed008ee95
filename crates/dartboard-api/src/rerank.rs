//! [`RerankModel`]: a cross-encoder on its own worker thread, with the same
//! queue, batching and errors as [`crate::EmbeddingModel`].

use std::sync::Arc;
use std::time::Instant;

use dartboard_config::EmbeddingConfig;
use dartboard_embeddings::{CrossEncoder, EmbedError, PairScores, PairTokenizer, TokenizedPairs};
use dartboard_hub::progress::LogProgress;

use crate::embed::ModelInfo;
use crate::worker::{BatchObserver, BatchOptions, Engine, Worker};
use crate::ApiError;

/// Scores of one rerank request, one per text, in the texts' order.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankResponse {
    /// After the model's activation (sigmoid for one-label rerankers), as
    /// [`CrossEncoder::score`] returns them.
    pub scores: Vec<f32>,
    /// The logits before the activation (text-embeddings-inference's `raw_scores`).
    pub raw_scores: Vec<f32>,
    /// Tokens per (query, text) pair as scored (special tokens included, after
    /// truncation).
    pub token_counts: Vec<usize>,
}

struct RerankEngine(CrossEncoder);

impl Engine for RerankEngine {
    type Group = TokenizedPairs;
    type Output = PairScores;

    fn run(&self, groups: &[&TokenizedPairs]) -> Result<Vec<PairScores>, EmbedError> {
        self.0.predict_tokenized(groups)
    }
}

/// A loaded cross-encoder that any number of threads and tasks can share: a
/// cheap-to-clone handle to its worker thread, with [`BatchOptions`] and errors
/// ([`ApiError::Busy`], [`ApiError::TooLong`], [`ApiError::Stopped`]) as for
/// [`crate::EmbeddingModel`]. Scores use the first label.
#[derive(Clone)]
pub struct RerankModel {
    inner: Arc<Inner>,
}

struct Inner {
    worker: Worker<RerankEngine>,
    tokenizer: PairTokenizer,
    info: ModelInfo,
    labels: usize,
}

impl RerankModel {
    /// Finds the cross-encoder `model` (a name, `org/name@rev` or a directory) in
    /// the cache `config` names (downloading it unless `HF_HUB_OFFLINE` is set) and
    /// loads it with `config`'s device, precision and batch size.
    pub fn new(model: &str, config: &EmbeddingConfig, options: BatchOptions) -> Result<Self, ApiError> {
        tracing::info!("Initializing rerank model: {model} (device={})", config.device);
        let started = Instant::now();
        let cross = CrossEncoder::from_config(model, config, &LogProgress)?;
        tracing::info!(
            model = %model,
            labels = cross.num_labels(),
            device = %cross.device_name(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rerank model ready"
        );
        Self::from_cross_encoder(cross, model.to_owned(), config.dtype.to_string(), options)
    }

    /// Serves a cross-encoder loaded some other way, under `name`; `dtype` is the
    /// precision it was loaded with (for [`RerankModel::info`]).
    pub fn from_cross_encoder(
        cross: CrossEncoder,
        name: String,
        dtype: String,
        options: BatchOptions,
    ) -> Result<Self, ApiError> {
        let tokenizer = cross.tokenizer().clone();
        let labels = cross.num_labels();
        let info = ModelInfo {
            name,
            revision: None,
            dim: labels,
            max_input_length: cross.max_length(),
            dtype,
            device: cross.device_name(),
        };
        let worker = Worker::start("dartboard-rerank", RerankEngine(cross), options)?;
        Ok(RerankModel { inner: Arc::new(Inner { worker, tokenizer, info, labels }) })
    }

    /// Sets the one observer of the worker's batches (replacing any earlier one).
    pub fn on_batch(&self, observer: BatchObserver) {
        self.inner.worker.on_batch(observer);
    }

    /// Facts about the model (`dim` is the number of labels).
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Requests waiting now (not counting the batch the worker is running).
    pub fn queue_depth(&self) -> usize {
        self.inner.worker.queue_depth()
    }

    /// Scores `texts` against `query` without blocking the async runtime
    /// (tokenizing on tokio's blocking pool inside a tokio runtime). With
    /// `truncate` false, a pair over the model's limit is [`ApiError::TooLong`]
    /// naming the text's index.
    pub async fn score_async(
        &self,
        query: String,
        texts: Vec<String>,
        truncate: bool,
    ) -> Result<RerankResponse, ApiError> {
        self.inner.worker.check_room()?;
        let tokenizer = self.inner.tokenizer.clone();
        let tokenize = move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            prepare(&tokenizer, &query, &texts, truncate)
        };
        let tokenized = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => match runtime.spawn_blocking(tokenize).await {
                Ok(tokenized) => tokenized?,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(_) => return Err(ApiError::Stopped),
            },
            Err(_) => tokenize()?,
        };
        let token_counts = tokenized.token_counts();
        if tokenized.is_empty() {
            return Ok(RerankResponse { scores: Vec::new(), raw_scores: Vec::new(), token_counts });
        }
        let (tokens, pairs) = (tokenized.total_tokens(), tokenized.len());
        let scores = self.inner.worker.call_async(tokenized, tokens, pairs)?.await?;
        Ok(self.response(scores, token_counts))
    }

    /// Scores `texts` against `query`, blocking this thread; see
    /// [`RerankModel::score_async`].
    pub fn rerank(&self, query: &str, texts: &[&str], truncate: bool) -> Result<RerankResponse, ApiError> {
        self.inner.worker.check_room()?;
        let tokenized = prepare(&self.inner.tokenizer, query, texts, truncate)?;
        let token_counts = tokenized.token_counts();
        if tokenized.is_empty() {
            return Ok(RerankResponse { scores: Vec::new(), raw_scores: Vec::new(), token_counts });
        }
        let (tokens, pairs) = (tokenized.total_tokens(), tokenized.len());
        let scores = self.inner.worker.call(tokenized, tokens, pairs)?;
        Ok(self.response(scores, token_counts))
    }

    /// Relevance of each text to `query` (activated, truncating), as
    /// [`CrossEncoder::score`] returns it; blocks this thread.
    pub fn score(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, ApiError> {
        Ok(self.rerank(query, texts, true)?.scores)
    }

    /// Stops taking requests, finishes those queued and waits for the worker;
    /// later calls fail with [`ApiError::Stopped`].
    pub fn shutdown(&self) {
        self.inner.worker.shutdown();
    }

    fn response(&self, scores: PairScores, token_counts: Vec<usize>) -> RerankResponse {
        let first = |values: &[f32]| values.iter().step_by(self.inner.labels).copied().collect();
        RerankResponse { scores: first(&scores.scores), raw_scores: first(&scores.logits), token_counts }
    }
}

fn prepare(tokenizer: &PairTokenizer, query: &str, texts: &[&str], truncate: bool) -> Result<TokenizedPairs, ApiError> {
    let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, *t)).collect();
    let tokenized = tokenizer.tokenize_pairs(&pairs)?;
    if !truncate {
        if let Some(over) = tokenizer.find_overlong(&pairs, &tokenized)? {
            return Err(ApiError::TooLong { index: over.index, tokens: over.tokens, max: over.max });
        }
    }
    Ok(tokenized)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use dartboard_embeddings::LoadOptions;
    use dartboard_hub::ModelFiles;

    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/generated/tiny/cross_encoder")
    }

    fn cross() -> CrossEncoder {
        CrossEncoder::load(&ModelFiles::open(fixture(), None, None).unwrap(), LoadOptions::default()).unwrap()
    }

    fn handle(options: BatchOptions) -> RerankModel {
        RerankModel::from_cross_encoder(cross(), "cross_encoder".into(), "f32".into(), options).unwrap()
    }

    fn wait_depth(model: &RerankModel, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while model.queue_depth() < n {
            if Instant::now() > deadline {
                model.inner.worker.gate().open();
                panic!("{n} requests were not queued in 60 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn batched_scores_equal_cross_encoder_scores_with_the_logits_beside_them() {
        let direct = cross();
        let model = handle(BatchOptions::default());
        let long = "passages about darts and boards ".repeat(60);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("what is dartboard", vec!["a retrieval method", "a game", long.as_str()]),
            ("another query", vec!["one passage"]),
            ("a third, longer query about retrieval", vec!["x", "y y", "z z z", "w"]),
        ];
        let gate = model.inner.worker.gate();
        gate.close();
        let answers = std::thread::scope(|s| {
            let held = s.spawn(|| model.score("held", &["back"]));
            gate.wait_taken(1);
            let handles: Vec<_> = cases
                .iter()
                .enumerate()
                .map(|(i, (query, texts))| {
                    let handle = s.spawn(|| model.rerank(query, texts, true));
                    wait_depth(&model, i + 1);
                    handle
                })
                .collect();
            gate.open();
            held.join().unwrap().unwrap();
            handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect::<Vec<_>>()
        });
        assert_eq!(direct.activation(), dartboard_embeddings::ScoreActivation::Sigmoid);
        for ((query, texts), answer) in cases.iter().zip(answers) {
            let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (*query, *t)).collect();
            let alone = direct.predict_tokenized(&[&direct.tokenizer().tokenize_pairs(&pairs).unwrap()]).unwrap();
            assert_eq!(answer.raw_scores, alone[0].logits, "{query}");
            assert_eq!(answer.scores, direct.score(query, texts).unwrap(), "{query}");
            assert_eq!(answer.raw_scores.len(), texts.len());
            for (score, raw) in answer.scores.iter().zip(&answer.raw_scores) {
                // sigmoid of the logit, in f64: what libtorch computed in f32.
                let sigmoid = 1.0 / (1.0 + (-f64::from(*raw)).exp());
                assert!((sigmoid - f64::from(*score)).abs() < 1e-6, "{score} is not sigmoid({raw})");
            }
        }
    }

    #[test]
    fn over_long_pairs_busy_and_stopped() {
        let model = handle(BatchOptions { max_batch_tokens: 16384, max_queued: 1 });
        let max = model.info().max_input_length;
        let mut tokenizer = tokenizers::Tokenizer::from_file(fixture().join("tokenizer.json")).unwrap();
        tokenizer.with_truncation(None).unwrap();
        tokenizer.with_padding(None);
        let over = "word ".repeat(max);
        let whole = tokenizer.encode(("query", over.as_str()), true).unwrap().len();
        match model.rerank("query", &["fine", &over], false) {
            Err(ApiError::TooLong { index: 1, tokens, max: limit }) => assert_eq!((tokens, limit), (whole, max)),
            other => panic!("expected TooLong for text 1, got {other:?}"),
        }
        assert_eq!(model.rerank("query", &["fine", &over], true).unwrap().token_counts[1], max);

        let gate = model.inner.worker.gate();
        let taken = gate.taken();
        gate.close();
        std::thread::scope(|s| {
            let held = s.spawn(|| model.score("q", &["held"]));
            gate.wait_taken(taken + 1);
            let queued = s.spawn(|| model.score("q", &["queued"]));
            wait_depth(&model, 1);
            assert!(matches!(model.score("q", &["refused"]), Err(ApiError::Busy { queued: 1 })));
            gate.open();
            held.join().unwrap().unwrap();
            queued.join().unwrap().unwrap();
        });
        model.shutdown();
        assert!(matches!(model.score("q", &["late"]), Err(ApiError::Stopped)));
    }
}
