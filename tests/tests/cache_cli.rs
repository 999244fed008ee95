//! `dartboard cache ...` on caches and directories made to go wrong: directory links
//! and loops, FIFOs and devices where files belong, names that are not names, one
//! revision among several, a folder named like the model, and the modes of what is
//! written. Every command here must end, with a message that names what is wrong.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use dartboard_tests::{dartboard, run_within, Run};

/// A directory with what `cache import` checks for; the weights are `weights`.
fn fake_model(dir: &Path, weights: &[u8]) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    std::fs::write(dir.join("1_Pooling/config.json"), r#"{"pooling_mode_mean_tokens": true}"#).unwrap();
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// `dartboard` on a cache of its own (and no Hugging Face cache).
fn cmd(cache: &Path) -> Command {
    let mut c = dartboard();
    c.env("SENTENCE_TRANSFORMERS_HOME", cache).env("HF_HOME", cache.join("hf"));
    c
}

fn dartboard_in(cache: &Path, args: &[&str]) -> Run {
    run_within(cmd(cache).args(args), 60)
}

fn import(cache: &Path, dir: &Path, name: &str) -> Run {
    run_within(cmd(cache).args(["cache", "import"]).arg(dir).args(["--as", name]), 60)
}

/// The commit `cache import` printed: `imported DIR as ORG/NAME@COMMIT ...`.
fn imported_commit(r: &Run) -> String {
    assert!(r.ok, "{}", r.stderr);
    let after = r.stdout.split('@').nth(1).unwrap_or_else(|| panic!("{}", r.stdout));
    after[..40].to_owned()
}

#[test]
fn rm_of_one_revision_keeps_the_others() {
    let cache = tempfile::tempdir().unwrap();
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fake_model(old.path(), b"old weights");
    fake_model(new.path(), b"new weights, longer");
    let old_commit = imported_commit(&import(cache.path(), old.path(), "acme/m@v1"));
    let new_commit = imported_commit(&import(cache.path(), new.path(), "acme/m"));
    let repo = cache.path().join("models--acme--m");
    assert_eq!(std::fs::read_to_string(repo.join("refs/v1")).unwrap(), old_commit);

    // A revision that is not cached: an error naming those that are; nothing goes.
    let r = dartboard_in(cache.path(), &["cache", "rm", "acme/m@v9"]);
    assert!(!r.ok, "{}", r.stdout);
    for needle in ["v9", &old_commit, &new_commit, "main", "v1"] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    assert!(repo.join("snapshots").join(&old_commit).is_dir() && repo.join("snapshots").join(&new_commit).is_dir());

    let r = dartboard_in(cache.path(), &["cache", "rm", "acme/m@v1"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("acme/m@{old_commit}")) && r.stdout.contains("v1"), "{}", r.stdout);
    assert!(!repo.join("snapshots").join(&old_commit).exists() && !repo.join("refs/v1").exists());
    let list = dartboard_in(cache.path(), &["cache", "list"]);
    assert!(list.stdout.contains(&new_commit) && !list.stdout.contains(&old_commit), "{}", list.stdout);
    // What the other revision uses is still there (shared blobs included).
    assert!(dartboard_in(cache.path(), &["cache", "verify", "acme/m"]).ok);
    let snapshot = repo.join("snapshots").join(&new_commit);
    assert_eq!(std::fs::read(snapshot.join("model.safetensors")).unwrap(), b"new weights, longer");
    assert_eq!(std::fs::read(snapshot.join("tokenizer.json")).unwrap(), b"{}");

    // Without @, the whole model.
    let r = dartboard_in(cache.path(), &["cache", "rm", "acme/m"]);
    assert!(r.ok && !repo.exists(), "{}", r.stderr);
}

#[test]
fn rm_takes_a_hub_name_even_where_a_directory_has_that_name() {
    let cache = tempfile::tempdir().unwrap();
    let model = tempfile::tempdir().unwrap();
    fake_model(model.path(), b"weights");
    assert!(import(cache.path(), model.path(), "acme/m").ok);
    // The current directory holds a folder named like the model.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join("acme/m")).unwrap();
    let r = run_within(cmd(cache.path()).current_dir(cwd.path()).args(["cache", "rm", "acme/m"]), 60);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("removed acme/m"), "{}", r.stdout);
    assert!(!cache.path().join("models--acme--m").exists());
    assert!(cwd.path().join("acme/m").is_dir(), "the local folder is not touched");
}

