//! The service dependencies: one lazily built model per process, shared by threads,
//! behind a handle whose worker batches concurrent callers.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};

use dartboard_api::{BatchEvent, BatchOptions, EmbedRequest, EmbeddingModel, PromptChoice};
use dartboard_embeddings::{LoadOptions, Prompt, SentenceEmbedder};
use dartboard_tests::{minilm, sts};

#[test]
fn one_model_per_process_shared_by_threads() {
    // Nothing in this test binary sets EMBEDDING_*, so the defaults apply unless the
    // developer's shell overrides them; the test only relies on the model loading.
    let addresses: HashSet<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let model = dartboard_api::embedding_model().expect("default model loads (run cargo xtask setup)");
                    let v = model.encode_one(&format!("thread {i} says hello")).unwrap();
                    assert_eq!(v.len(), model.embedding_dim());
                    model as *const _ as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(addresses.len(), 1, "every thread gets the same instance");

    let summary = dartboard_api::config_summary().unwrap();
    let model = dartboard_api::embedding_model().unwrap();
    assert_eq!(summary.embedding_model, model.name());
    assert_eq!(model.device(), "cpu");
}

/// 32 threads released together, each embedding STS-B sentences one call at a
/// time through one handle to the real all-MiniLM-L6-v2: every thread gets its own
/// rows, bit for bit what `SentenceEmbedder::encode_with` gives each text alone,
/// and the worker puts several callers into one batch.
#[test]
fn concurrent_callers_get_encode_with_results_bit_for_bit_in_shared_batches() {
    let files = minilm();
    let direct = SentenceEmbedder::load(&files, LoadOptions::default()).unwrap();
    let model = EmbeddingModel::from_embedder(
        SentenceEmbedder::load(&files, LoadOptions::default()).unwrap(),
        "all-MiniLM-L6-v2".into(),
        BatchOptions::default(),
    )
    .unwrap();
    let largest = Arc::new(Mutex::new(0usize));
    let seen = Arc::clone(&largest);
    model.on_batch(Arc::new(move |e: &BatchEvent| {
        let mut largest = seen.lock().unwrap();
        *largest = (*largest).max(e.requests);
    }));
    let sentences: Vec<String> = sts("dev").into_iter().map(|(_, a, _)| a).take(32 * 4).collect();
    let start = Barrier::new(32);
    let answers: Vec<Vec<(Vec<f32>, Vec<usize>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = sentences
            .chunks(4)
            .enumerate()
            .map(|(thread, chunk)| {
                let (model, start) = (model.clone(), &start);
                s.spawn(move || {
                    start.wait();
                    // Even threads one text per call, odd ones two texts with a prompt.
                    if thread % 2 == 0 {
                        chunk
                            .iter()
                            .map(|t| {
                                let r = model.embed(EmbedRequest::new(vec![t.clone()])).unwrap();
                                (r.embeddings.row(0).to_vec(), r.token_counts)
                            })
                            .collect()
                    } else {
                        chunk
                            .chunks(2)
                            .map(|pair| {
                                let r = model
                                    .embed(EmbedRequest {
                                        texts: pair.to_vec(),
                                        prompt: PromptChoice::Text("query: ".into()),
                                        truncate: false,
                                    })
                                    .unwrap();
                                (r.embeddings.as_slice().to_vec(), r.token_counts)
                            })
                            .collect()
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (thread, (chunk, answers)) in sentences.chunks(4).zip(answers).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let expected: Vec<(Vec<f32>, Vec<usize>)> = if thread % 2 == 0 {
            refs.iter().map(|t| (direct.encode_one(t).unwrap(), direct.token_counts(&[t]).unwrap())).collect()
        } else {
            refs.chunks(2)
                .map(|pair| {
                    let e = direct.encode_with(pair, Prompt::Text("query: ")).unwrap();
                    let counts = direct.tokenizer().tokenize(pair, Prompt::Text("query: ")).unwrap().token_counts();
                    (e.as_slice().to_vec(), counts)
                })
                .collect()
        };
        assert!(answers == expected, "thread {thread}: rows or token counts differ from encode_with");
    }
    let largest = *largest.lock().unwrap();
    assert!(largest > 1, "32 callers released together never shared a batch (largest {largest})");
}
