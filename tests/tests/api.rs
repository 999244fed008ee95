//! The service dependencies: one lazily built model per process, shared by threads.

use std::collections::HashSet;

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