#[test]
fn import_writes_files_under_the_umask() {
    let cache = tempfile::tempdir().unwrap();
    let model = tempfile::tempdir().unwrap();
    fake_model(model.path(), b"weights");
    // The umask of the child only: `sh` sets it, then becomes dartboard.
    let bin = dartboard_tests::dartboard_bin();
    let env = cmd(cache.path());
    let mut c = Command::new("sh");
    c.args(["-c", "umask 022 && exec \"$0\" \"$@\""]).arg(bin).args(["cache", "import"]).arg(model.path());
    c.args(["--as", "acme/m"]);
    for (key, value) in env.get_envs() {
        match value {
            Some(value) => c.env(key, value),
            None => c.env_remove(key),
        };
    }
    let r = run_within(&mut c, 60);
    assert!(r.ok, "{}", r.stderr);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let repo = cache.path().join("models--acme--m");
    assert_eq!(mode(&repo.join("refs/main")), 0o644);
    let blobs: Vec<_> = std::fs::read_dir(repo.join("blobs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(blobs.len(), 4);
    for blob in blobs {
        assert_eq!(mode(&blob), 0o644, "{}", blob.display());
    }
    for dir in [repo.join("blobs"), repo.join("snapshots"), repo.join("refs")] {
        assert_eq!(mode(&dir), 0o755, "{}", dir.display());
    }
}

#[test]
fn import_refuses_directory_links_special_files_and_bad_names() {
    let cache = tempfile::tempdir().unwrap();

    // A loop (it used to run until killed) and a link to a directory elsewhere.
    for (name, target) in [("self", Path::new(".").to_path_buf()), ("outside", std::env::temp_dir())] {
        let model = tempfile::tempdir().unwrap();
        fake_model(model.path(), b"weights");
        std::os::unix::fs::symlink(&target, model.path().join(name)).unwrap();
        let r = import(cache.path(), model.path(), "acme/m");
        assert!(!r.ok && r.stderr.contains(name) && r.stderr.contains("link to a directory"), "{}", r.stderr);
    }
    // A FIFO and a link to a device: named, not silently dropped.
    for (name, make) in [
        ("pipe", &(|p: &Path| mkfifo(p)) as &dyn Fn(&Path)),
        ("zero", &|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
    ] {
        let model = tempfile::tempdir().unwrap();
        fake_model(model.path(), b"weights");
        make(&model.path().join(name));
        let r = import(cache.path(), model.path(), "acme/m");
        assert!(!r.ok && r.stderr.contains(name) && r.stderr.contains("not a regular file"), "{}", r.stderr);
    }
    assert!(!cache.path().join("models--acme--m/refs").exists(), "nothing was imported");

    // A name that is not one is reported as such, whatever the directory.
    let r = import(cache.path(), Path::new("/no/such/dir"), "../../evil");
    assert!(!r.ok && r.stderr.contains("invalid model reference"), "{}", r.stderr);
    assert!(!r.stderr.contains("does not exist"), "{}", r.stderr);

    // ORG/NAME@REF imports as that ref; ORG/NAME@<commit> as that commit, no ref moved.
    let model = tempfile::tempdir().unwrap();
    fake_model(model.path(), b"weights");
    let commit = imported_commit(&import(cache.path(), model.path(), "acme/m@v2"));
    let repo = cache.path().join("models--acme--m");
    assert_eq!(std::fs::read_to_string(repo.join("refs/v2")).unwrap(), commit);
    assert!(!repo.join("refs/main").exists());
    let pinned = "0123456789abcdef0123456789abcdef01234567";
    let r = import(cache.path(), model.path(), &format!("acme/m@{pinned}"));
    assert_eq!(imported_commit(&r), pinned);
    assert!(repo.join("snapshots").join(pinned).is_dir() && !repo.join("refs/main").exists());
    let r = run_within(
        cmd(cache.path()).args(["cache", "import"]).arg(model.path()).args([
            "--as",
            &format!("acme/m@{pinned}"),
            "--revision",
            "1111111111111111111111111111111111111111",
        ]),
        60,
    );
    assert!(!r.ok && r.stderr.contains("two different commits"), "{}", r.stderr);
}

#[test]
fn special_files_in_the_cache_never_hang_a_command() {
    let cache = tempfile::tempdir().unwrap();
    let model = tempfile::tempdir().unwrap();
    fake_model(model.path(), b"weights");
    let commit = imported_commit(&import(cache.path(), model.path(), "acme/m"));
    let repo = cache.path().join("models--acme--m");
    let main = repo.join("refs/main");
    std::fs::remove_file(&main).unwrap();
    mkfifo(&main);
    let entry = repo.join("snapshots").join(&commit).join("model.safetensors");
    let blob = std::fs::canonicalize(&entry).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();

    assert!(dartboard_in(cache.path(), &["cache", "list"]).stdout.contains(&commit));
    assert!(dartboard_in(cache.path(), &["cache", "size"]).ok);
    let r = dartboard_in(cache.path(), &["cache", "verify"]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(r.stdout.contains(&main.display().to_string()) && r.stdout.contains("FIFO"), "{}", r.stdout);
    assert!(r.stdout.contains(&blob.display().to_string()) && r.stdout.contains("character device"), "{}", r.stdout);
    // Loading the model by name: the ref is named, not waited on.
    let r = dartboard_in(cache.path(), &["embed", "--model", "acme/m", "x"]);
    assert!(!r.ok && r.stderr.contains(&main.display().to_string()) && r.stderr.contains("FIFO"), "{}", r.stderr);
}

#[test]
fn an_io_error_prints_the_os_text_once() {
    // The cache root lies under a regular file: its directories cannot be made.
    let file = tempfile::NamedTempFile::new().unwrap();
    let model = tempfile::tempdir().unwrap();
    fake_model(model.path(), b"weights");
    let r = import(&file.path().join("cache"), model.path(), "acme/m");
    assert!(!r.ok, "{}", r.stdout);
    assert_eq!(r.stderr.matches("Not a directory").count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains(&file.path().display().to_string()), "{}", r.stderr);
}
