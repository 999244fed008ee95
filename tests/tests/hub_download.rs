//! Downloads against a Hub stand-in on 127.0.0.1 (`dartboard-hub-stub`): a real
//! client, a real server, a real cache in a temporary directory. Every promise of
//! the hub layer has a test here: verified files only, resume after a cut, bounded
//! retries, one clear message per failure, offline without a single request, locks
//! between processes, no debris on a full disk, interoperability with Python.

use std::path::Path;
use std::time::Duration;

use dartboard_hub::progress::NoProgress;
use dartboard_hub::{HubConfig, HubError, ModelHub, ModelRef};
use dartboard_hub_stub::{HubStub, StubRepo};
use dartboard_tests::{dartboard, dartboard_online, minilm, run, venv_python};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn tiny_repo(id: &str) -> StubRepo {
    let weights: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    StubRepo::new(
        id,
        COMMIT,
        vec![
            ("config.json".into(), br#"{"model_type": "bert"}"#.to_vec()),
            ("tokenizer.json".into(), br#"{"version": "1.0"}"#.to_vec()),
            ("modules.json".into(), br#"[{"path": "", "type": "sentence_transformers.models.Transformer"}]"#.to_vec()),
            ("model.safetensors".into(), weights),
            ("1_Pooling/config.json".into(), br#"{"pooling_mode_mean_tokens": true}"#.to_vec()),
            ("onnx/model.onnx".into(), vec![7; 1000]),
            ("README.md".into(), b"# tiny".to_vec()),
        ],
    )
}

fn config(stub: &HubStub) -> HubConfig {
    HubConfig::default().with_endpoint(stub.endpoint()).with_retries(4, Duration::from_millis(20))
}

fn hub(stub: &HubStub, root: &Path) -> ModelHub {
    ModelHub::new(root, config(stub))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn blobs(root: &Path, id: &str) -> Vec<String> {
    files_in(&root.join(format!("models--{}", id.replace('/', "--"))).join("blobs"))
}

#[test]
fn downloads_into_hub_layout_verified_and_skips_other_formats() {
    let repo = tiny_repo("org/tiny");
    let stub = HubStub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    assert_eq!(files.revision(), Some(COMMIT));
    for f in &repo.files {
        let on_disk = files.path(&f.path);
        if f.path.starts_with("onnx/") {
            assert!(!on_disk.exists(), "onnx export must be skipped");
        } else {
            assert_eq!(std::fs::read(&on_disk).unwrap(), *f.bytes, "{}", f.path);
        }
    }
    let names = blobs(cache.path(), "org/tiny");
    let weights = repo.files.iter().find(|f| f.path == "model.safetensors").unwrap();
    assert!(names.contains(&weights.sha256()), "LFS blob named by sha256: {names:?}");
    assert!(names.contains(&repo.files[0].git_sha1()), "small blob named by git sha1: {names:?}");
    assert!(names.iter().all(|n| !n.contains("incomplete")));
    let refs = std::fs::read_to_string(cache.path().join("models--org--tiny/refs/main")).unwrap();
    assert_eq!(refs, COMMIT);
    assert!(stub.requests().iter().any(|r| r.target.starts_with("/lfs/")), "LFS body came through the redirect");

    // A second prefetch downloads nothing again.
    let before = stub.requests().iter().filter(|r| r.method == "GET" && r.target.contains("resolve")).count();
    hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    let after = stub.requests().iter().filter(|r| r.method == "GET" && r.target.contains("resolve")).count();
    assert_eq!(before, after);
}

#[test]
fn corrupt_body_is_refused_and_nothing_is_kept() {
    let repo = tiny_repo("org/tiny");
    let stub = HubStub::start(vec![repo.clone()]);
    stub.faults().corrupt.lock().unwrap().push("model.safetensors".into());
    let cache = tempfile::tempdir().unwrap();
    let err = hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap_err();
    let weights = repo.files.iter().find(|f| f.path == "model.safetensors").unwrap();
    let message = err.to_string();
    assert!(matches!(err, HubError::HashMismatch { .. }), "{message}");
    assert!(message.contains("model.safetensors") && message.contains(&weights.sha256()), "{message}");
    assert!(!blobs(cache.path(), "org/tiny").iter().any(|b| *b == weights.sha256() || b.contains("incomplete")));
    let snapshot = cache.path().join("models--org--tiny/snapshots").join(COMMIT);
    assert!(!snapshot.join("model.safetensors").exists());
    assert!(!cache.path().join("models--org--tiny/refs/main").exists(), "no ref to a broken snapshot");
}

#[test]
fn cut_connection_resumes_with_a_range_request() {
    let repo = tiny_repo("org/tiny");
    let stub = HubStub::start(vec![repo.clone()]);
    stub.faults().drop_after_bytes.store(100_000, std::sync::atomic::Ordering::SeqCst);
    stub.faults().drop_next_bodies.store(2, std::sync::atomic::Ordering::SeqCst);
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    for f in repo.files.iter().filter(|f| !f.path.starts_with("onnx/")) {
        assert_eq!(std::fs::read(files.path(&f.path)).unwrap(), *f.bytes, "{}", f.path);
    }
    // Two cuts of 100 kB each: the second request resumes at 100 000 and the third
    // at 200 000, so the partial file was kept both times (not restarted from 0).
    let ranges: Vec<String> = stub.requests().iter().filter_map(|r| r.range.clone()).collect();
    assert!(ranges.iter().any(|h| h.starts_with("bytes=100000-")), "{ranges:?}");
    assert!(ranges.iter().any(|h| h.starts_with("bytes=200000-")), "{ranges:?}");
    let whole_body_gets = stub
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.target.starts_with("/lfs/") && r.range.is_none())
        .count();
    assert_eq!(whole_body_gets, 1, "only the first request asked for the whole file");
}

#[test]
fn server_that_ignores_range_still_ends_with_the_right_bytes() {
    let repo = tiny_repo("org/tiny");
    let stub = HubStub::start(vec![repo.clone()]);
    stub.faults().ignore_range.store(true, std::sync::atomic::Ordering::SeqCst);
    stub.faults().drop_after_bytes.store(100_000, std::sync::atomic::Ordering::SeqCst);
    stub.faults().drop_next_bodies.store(1, std::sync::atomic::Ordering::SeqCst);
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    let weights = repo.files.iter().find(|f| f.path == "model.safetensors").unwrap();
    assert_eq!(std::fs::read(files.path("model.safetensors")).unwrap(), *weights.bytes);
}

#[test]
fn server_errors_are_retried_a_bounded_number_of_times() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    stub.faults().fail_next.store(2, std::sync::atomic::Ordering::SeqCst);
    let cache = tempfile::tempdir().unwrap();
    hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();

    let cache = tempfile::tempdir().unwrap();
    stub.faults().fail_next.store(1000, std::sync::atomic::Ordering::SeqCst);
    let before = stub.requests().len();
    let err = hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap_err();
    let sent = stub.requests().len() - before;
    assert!(matches!(err, HubError::ServerError { .. }), "{err}");
    assert!(err.to_string().contains("try again later"), "{err}");
    assert!(sent <= 10, "bounded retries, sent {sent}");
}

#[test]
fn each_failure_has_its_own_message() {
    let mut gated = tiny_repo("org/gated");
    gated.gated_token = Some("hf_right_token".into());
    let stub = HubStub::start(vec![tiny_repo("org/tiny"), gated]);
    let cache = tempfile::tempdir().unwrap();
    let get = |hub: &ModelHub, name: &str| hub.prefetch(&ModelRef::parse(name).unwrap(), &NoProgress).unwrap_err();

    let err = get(&hub(&stub, cache.path()), "org/nope");
    assert!(matches!(err, HubError::RepoNotFound { .. }) && err.to_string().contains("HF_TOKEN"), "{err}");
    // With a token the Hub answers 404 (not 401), on the revision endpoint too; its
    // X-Error-Code still says the repo is unknown, not the revision.
    let with_token = ModelHub::new(cache.path(), config(&stub).with_token(Some("hf_any".into())));
    let err = get(&with_token, "org/nope");
    assert!(matches!(err, HubError::RepoNotFound { has_token: true, .. }), "{err}");
    assert!(!err.to_string().contains("revision"), "{err}");
    let err = get(&hub(&stub, cache.path()), "org/tiny@v9");
    assert!(matches!(err, HubError::RevisionNotFound { .. }) && err.to_string().contains("v9"), "{err}");
    let err = get(&hub(&stub, cache.path()), "org/gated");
    assert!(matches!(err, HubError::AccessDenied { gated: true, has_token: false, .. }), "{err}");
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");
    let wrong = ModelHub::new(cache.path(), config(&stub).with_token(Some("hf_wrong".into())));
    let err = get(&wrong, "org/gated");
    assert!(
        matches!(err, HubError::AccessDenied { has_token: true, .. }) && !err.to_string().contains("hf_wrong"),
        "{err}"
    );
    let right = ModelHub::new(cache.path(), config(&stub).with_token(Some("hf_right_token".into())));
    right.prefetch(&ModelRef::parse("org/gated").unwrap(), &NoProgress).unwrap();
    assert!(stub.requests().iter().any(|r| r.authorization.as_deref() == Some("Bearer hf_right_token")));

    stub.faults().not_a_hub.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = get(&hub(&stub, tempfile::tempdir().unwrap().path()), "org/tiny");
    assert!(err.to_string().contains("HF_ENDPOINT"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let unreachable = ModelHub::new(
        cache.path(),
        HubConfig::default().with_endpoint(endpoint).with_retries(2, Duration::from_millis(10)),
    );
    let err = get(&unreachable, "org/other");
    assert!(matches!(err, HubError::Unreachable { .. }) && err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn offline_uses_the_cache_and_sends_nothing() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let cache = tempfile::tempdir().unwrap();
    let offline = ModelHub::new(cache.path(), config(&stub).with_offline(true));
    let err = offline.resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap_err();
    assert!(matches!(err, HubError::NotCached { offline: true, .. }), "{err}");
    assert!(err.to_string().contains("dartboard prefetch org/tiny"), "{err}");
    assert!(stub.requests().is_empty(), "offline mode made a request");

    hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    let sent = stub.requests().len();
    offline.resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    offline.prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    assert_eq!(stub.requests().len(), sent);
}

#[test]
fn a_model_in_the_hugging_face_cache_is_not_downloaded_again() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let hf_cache = tempfile::tempdir().unwrap();
    hub(&stub, hf_cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    let sent = stub.requests().len();
    let ours = tempfile::tempdir().unwrap();
    let files = hub(&stub, ours.path())
        .with_read_only_cache(hf_cache.path())
        .resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress)
        .unwrap();
    assert!(files.dir().starts_with(hf_cache.path()));
    assert_eq!(stub.requests().len(), sent);

    // A bare transformers checkpoint there (no modules.json) would load with the
    // wrong pooling: it is not used, and the sentence-transformers files are fetched.
    std::fs::remove_file(files.path("modules.json")).unwrap();
    let files = hub(&stub, ours.path())
        .with_read_only_cache(hf_cache.path())
        .resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress)
        .unwrap();
    assert!(files.dir().starts_with(ours.path()) && files.path("modules.json").is_file());
}

/// A small tmpfs for the disk-full tests; `None` where mounting needs root we lack.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        if status.is_ok_and(|s| s.success()) {
            Some(SmallDisk(dir))
        } else {
            // CI runs as root, so this only happens on a developer's machine.
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            None
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_before_download_is_reported_and_leaves_no_debris() {
    let Some(disk) = SmallDisk::mount("256k") else { return };
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let err = hub(&stub, disk.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap_err();
    assert!(matches!(err, HubError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains(&disk.path().display().to_string()), "{err}");
    assert!(blobs(disk.path(), "org/tiny").is_empty());
    assert!(!stub.requests().iter().any(|r| r.target.contains("/resolve/")), "nothing was fetched");
}

#[test]
fn disk_filling_up_during_download_is_reported_and_leaves_no_debris() {
    let Some(disk) = SmallDisk::mount("2m") else { return };
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    stub.faults().delay_ms.store(300, std::sync::atomic::Ordering::SeqCst);
    let root = disk.path().to_path_buf();
    let endpoint = stub.endpoint();
    let download = std::thread::spawn(move || {
        let config = HubConfig::default().with_endpoint(endpoint).with_retries(2, Duration::from_millis(10));
        ModelHub::new(&root, config).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress)
    });
    // The space check has passed once files are requested; then something else
    // fills the disk while the first answer is delayed.
    while !stub.requests().iter().any(|r| r.target.contains("/resolve/")) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut filler = std::fs::File::create(disk.path().join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    let err = download.join().unwrap().unwrap_err();
    assert!(matches!(err, HubError::DiskFull { .. }), "{err}");
    let leftovers: Vec<String> =
        blobs(disk.path(), "org/tiny").into_iter().filter(|b| b.contains("incomplete")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!disk.path().join("models--org--tiny/refs/main").exists());
}

#[test]
fn four_concurrent_prefetches_share_one_set_of_blobs() {
    let repo = tiny_repo("org/tiny");
    let stub = HubStub::start(vec![repo.clone()]);
    stub.faults().delay_ms.store(20, std::sync::atomic::Ordering::SeqCst);
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            dartboard_online(&stub.endpoint())
                .env("SENTENCE_TRANSFORMERS_HOME", cache.path())
                .env("HF_HOME", cache.path().join("hf"))
                .args(["prefetch", "org/tiny"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let names = blobs(cache.path(), "org/tiny");
    assert_eq!(names.len(), repo.files.len() - 1, "one blob per wanted file: {names:?}");
    let downloads = stub.requests().iter().filter(|r| r.method == "GET" && r.target.starts_with("/lfs/")).count();
    assert_eq!(downloads, 1, "the weights were downloaded once");
}

#[test]
fn cli_prefetch_cache_commands_and_repair() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let cache = tempfile::tempdir().unwrap();
    let cmd = || {
        let mut c = dartboard_online(&stub.endpoint());
        c.env("SENTENCE_TRANSFORMERS_HOME", cache.path())
            .env("HF_HOME", cache.path().join("hf"))
            .env("HF_TOKEN", "hf_should_never_be_printed");
        c
    };
    let r = run(cmd().args(["prefetch", "org/tiny", "--revision", "main"]));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains(COMMIT), "{}", r.stdout);
    let r = run(cmd().args(["cache", "list"]));
    assert!(
        r.ok && r.stdout.contains("org/tiny") && r.stdout.contains(COMMIT) && r.stdout.contains("(main)"),
        "{}",
        r.stdout
    );
    assert!(run(cmd().args(["cache", "size"])).stdout.contains("KiB"));
    assert!(run(cmd().args(["cache", "verify"])).stdout.contains("all files match"));

    // Corrupt a blob on disk: verify reports it and fails, --repair fixes it.
    let blob_dir = cache.path().join("models--org--tiny/blobs");
    let victim = blob_dir.join(blobs(cache.path(), "org/tiny").into_iter().find(|b| b.len() == 64).unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, &bytes).unwrap();
    let r = run(cmd().args(["cache", "verify", "org/tiny"]));
    assert!(!r.ok && r.stdout.contains("CORRUPT") && r.stderr.contains("--repair"), "{} {}", r.stdout, r.stderr);
    let r = run(cmd().args(["cache", "verify", "--repair"]));
    assert!(r.ok, "{}", r.stderr);
    assert!(run(cmd().args(["cache", "verify"])).ok);

    let r = run(cmd().args(["cache", "rm", "org/tiny"]));
    assert!(r.ok && r.stdout.contains("removed"), "{}", r.stderr);
    assert!(!cache.path().join("models--org--tiny").exists());

    // Import a local directory under a name, then use it offline by that name.
    let r = run(cmd().args(["cache", "import"]).arg(minilm().dir()).args(["--as", "acme/minilm-copy"]));
    assert!(r.ok, "{}", r.stderr);
    let r = run(cmd().env("HF_HUB_OFFLINE", "1").args(["embed", "--model", "acme/minilm-copy", "hello"]));
    assert!(r.ok, "{}", r.stderr);

    for r in [run(cmd().args(["prefetch", "org/nope"])), run(cmd().args(["cache", "rm", "org/nope"]))] {
        assert!(!r.ok && !r.stderr.contains("panicked"), "{}", r.stderr);
    }
    let all =
        format!("{}{}", run(cmd().args(["prefetch", "org/nope"])).stderr, run(cmd().args(["cache", "list"])).stdout);
    assert!(!all.contains("hf_should_never_be_printed"));
}

#[test]
fn loading_an_uncached_model_downloads_it_and_python_reads_our_cache() {
    let repo = StubRepo::from_dir(
        "sentence-transformers/all-MiniLM-L6-v2",
        "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
        minilm().dir(),
    )
    .unwrap();
    let stub = HubStub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let r = run(dartboard_online(&stub.endpoint())
        .env("SENTENCE_TRANSFORMERS_HOME", cache.path())
        .env("HF_HOME", cache.path().join("hf"))
        .args(["embed", "Dartboard improves RAG"]));
    assert!(r.ok, "{}", r.stderr);
    let ours: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();

    // sentence-transformers, offline, on the cache dartboard wrote.
    let script = "import sys, json\nfrom sentence_transformers import SentenceTransformer\n\
        m = SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2', cache_folder=sys.argv[1], device='cpu')\n\
        print(json.dumps(m.encode(['Dartboard improves RAG'])[0].tolist()))";
    let out = run(std::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(cache.path())
        .env("HF_HUB_OFFLINE", "1"));
    assert!(out.ok, "{}", out.stderr);
    let theirs: Vec<f32> = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    let ours: Vec<f32> = serde_json::from_value(ours["embedding"].clone()).unwrap();
    assert!(dartboard_tests::cosine(&ours, &theirs) > 0.99999);
}

#[test]
fn python_client_accepts_the_stub() {
    // The stand-in is only worth something if the official client agrees it speaks
    // the Hub protocol: huggingface_hub's snapshot_download must fetch every file.
    let repo = tiny_repo("org/tiny");
    let stub = HubStub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let script = "import sys\nfrom huggingface_hub import snapshot_download\nprint(snapshot_download('org/tiny', cache_dir=sys.argv[1]))";
    let out = run(std::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(cache.path())
        .env("HF_ENDPOINT", stub.endpoint())
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HUB_DISABLE_XET", "1"));
    assert!(out.ok, "{}", out.stderr);
    let snapshot = Path::new(out.stdout.lines().last().unwrap().trim());
    for f in &repo.files {
        assert_eq!(std::fs::read(snapshot.join(&f.path)).unwrap(), *f.bytes, "{}", f.path);
    }
}

#[test]
fn requests_go_through_http_proxy_and_hf_cache_is_read() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let cache = tempfile::tempdir().unwrap();
    // An endpoint that does not resolve: only the proxy (the stub) can answer it.
    let r = run(dartboard_online("http://hub.example.invalid")
        .env("SENTENCE_TRANSFORMERS_HOME", cache.path())
        .env("HF_HOME", cache.path().join("hf"))
        .env("HTTP_PROXY", stub.endpoint())
        .env("http_proxy", stub.endpoint())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["prefetch", "org/tiny"]));
    assert!(r.ok, "{}", r.stderr);
    assert!(stub.requests().iter().any(|q| q.target.starts_with("/api/models/org/tiny")));

    // A model only in the Hugging Face cache (HF_HOME/hub) loads offline, by name.
    let hf_home = tempfile::tempdir().unwrap();
    let imported = run(dartboard()
        .env("SENTENCE_TRANSFORMERS_HOME", hf_home.path().join("hub"))
        .args(["cache", "import"])
        .arg(minilm().dir())
        .args(["--as", "acme/only-in-hf-cache"]));
    assert!(imported.ok, "{}", imported.stderr);
    let empty = tempfile::tempdir().unwrap();
    let r = run(dartboard()
        .env("SENTENCE_TRANSFORMERS_HOME", empty.path())
        .env("HF_HOME", hf_home.path())
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .args(["embed", "--model", "acme/only-in-hf-cache", "hi"]));
    assert!(r.ok, "{}", r.stderr);
}

#[test]
fn an_incomplete_cached_snapshot_is_completed_not_refused() {
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    // An interrupted earlier download: the snapshot lacks its weights.
    std::fs::remove_file(files.path("model.safetensors")).unwrap();
    let offline = ModelHub::new(cache.path(), config(&stub).with_offline(true));
    assert!(offline.resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).is_err());
    let again = hub(&stub, cache.path()).resolve(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    assert!(again.path("model.safetensors").is_file());
}

#[test]
fn downloaded_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let stub = HubStub::start(vec![tiny_repo("org/tiny")]);
    let cache = tempfile::tempdir().unwrap();
    hub(&stub, cache.path()).prefetch(&ModelRef::parse("org/tiny").unwrap(), &NoProgress).unwrap();
    // std::fs::write creates with 0666 masked by the umask, as huggingface_hub does.
    let plain = cache.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let repo = cache.path().join("models--org--tiny");
    let mut written = vec![repo.join("refs/main")];
    written.extend(blobs(cache.path(), "org/tiny").into_iter().map(|b| repo.join("blobs").join(b)));
    for path in written {
        assert_eq!(mode(&path), mode(&plain), "{}", path.display());
    }
    assert_ne!(mode(&plain), 0o600, "the test needs a umask that lets others read (022 is usual)");
}
