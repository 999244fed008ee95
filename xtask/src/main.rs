//! Project tooling, in plain Rust so it runs on a machine with nothing but the
//! toolchain (it never links libtorch).
//!
//! - `cargo xtask setup [--cuda]`: a Python venv with libtorch 2.13.0 (without its CUDA
//!   packages unless `--cuda`), the `.libtorch` link the build uses, and the default
//!   model in the cache.
//! - `cargo xtask test`: setup, the Python reference stack (sentence-transformers,
//!   installed the first time), reference outputs from it, then every test in the
//!   workspace.
//! - `cargo xtask demo`: setup, a release build, `dartboard demo`.
//! - `cargo xtask prefetch MODEL... [--revision REV]`: download models into the cache
//!   (for Docker builds; needs no libtorch and builds no model code).
//! - `cargo xtask bench [--quick] [--corpus | --shapes [--shape NAME] | --serve | --python]`: dartboard vs
//!   sentence-transformers on this machine; writes `target/bench/*.json` and the
//!   tables in `docs/benchmarks.md` (`--shapes`: random-weight Qwen3-Embedding-0.6B
//!   and ModernBERT-base shapes instead of all-MiniLM-L6-v2; `--serve`: `dartboard
//!   serve` against infinity-emb under concurrent clients; `--python`: the wheel's
//!   `dartboard.Embedder` against sentence-transformers in one process, and the Ray
//!   job, into `docs/scale-out.md`).
//! - `cargo xtask wheel [--install]`: the `dartboard` Python wheel into
//!   `target/wheels/` (`--install`: into the venv too); `test` builds and installs it.

mod bench;
mod setup;
mod tidy;
mod wheel;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str =
    "usage: cargo xtask <setup [--cuda] | test [CARGO TEST ARGS...] | demo | prefetch MODEL... [--revision REV] | bench [--quick] [--corpus | --shapes [--shape NAME] | --serve | --python] | wheel [--install]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::command(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("prefetch") => prefetch(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("wheel") => wheel::command(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(anyhow::anyhow!("{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// Where the test and benchmark data lives: `DARTBOARD_DATA_DIR`, else the
/// repository's own `data/`.
fn data_dir() -> PathBuf {
    std::env::var_os("DARTBOARD_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("data"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    let env = setup::run()?;
    setup::reference_stack(&env)?;
    let sts_dev = data_dir().join("stsbenchmark/sts-dev.csv");
    if !sts_dev.is_file() {
        bail!(
            "STS Benchmark dev split not found at {}; restore data/ from git or set DARTBOARD_DATA_DIR to a copy of it",
            sts_dev.display()
        );
    }
    setup::reference_outputs(&env, &sts_dev)?;
    // The CLI tests run the real binary, so build it first.
    run(cargo().args(["build", "--package", "dartboard-cli"]))?;
    // tests/tests/python_wheel.rs runs the Python package's tests against the wheel
    // installed in the venv.
    let wheel = wheel::build(&env)?;
    wheel::install(&env, &wheel)?;
    run(cargo()
        .args(["test", "--workspace"])
        .args(extra)
        .env("DARTBOARD_DATA_DIR", data_dir())
        .env("DARTBOARD_VENV_PYTHON", &env.python))
}

fn demo() -> Result<()> {
    setup::run()?;
    run(cargo().args(["build", "--release", "--package", "dartboard-cli"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    run(Command::new(target.join("release/dartboard")).arg("demo"))
}

fn prefetch(args: &[String]) -> Result<()> {
    let mut models = Vec::new();
    let mut revision = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--revision" => revision = Some(rest.next().context("--revision needs a value")?.clone()),
            other if other.starts_with('-') => bail!("unknown option {other}\n{USAGE}"),
            model => models.push(model.to_owned()),
        }
    }
    if models.is_empty() {
        bail!("name at least one model\n{USAGE}");
    }
    let config = dartboard_config::EmbeddingConfig::load(&dartboard_config::Overrides::default())?;
    let hub = dartboard_hub::ModelHub::from_env(&config.cache_dir);
    let progress = dartboard_hub::progress::ConsoleProgress::new();
    for model in &models {
        let parsed = dartboard_hub::ModelRef::parse_with_revision(model, revision.as_deref())?;
        let files = hub.prefetch(&parsed, &progress).with_context(|| format!("cannot prefetch {parsed}"))?;
        println!("{parsed} {} -> {}", files.revision().unwrap_or("?"), files.dir().display());
    }
    Ok(())
}
