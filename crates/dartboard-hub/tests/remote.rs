//! The sync API against the Hub stand-in, where the crate's unit tests cannot reach:
//! callers inside an async runtime, and the Hub's error codes.

use std::time::Duration;

use dartboard_hub::progress::NoProgress;
use dartboard_hub::{HubConfig, HubError, ModelHub, ModelRef};
use dartboard_hub_stub::{HubStub, StubRepo};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn tiny_repo(id: &str) -> StubRepo {
    StubRepo::new(
        id,
        COMMIT,
        vec![
            ("config.json".into(), br#"{"model_type": "bert"}"#.to_vec()),
            ("tokenizer.json".into(), br#"{"version": "1.0"}"#.to_vec()),
            ("model.safetensors".into(), vec![3; 5000]),
        ],
    )
}

fn config(stub: &HubStub) -> HubConfig {
    HubConfig::default().with_endpoint(stub.endpoint()).with_retries(3, Duration::from_millis(10))
}

/// What an axum handler or `#[tokio::main]` does when the model is not cached yet:
/// call the sync API from inside a runtime.
fn download_from_async_caller(stub: &HubStub) {
    let cache = tempfile::tempdir().unwrap();
    let hub = ModelHub::new(cache.path(), config(stub));
    let files = hub.resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    assert_eq!(files.revision(), Some(COMMIT));
    assert_eq!(std::fs::read(files.path("model.safetensors")).unwrap(), vec![3; 5000]);
}

#[tokio::test(flavor = "current_thread")]
async fn downloads_from_inside_a_current_thread_runtime() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    download_from_async_caller(&stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_from_inside_a_multi_thread_runtime() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    download_from_async_caller(&stub);
}

#[test]
fn a_mistyped_repo_is_reported_as_such_with_a_token() {
    // With a token, the Hub answers a repo it does not know with 404 and
    // `X-Error-Code: RepoNotFound`, on the revision endpoint too: the code wins over
    // what a 404 there would otherwise mean.
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let cache = tempfile::tempdir().unwrap();
    let hub = ModelHub::new(cache.path(), config(&stub).with_token(Some("hf_some_token".into())));
    let err = hub.prefetch(&ModelRef::parse("org/tyni").unwrap(), &NoProgress).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { has_token: true, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("org/tyni") && message.contains("not found"), "{message}");
    assert!(!message.contains("revision"), "{message}");
    let answered: Vec<_> = stub.requests().into_iter().filter(|r| r.target.contains("org/tyni")).collect();
    assert!(answered.iter().all(|r| r.authorization.is_some()), "the token was sent: {answered:?}");

    // A revision that does not exist in a repo that does is still that.
    let err = hub.prefetch(&ModelRef::parse("org/tiny@v9").unwrap(), &NoProgress).unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
}
