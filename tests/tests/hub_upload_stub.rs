//! The Hub stand-in's upload endpoints against the official Python client: if
//! `huggingface_hub`'s own `upload_folder` (HTTP path, `HF_HUB_DISABLE_XET=1`) can create
//! a repo, upload regular and LFS files (basic and multipart transfer) and commit, and
//! its `snapshot_download` reads the same bytes back, the stand-in speaks the Hub's
//! upload protocol, and tests of our own client against it mean something.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dartboard_hub_stub::HubStub;
use dartboard_tests::{venv_python, Run};

const WRITE: &str = "hf_write_token";
const READ: &str = "hf_read_token";
/// How long one Python run may take (imports included) before the test fails.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);

/// Kills the child if the test ends (or panics) before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` in the reference venv against `stub`, with a private `HF_HOME` (no
/// token file of the developer's), no `HF_*` variable of the caller, no proxy, and a
/// hard timeout.
fn python(stub: &HubStub, script: &str, args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(venv_python());
    for (key, _) in std::env::vars() {
        if key.starts_with("HF_") || key.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("-c")
        .arg(script)
        .args(args)
        .env("HF_ENDPOINT", stub.endpoint())
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("the venv python starts"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.0.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.0.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + PYTHON_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            drop(child);
            panic!("python ran over {PYTHON_TIMEOUT:?}; stderr:\n{}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        ok: status.success(),
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The last stdout line, as JSON.
fn result(run: &Run) -> serde_json::Value {
    assert!(run.ok, "python failed ({:?}):\n{}", run.code, run.stderr);
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}\nstderr:\n{}", run.stderr))
}

/// A sentence-transformers-like folder: a regular file, an LFS file of a few hundred
/// KiB (five 64 KiB parts) and a nested file.
fn model_files() -> Vec<(&'static str, Vec<u8>)> {
    let weights: Vec<u8> = (0..300 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    vec![
        ("config.json", br#"{"model_type": "bert", "hidden_size": 8}"#.to_vec()),
        ("model.safetensors", weights),
        ("1_Pooling/config.json", br#"{"pooling_mode_mean_tokens": true}"#.to_vec()),
    ]
}

fn write_folder(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (path, bytes) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

const UPLOAD: &str = r#"
import json, sys
from huggingface_hub import HfApi, snapshot_download
endpoint, token, repo, folder, cache, private = sys.argv[1:7]
api = HfApi(endpoint=endpoint, token=token)
url = api.create_repo(repo, private=private == "1")
first = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="Upload the tiny model")
# Unchanged files: the client asks, learns the Hub has them, and commits nothing.
again = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="Nothing changed")
snapshot = snapshot_download(repo, cache_dir=cache + "/with-token", token=token)
try:
    snapshot_download(repo, cache_dir=cache + "/anonymous", token=False)
    anonymous = "read"
except Exception as e:
    anonymous = type(e).__name__
print(json.dumps({"url": str(url), "oid": first.oid, "again": again.oid, "snapshot": snapshot, "anonymous": anonymous}))
"#;

fn upload_folder_and_read_back(multipart: bool, private: bool) {
    let stub = HubStub::start(Vec::new());
    stub.add_token(WRITE, true);
    if multipart {
        stub.faults().multipart_chunk_size.store(64 * 1024, Ordering::SeqCst);
    }
    let files = model_files();
    let folder = tempfile::tempdir().unwrap();
    write_folder(folder.path(), &files);
    let cache = tempfile::tempdir().unwrap();
    let private_arg = if private { "1" } else { "0" };
    let out = result(&python(
        &stub,
        UPLOAD,
        &[
            &stub.endpoint(),
            WRITE,
            "org/pushed",
            folder.path().to_str().unwrap(),
            cache.path().to_str().unwrap(),
            private_arg,
        ],
    ));

    // Read back byte-identical by the official client.
    let snapshot = Path::new(out["snapshot"].as_str().unwrap());
    for (path, bytes) in &files {
        assert_eq!(&std::fs::read(snapshot.join(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(out["url"], format!("{}/org/pushed", stub.endpoint()));
    let anonymous = out["anonymous"].as_str().unwrap();
    if private {
        assert_eq!(anonymous, "RepositoryNotFoundError", "an anonymous client must not see a private repo");
    } else {
        assert_eq!(anonymous, "read");
    }

    // Exactly one commit, with exactly those paths; the second upload committed nothing.
    let commits = stub.commits();
    assert_eq!(commits.len(), 1, "{commits:?}");
    let commit = &commits[0];
    assert_eq!((commit.repo.as_str(), commit.branch.as_str()), ("org/pushed", "main"));
    assert_eq!(commit.summary, "Upload the tiny model");
    assert_eq!(out["oid"], commit.oid.as_str());
    assert_eq!(out["again"], commit.oid.as_str());
    let mut paths = commit.paths.clone();
    paths.sort();
    let mut expected: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
    expected.sort();
    assert_eq!(paths, expected);

    // Served as the Hub would: the weights in LFS, the JSON files in git, the Hub's own
    // `.gitattributes` from the repo's first commit.
    let repo = stub.repo("org/pushed").unwrap();
    assert_eq!(repo.private, private);
    assert_eq!(repo.commit, commit.oid);
    let lfs: Vec<(&str, bool)> = repo.files.iter().map(|f| (f.path.as_str(), f.lfs)).collect();
    for wanted in [("config.json", false), ("model.safetensors", true), ("1_Pooling/config.json", false)] {
        assert!(lfs.contains(&wanted), "{wanted:?} in {lfs:?}");
    }
    assert!(lfs.contains(&(".gitattributes", false)), "{lfs:?}");

    // The transfer the batch API offered was the one used; the second upload sent no
    // object (the batch said the repo has it); object URLs got no token.
    let requests = stub.requests();
    let puts: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    let completions = requests.iter().filter(|r| r.method == "POST" && r.target.starts_with("/lfs-complete/")).count();
    if multipart {
        assert_eq!(puts.len(), 5, "{puts:?}");
        for (n, put) in puts.iter().enumerate() {
            assert!(put.target.ends_with(&format!("?partNumber={}", n + 1)), "{puts:?}");
        }
        assert_eq!(completions, 1);
    } else {
        assert_eq!(puts.len(), 1, "{puts:?}");
        assert!(!puts[0].target.contains('?'), "{puts:?}");
        assert_eq!(completions, 0);
    }
    assert!(puts.iter().all(|p| p.authorization.is_none()), "{puts:?}");
    let verifies = requests.iter().filter(|r| r.target.ends_with("/info/lfs/objects/verify")).count();
    assert_eq!(verifies, 1);
    assert_eq!(requests.iter().filter(|r| r.target.ends_with("/info/lfs/objects/batch")).count(), 2);
}

#[test]
fn python_upload_folder_basic_transfer_reads_back_identical() {
    upload_folder_and_read_back(false, false);
}

#[test]
fn python_upload_folder_multipart_into_a_private_repo_reads_back_identical() {
    upload_folder_and_read_back(true, true);
}

const ERRORS: &str = r#"
import json, sys
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
endpoint, write, read, folder = sys.argv[1:5]
def status(call):
    try:
        call()
        return 200
    except HfHubHTTPError as e:
        return e.response.status_code
writer, reader, anonymous = (HfApi(endpoint=endpoint, token=t) for t in (write, read, False))
out = {
    "create_read": status(lambda: reader.create_repo("org/by-reader")),
    "create_anonymous": status(lambda: anonymous.create_repo("org/by-nobody")),
    "create": status(lambda: writer.create_repo("org/target")),
    "create_again": status(lambda: writer.create_repo("org/target")),
    "create_again_exist_ok": status(lambda: writer.create_repo("org/target", exist_ok=True)),
    "upload_read": status(lambda: reader.upload_folder(repo_id="org/target", folder_path=folder)),
    "upload_anonymous": status(lambda: anonymous.upload_folder(repo_id="org/target", folder_path=folder)),
    "upload_unknown_token": status(lambda: HfApi(endpoint=endpoint, token="hf_nobody").upload_folder(repo_id="org/target", folder_path=folder)),
    "upload_missing_branch": status(lambda: writer.upload_folder(repo_id="org/target", folder_path=folder, revision="nope")),
}
print(json.dumps(out))
"#;

#[test]
fn python_client_gets_the_hubs_errors() {
    let stub = HubStub::start(Vec::new());
    stub.add_token(WRITE, true);
    stub.add_token(READ, false);
    let folder = tempfile::tempdir().unwrap();
    write_folder(folder.path(), &model_files());
    let out = result(&python(&stub, ERRORS, &[&stub.endpoint(), WRITE, READ, folder.path().to_str().unwrap()]));
    let expected = serde_json::json!({
        "create_read": 403,
        "create_anonymous": 401,
        "create": 200,
        "create_again": 409,
        "create_again_exist_ok": 200,
        "upload_read": 403,
        "upload_anonymous": 401,
        "upload_unknown_token": 401,
        "upload_missing_branch": 404,
    });
    assert_eq!(out, expected);
    // Nothing was written by the refused calls.
    assert!(stub.commits().is_empty(), "{:?}", stub.commits());
    assert!(stub.repo("org/by-reader").is_none() && stub.repo("org/by-nobody").is_none());
    assert!(stub.requests().iter().all(|r| r.method != "PUT"));
}
