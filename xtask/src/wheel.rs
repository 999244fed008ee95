//! `cargo xtask wheel [--install]`: the `dartboard` Python wheel
//! (`crates/dartboard-py`), built by maturin into `target/wheels/`.
//!
//! maturin comes from `xtask/python/requirements-py.txt`, installed into the venv
//! `setup` made (with pytest and Ray Data, which the wheel's tests use), so the build
//! links the same libtorch 2.13.0 as everything else. `--install` also installs the
//! wheel into that venv, beside the torch it links (what `cargo xtask test` does
//! before running `tests/tests/python_wheel.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::{self, SetupEnv};
use crate::{root, run};

/// `cargo xtask wheel [--install]`.
pub fn command(args: &[String]) -> Result<()> {
    let install_too = match args {
        [] => false,
        [flag] if flag == "--install" => true,
        _ => bail!("usage: cargo xtask wheel [--install]"),
    };
    let env = setup::run()?;
    let wheel = build(&env)?;
    if install_too {
        install(&env, &wheel)?;
    }
    println!("{}", wheel.display());
    Ok(())
}

/// The Python packages the wheel's build and tests need, once per venv: on top of
/// the reference stack, whose pins they were checked not to move.
pub fn python_tools(env: &SetupEnv) -> Result<()> {
    setup::reference_stack(env)?;
    setup::pip_install(&env.venv, "requirements-py.txt", "py", &[], "maturin, pytest and Ray Data (~250 MB, once)")
}

/// Builds the wheel (release) and returns its path.
pub fn build(env: &SetupEnv) -> Result<PathBuf> {
    python_tools(env)?;
    let out = target_dir().join("wheels");
    // Only this build's wheel is left there, so "the wheel" is never ambiguous.
    if out.is_dir() {
        for old in wheels_in(&out)? {
            fs::remove_file(&old).with_context(|| format!("removing the old wheel {}", old.display()))?;
        }
    }
    run(Command::new(env.venv.join("bin/maturin"))
        .current_dir(root())
        .args(["build", "--release", "--manifest-path", "crates/dartboard-py/Cargo.toml", "--interpreter"])
        .arg(&env.python)
        .arg("--out")
        .arg(&out))
    .context("building the dartboard wheel with maturin")?;
    match wheels_in(&out)?.as_slice() {
        [wheel] => Ok(wheel.clone()),
        found => bail!("maturin left {} wheels in {}, expected one", found.len(), out.display()),
    }
}

/// Installs `wheel` into the venv (its dependencies, torch 2.13.0 and numpy, are
/// already there from the reference stack, so nothing else changes).
pub fn install(env: &SetupEnv, wheel: &Path) -> Result<()> {
    run(Command::new(&env.python)
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-deps", "--force-reinstall"])
        .arg(wheel))
    .with_context(|| format!("installing {} into {}", wheel.display(), env.venv.display()))
}

fn wheels_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("dartboard-") && n.ends_with(".whl"))
        })
        .collect();
    wheels.sort();
    Ok(wheels)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}
