//! `dartboard push` against the Hub stand-in on 127.0.0.1 (`dartboard-hub-stub`): the
//! real binary, a real server, and the official Python client reading back what was
//! pushed. Every promise of the push has a test: the files arrive byte for byte (and
//! sentence-transformers embeds with them bit for bit as with the source), a cut
//! upload is retried without a second commit, a lost commit reply is not committed
//! twice, a file that changes mid-push is caught before the commit, nothing is sent
//! twice, and each refusal has its own message.
//!
//! Every command runs under a hard timeout (`run_within` kills it), and the stand-in
//! stops when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use dartboard_hub::progress::NoProgress;
use dartboard_hub::{HubConfig, HubError, ModelHub, PushOptions, Pushed};
use dartboard_hub_stub::{HubStub, StubRepo};
use dartboard_tests::{dartboard_online, minilm, run_within, venv_python, workspace_root, Run};

const WRITE: &str = "hf_write_token_for_tests";
const READ: &str = "hf_read_only_token_for_tests";
/// Seconds any one command may take before it is killed and the test fails.
const LIMIT: u64 = 180;

fn stub() -> HubStub {
    let stub = HubStub::start(Vec::new());
    stub.add_token(WRITE, true);
    stub.add_token(READ, false);
    stub
}

/// A tiny sentence-transformers model with two LFS files (a 4 MB and a 2 KB
/// safetensors) and several regular ones, nested folders included.
fn tiny_model() -> PathBuf {
    let dir = workspace_root().join("tests/fixtures/generated/tiny/bert_cls_dense");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} missing: run `cargo xtask test` (it makes the fixtures)",
        dir.display()
    );
    dir
}

/// A copy of the tiny model that a test may change.
fn tiny_copy() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for (relative, bytes) in files_of(&tiny_model()) {
        let to = copy.path().join(relative);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    copy
}

/// Every file under `dir` (links followed, `.git`/`.cache` left out), by relative path.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == ".git" || name == ".cache" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `dartboard push ARGS...` against the stand-in, with `token` as HF_TOKEN (none
/// when `None`) and no token file to fall back on.
fn push(stub: &HubStub, token: Option<&str>, args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = dartboard_online(&stub.endpoint());
    cmd.env("HF_TOKEN_PATH", home.path().join("no-token-file")).env("HF_HOME", home.path().join("hf"));
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    run_within(cmd.arg("push").args(args), LIMIT)
}

fn push_dir(stub: &HubStub, dir: &Path, repo: &str, extra: &[&str]) -> Run {
    let mut args = vec![dir.to_str().unwrap(), repo];
    args.extend_from_slice(extra);
    push(stub, Some(WRITE), &args)
}

/// The 40-hex commit id `dartboard push` printed.
fn printed_commit(r: &Run) -> String {
    let commit = r
        .stdout
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 40)
        .unwrap_or_else(|| panic!("no commit id in: {}", r.stdout));
    commit.to_owned()
}

fn puts(stub: &HubStub) -> usize {
    stub.requests().iter().filter(|r| r.method == "PUT").count()
}

/// The official client's `snapshot_download` of `repo@revision` from the stand-in.
fn python_download(stub: &HubStub, repo: &str, revision: &str, token: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let cache = tempfile::tempdir().unwrap();
    let script = "import sys\nfrom huggingface_hub import snapshot_download\n\
        print(snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3]))";
    let mut cmd = Command::new(venv_python());
    cmd.args(["-c", script, repo, revision])
        .arg(cache.path())
        .env("HF_ENDPOINT", stub.endpoint())
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_TOKEN_PATH", cache.path().join("no-token-file"))
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    let out = run_within(&mut cmd, LIMIT);
    assert!(out.ok, "snapshot_download {repo}@{revision}: {}", out.stderr);
    let snapshot = PathBuf::from(out.stdout.lines().last().unwrap().trim());
    (cache, snapshot)
}

