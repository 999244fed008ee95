//! From the user's spelling of a device and precision to tch's.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dartboard_config::{DType, DeviceSpec};
use tch::{Device, Kind};

use crate::error::EmbedError;

/// The libtorch `lib/` directory this crate was linked against (and finds at run
/// time through the rpath).
pub const LIBTORCH_LIB_DIR: &str = env!("DARTBOARD_LIBTORCH_LIB");

/// Resolves a device spec against what this libtorch can see.
///
/// `auto` quietly falls back to the CPU; an explicit `cuda` that cannot be used is an
/// error, because silently running a GPU deployment on the CPU is the failure users
/// notice last.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device, EmbedError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto if cuda_available() => Ok(Device::Cuda(0)),
        DeviceSpec::Auto => Ok(Device::Cpu),
        DeviceSpec::Cuda(index) => {
            let backend = load_cuda_backend();
            let count = if backend.is_ok() && tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
            if (index as i64) < count {
                return Ok(Device::Cuda(index));
            }
            let reason = match backend {
                Err(why) => explain_backend_error(&why),
                Ok(()) => format!(
                    "this libtorch sees {count} CUDA device(s); use --device cpu (EMBEDDING_DEVICE=cpu) or auto, \
                     or check the NVIDIA driver"
                ),
            };
            Err(EmbedError::DeviceUnavailable { device: spec.to_string(), reason })
        }
    }
}

/// Why `libtorch_cuda.so` did not load, and what to do about it. `cargo xtask setup`
/// installs libtorch without the CUDA libraries (cuBLAS, cuDNN, ...) that
/// `libtorch_cuda.so` needs, so a missing shared object is the common case, and
/// its fix is one command.
fn explain_backend_error(why: &str) -> String {
    if why.contains("cannot open shared object file") {
        format!(
            "libtorch's CUDA backend could not be loaded because the CUDA libraries are not installed ({why}); \
             run `cargo xtask setup --cuda` to install them (with the Python wheel: `pip install torch==2.13.0` \
             with its CUDA packages), or use --device cpu (EMBEDDING_DEVICE=cpu) or auto"
        )
    } else {
        format!(
            "libtorch's CUDA backend could not be loaded ({why}); use --device cpu (EMBEDDING_DEVICE=cpu) or auto, \
             or check the NVIDIA driver"
        )
    }
}

/// Whether a CUDA device can be used (loading libtorch's CUDA backend if needed).
pub fn cuda_available() -> bool {
    load_cuda_backend().is_ok() && tch::Cuda::is_available()
}

/// Loads `libtorch_cuda.so` once, globally, so its kernels register with libtorch.
/// It is not linked at build time (see `dartboard-build`): CPU-only processes start
/// faster and smaller without it.
fn load_cuda_backend() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // Beside the libtorch this process runs on: from the Python wheel that is the
            // user's installed torch, not the one the wheel was built against.
            let dirs: Vec<PathBuf> =
                loaded_libtorch_dir().into_iter().chain([PathBuf::from(LIBTORCH_LIB_DIR)]).collect();
            let Some(path) = dirs.iter().map(|d| d.join("libtorch_cuda.so")).find(|p| p.is_file()) else {
                let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                return Err(format!("libtorch_cuda.so is not in {}: this libtorch is CPU-only", looked.join(" or ")));
            };
            let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
            // SAFETY: loading libtorch's own CUDA library runs its static
            // initialisers, which only register kernels with the libtorch already
            // loaded in this process; the handle is kept for the process's lifetime.
            match unsafe { libloading::os::unix::Library::open(Some(&path), flags) } {
                Ok(library) => {
                    std::mem::forget(library);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .clone()
}

/// The `lib/` directory of the `libtorch_cpu.so` this process has loaded, read from
/// `/proc/self/maps`. It differs from [`LIBTORCH_LIB_DIR`] when the binary was moved
/// to another libtorch: the Python wheel finds the user's torch through its RUNPATH,
/// a container image copies the libraries elsewhere.
fn loaded_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| path.file_name().is_some_and(|name| name == "libtorch_cpu.so"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// tch's tensor kind for a compute precision.
pub fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F32 => Kind::Float,
        DType::Bf16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
    }
}

/// Human spelling of a tch device: `cpu`, `cuda:0`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
        _ => "cpu".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cuda_backend_is_looked_for_beside_the_loaded_libtorch() {
        // Something from libtorch runs first, so it is certainly mapped.
        let _ = tch::Tensor::from_slice(&[1.0f32]).sum(tch::Kind::Float);
        let dir = loaded_libtorch_dir().expect("libtorch_cpu.so is mapped into a test process");
        assert!(dir.join("libtorch_cpu.so").is_file(), "{}", dir.display());
        // Here the binary runs on the libtorch it was built against.
        let same = |p: &Path| p.canonicalize().ok();
        assert_eq!(same(&dir), same(Path::new(LIBTORCH_LIB_DIR)));
    }

    #[test]
    fn a_missing_cuda_library_names_the_setup_step() {
        let why = "libcublas.so.13: cannot open shared object file: No such file or directory";
        let message = explain_backend_error(why);
        assert!(message.contains("cargo xtask setup --cuda") && message.contains("libcublas.so.13"), "{message}");
        let other = explain_backend_error("undefined symbol: foo");
        assert!(!other.contains("setup --cuda") && other.contains("--device cpu"), "{other}");
    }
}