fn assert_same_files(source: &Path, downloaded: &Path) {
    let theirs: std::collections::BTreeMap<String, Vec<u8>> = files_of(downloaded).into_iter().collect();
    let ours = files_of(source);
    for (name, bytes) in &ours {
        let Some(downloaded) = theirs.get(name) else { panic!("{name} was not downloaded: {:?}", theirs.keys()) };
        assert!(bytes == downloaded, "{name} differs after the round trip");
    }
    // Only what the Hub puts in every new repo may be there besides.
    let extra: Vec<&String> = theirs.keys().filter(|n| !ours.iter().any(|(o, _)| o == *n)).collect();
    assert!(extra.iter().all(|n| *n == ".gitattributes"), "unexpected files: {extra:?}");
}

/// sentence-transformers' embeddings of a few sentences with the model at `dir`, as
/// the exact f32 values.
fn st_embed(dir: &Path) -> Vec<Vec<f64>> {
    let script = "import sys, json\nfrom sentence_transformers import SentenceTransformer\n\
        m = SentenceTransformer(sys.argv[1], device='cpu')\n\
        e = m.encode(['Dartboard improves RAG', 'A cat sat on the mat.', 'Embeddings, pushed and pulled back.'])\n\
        print(json.dumps(e.tolist()))";
    let out = run_within(
        Command::new(venv_python()).args(["-c", script]).arg(dir).env("HF_HUB_OFFLINE", "1").env_remove("HF_ENDPOINT"),
        LIMIT,
    );
    assert!(out.ok, "{}", out.stderr);
    serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn a_folder_pushed_reads_back_byte_identical_through_the_official_client() {
    let stub = stub();
    let source = tiny_model();
    let r = push_dir(&stub, &source, "acme/tiny", &["-m", "First upload"]);
    assert!(r.ok, "{}", r.stderr);
    let commit = printed_commit(&r);
    assert!(r.stdout.contains("created repository"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{}/acme/tiny/commit/{commit}", stub.endpoint())), "{}", r.stdout);
    let commits = stub.commits();
    assert_eq!(commits.len(), 1, "exactly one commit");
    assert_eq!((commits[0].oid.as_str(), commits[0].summary.as_str()), (commit.as_str(), "First upload"));
    assert!(!stub.repo("acme/tiny").unwrap().private, "public unless --private");
    // Two LFS objects were sent, each once.
    assert_eq!(puts(&stub), 2, "{:?}", stub.requests());
    let (_cache, snapshot) = python_download(&stub, "acme/tiny", "main", None);
    assert_same_files(&source, &snapshot);
}

#[test]
fn a_cached_model_mirrored_embeds_bit_for_bit_as_the_source() {
    let stub = stub();
    let minilm = minilm();
    let revision = minilm.revision().expect("the cached MiniLM is a snapshot").to_owned();
    // The real cache (dartboard_online points SENTENCE_TRANSFORMERS_HOME at it) is only read.
    let reference = format!("sentence-transformers/all-MiniLM-L6-v2@{revision}");
    let r = push(&stub, Some(WRITE), &[&reference, "mirror/all-MiniLM-L6-v2", "--revision", "main"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(stub.commits().len(), 1);
    assert!(stub.commits()[0].summary.contains(&revision), "{}", stub.commits()[0].summary);
    let (_cache, snapshot) = python_download(&stub, "mirror/all-MiniLM-L6-v2", "main", None);
    assert_same_files(minilm.dir(), &snapshot);
    let (pushed, source) = (st_embed(&snapshot), st_embed(minilm.dir()));
    assert_eq!(pushed.len(), 3);
    assert!(pushed == source, "embeddings differ after the round trip");
}

#[test]
fn private_repos_and_new_branches_are_created_and_tags_and_commits_refused() {
    let stub = stub();
    let source = tiny_model();
    let r = push_dir(&stub, &source, "acme/secret", &["--private"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(stub.repo("acme/secret").unwrap().private, "--private creates a private repo");
    let main = printed_commit(&r);
    let (_cache, snapshot) = python_download(&stub, "acme/secret", "main", Some(WRITE));
    assert_same_files(&source, &snapshot);

    // A branch that does not exist is created from main, and committed to.
    let copy = tiny_copy();
    std::fs::write(copy.path().join("README.md"), "# changed on a branch\n").unwrap();
    let r = push_dir(&stub, copy.path(), "acme/secret", &["--revision", "experiment"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("created branch"), "{}", r.stdout);
    let commits = stub.commits();
    assert_eq!(commits.len(), 2);
    assert_eq!(
        (commits[1].branch.as_str(), commits[1].paths.as_slice()),
        ("experiment", ["README.md".to_owned()].as_slice())
    );
    let (_cache, snapshot) = python_download(&stub, "acme/secret", "experiment", Some(WRITE));
    assert_same_files(copy.path(), &snapshot);

    // A tag and a commit id are not branches: refused before anything is sent.
    let mut tagged = StubRepo::new("acme/tagged", &"1".repeat(40), vec![("config.json".into(), b"{}".to_vec())]);
    tagged.tags = vec!["v1.0".to_owned()];
    stub.add_repo(tagged);
    let puts_before = puts(&stub);
    for (revision, kind) in [("v1.0", "tag"), (main.as_str(), "commit")] {
        let repo = if kind == "tag" { "acme/tagged" } else { "acme/secret" };
        let r = push_dir(&stub, &source, repo, &["--revision", revision]);
        assert!(!r.ok, "{revision}: {}", r.stdout);
        assert!(r.stderr.contains(&format!("is a {kind}")) && r.stderr.contains("branch"), "{}", r.stderr);
    }
    assert_eq!(stub.commits().len(), 2, "no commit for a tag or a commit id");
    assert_eq!(puts(&stub), puts_before, "nothing uploaded for a tag or a commit id");
}

#[test]
fn pushing_twice_sends_no_large_file_again() {
    let stub = stub();
    let source = tiny_model();
    let first = push_dir(&stub, &source, "acme/twice", &[]);
    assert!(first.ok, "{}", first.stderr);
    let sent = puts(&stub);
    assert_eq!(sent, 2);
    let second = push_dir(&stub, &source, "acme/twice", &[]);
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(puts(&stub), sent, "no LFS object was uploaded again");
    // Unchanged files are not committed again either (as huggingface_hub skips them).
    assert!(second.stdout.contains("nothing to commit"), "{}", second.stdout);
    assert_eq!(stub.commits().len(), 1);
    assert_eq!(printed_commit(&second), printed_commit(&first));
}

#[test]
fn a_connection_cut_mid_upload_is_retried_with_one_commit() {
    let stub = stub();
    let source = tiny_model();
    stub.faults().drop_upload_after_bytes.store(100_000, Ordering::SeqCst);
    stub.faults().drop_next_uploads.store(1, Ordering::SeqCst);
    let r = push_dir(&stub, &source, "acme/cut", &[]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(stub.commits().len(), 1, "exactly one commit");
    // The small object once, the 4 MB one twice (cut, then whole).
    assert_eq!(puts(&stub), 3, "{:?}", stub.requests());
    assert_stored(&stub, "acme/cut", &source);
}

#[test]
fn multipart_uploads_resend_only_the_part_that_was_cut() {
    let stub = stub();
    let source = tiny_model();
    // 4 049 552 bytes in parts of 1 MB: five parts; the first is cut once.
    stub.faults().multipart_chunk_size.store(1_000_000, Ordering::SeqCst);
    stub.faults().drop_upload_after_bytes.store(100_000, Ordering::SeqCst);
    stub.faults().drop_next_uploads.store(1, Ordering::SeqCst);
    let r = push_dir(&stub, &source, "acme/parts", &[]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(stub.commits().len(), 1);
    // The 2 KB object whole (below the chunk size), five parts, one part again.
    assert_eq!(puts(&stub), 1 + 5 + 1, "{:?}", stub.requests());
    assert_stored(&stub, "acme/parts", &source);
}

#[test]
fn a_lost_commit_reply_does_not_commit_twice() {
    let stub = stub();
    let source = tiny_model();
    stub.faults().fail_next_commits.store(1, Ordering::SeqCst);
    let r = push_dir(&stub, &source, "acme/lost", &[]);
    assert!(r.ok, "{}", r.stderr);
    let commits = stub.commits();
    assert_eq!(commits.len(), 1, "exactly one commit");
    assert_eq!(printed_commit(&r), commits[0].oid, "the commit that landed is reported");
    let posts = stub.requests().iter().filter(|q| q.method == "POST" && q.target.contains("/commit/")).count();
    assert_eq!(posts, 2, "the commit was sent again after the lost reply");
    assert_stored(&stub, "acme/lost", &source);
}

#[test]
fn a_file_that_changes_during_the_upload_is_named_and_nothing_is_committed() {
    let stub = stub();
    let copy = tiny_copy();
    let weights = copy.path().join("model.safetensors");
    let target = weights.clone();
    stub.on_lfs_upload(move |path| {
        if path == "model.safetensors" {
            let mut f = std::fs::OpenOptions::new().append(true).open(&target).unwrap();
            std::io::Write::write_all(&mut f, b"appended mid-upload").unwrap();
        }
    });
    let r = push_dir(&stub, copy.path(), "acme/changing", &[]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(r.stderr.contains(&weights.display().to_string()) && r.stderr.contains("changed"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(stub.commits().is_empty(), "nothing committed");
}

#[test]
fn each_refusal_has_its_own_message() {
    let stub = stub();
    let source = tiny_model();
    let source = source.to_str().unwrap();

    // No token: said before anything is sent.
    let r = push(&stub, None, &[source, "acme/x"]);
    assert!(!r.ok && r.stderr.contains("HF_TOKEN") && r.stderr.contains("no-token-file"), "{}", r.stderr);
    assert!(stub.requests().is_empty(), "a request was sent without a token");

    // An unknown token: 401.
    let r = push(&stub, Some("hf_nobody_knows_this"), &[source, "acme/x"]);
    assert!(!r.ok && r.stderr.contains("401") && r.stderr.contains("refused the token"), "{}", r.stderr);
    assert!(!r.stderr.contains("hf_nobody_knows_this"), "the token is never printed");

    // A read-only token: 403, and the message says to make a write token.
    let r = push(&stub, Some(READ), &[source, "acme/x"]);
    assert!(!r.ok && r.stderr.contains("403") && r.stderr.contains("write access"), "{}", r.stderr);
    assert!(stub.repo("acme/x").is_none() && stub.commits().is_empty(), "nothing created or committed");

    // Names that are not ORG/NAME, and offline mode.
    for target in ["just-a-name", "acme/x@dev"] {
        let r = push(&stub, Some(WRITE), &[source, target]);
        assert!(!r.ok && r.stderr.contains("ORG/NAME"), "{target}: {}", r.stderr);
    }
    let mut cmd = dartboard_online(&stub.endpoint());
    let r = run_within(cmd.env("HF_TOKEN", WRITE).env("HF_HUB_OFFLINE", "1").args(["push", source, "acme/x"]), LIMIT);
    assert!(!r.ok && r.stderr.contains("HF_HUB_OFFLINE"), "{}", r.stderr);

    // A source that is neither a folder nor a cached model.
    let r = push(&stub, Some(WRITE), &["acme/not-cached-anywhere", "acme/x"]);
    assert!(!r.ok && r.stderr.contains("not in the cache"), "{}", r.stderr);

    // A server that is not a Hub.
    stub.faults().not_a_hub.store(true, Ordering::SeqCst);
    let r = push(&stub, Some(WRITE), &[source, "acme/x"]);
    assert!(!r.ok && r.stderr.contains("HF_ENDPOINT"), "{}", r.stderr);
    assert!(stub.commits().is_empty());
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// `ModelHub::push` in this process, failing the test if it has not returned in time.
fn push_lib(
    endpoint: &str,
    token: Option<&str>,
    source: &Path,
    repo: &str,
    options: PushOptions,
) -> Result<Pushed, HubError> {
    let config = HubConfig::default()
        .with_endpoint(endpoint)
        .with_token(token.map(str::to_owned))
        .with_retries(3, std::time::Duration::from_millis(10));
    let (source, repo) = (source.to_str().unwrap().to_owned(), repo.to_owned());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cache = tempfile::tempdir().unwrap();
        let _ = tx.send(ModelHub::new(cache.path(), config).push(&source, &repo, &options, &NoProgress));
    });
    rx.recv_timeout(std::time::Duration::from_secs(LIMIT)).expect("push hung")
}

#[test]
fn the_library_reports_what_it_did_and_typed_errors() {
    let stub = stub();
    let source = tiny_model();
    let endpoint = stub.endpoint();
    let err = push_lib(&endpoint, None, &source, "acme/lib", PushOptions::default()).unwrap_err();
    assert!(matches!(err, HubError::NoToken { .. }), "{err}");
    let err = push_lib(&endpoint, Some("hf_unknown"), &source, "acme/lib", PushOptions::default()).unwrap_err();
    assert!(matches!(err, HubError::TokenRejected { .. }), "{err}");
    let err = push_lib(&endpoint, Some(READ), &source, "acme/lib", PushOptions::default()).unwrap_err();
    assert!(matches!(err, HubError::WriteForbidden { .. }), "{err}");

    let dev = PushOptions { revision: Some("dev".to_owned()), private: true, commit_message: None };
    let pushed = push_lib(&endpoint, Some(WRITE), &source, "acme/lib", dev).unwrap();
    assert_eq!((pushed.repo_id.as_str(), pushed.branch.as_str()), ("acme/lib", "dev"));
    assert!(pushed.created_repo && pushed.created_branch && pushed.committed, "{pushed:?}");
    assert_eq!((pushed.files, pushed.lfs_uploaded, pushed.lfs_present), (files_of(&source).len(), 2, 0));
    assert_eq!(stub.commits().last().unwrap().oid, pushed.commit);
    assert!(stub.commits().last().unwrap().summary.contains("bert_cls_dense"), "the default message names the folder");

    // The same objects to another branch: the server has them, nothing is sent.
    let puts_before = puts(&stub);
    let other = PushOptions { revision: Some("other".to_owned()), ..PushOptions::default() };
    let pushed = push_lib(&endpoint, Some(WRITE), &source, "acme/lib", other).unwrap();
    assert_eq!(puts(&stub), puts_before);
    assert_eq!(pushed.lfs_uploaded, 0, "{pushed:?}");

    let err = push_lib(
        &endpoint,
        Some(WRITE),
        &source,
        "acme/lib",
        PushOptions { revision: Some(pushed.commit.clone()), ..PushOptions::default() },
    )
    .unwrap_err();
    assert!(matches!(err, HubError::NotABranch { kind: "commit", .. }), "{err}");
}

#[test]
fn the_login_token_file_is_used_and_git_and_cache_folders_are_not_pushed() {
    let stub = stub();
    let copy = tiny_copy();
    for (path, text) in
        [(".git/HEAD", "ref: refs/heads/main"), (".cache/huggingface/upload/x.lock", ""), ("1_Pooling/.git/config", "")]
    {
        let path = copy.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    // What `hf auth login` writes, and no HF_TOKEN.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("token"), format!("{WRITE}\n")).unwrap();
    let mut cmd = dartboard_online(&stub.endpoint());
    cmd.env("HF_HOME", home.path()).env_remove("HF_TOKEN").arg("push").arg(copy.path()).arg("acme/from-login");
    let r = run_within(&mut cmd, LIMIT);
    assert!(r.ok, "{}", r.stderr);
    let paths = &stub.commits()[0].paths;
    assert!(paths.iter().all(|p| !p.contains(".git") && !p.contains(".cache")), "{paths:?}");
    assert_eq!(paths.len(), files_of(&tiny_model()).len(), "{paths:?}");
    // Progress on a pipe: one line per large file, no bars.
    assert!(r.stderr.contains("uploading model.safetensors (4049552 bytes)"), "{}", r.stderr);
    assert!(stub.requests().iter().all(|q| q.authorization.as_deref().is_none_or(|a| a == format!("Bearer {WRITE}"))));
}

#[test]
fn help_names_the_arguments() {
    let r = run_within(dartboard_online("http://127.0.0.1:9").args(["push", "--help"]), LIMIT);
    assert!(r.ok, "{}", r.stderr);
    for word in ["SOURCE", "ORG/NAME", "--revision", "--private", "--commit-message", "HF_TOKEN", "HF_ENDPOINT"] {
        assert!(r.stdout.contains(word), "{word} missing from:\n{}", r.stdout);
    }
}

/// The stand-in's `main` holds every file of `source`, byte for byte.
fn assert_stored(stub: &HubStub, repo: &str, source: &Path) {
    let served = stub.repo(repo).unwrap_or_else(|| panic!("{repo} was not created"));
    for (name, bytes) in files_of(source) {
        let file = served.files.iter().find(|f| f.path == name).unwrap_or_else(|| panic!("{name} missing in {repo}"));
        assert!(*file.bytes == bytes, "{name} differs in {repo}");
    }
}
