//! The crate's one unsafe/FFI perimeter: everything that calls into C++ or the C
//! library, and everything that knows which device or CPU it runs on.
//!
//! - `shim`: the calling convention of our C++ shims (`cpp/`), and the only place a
//!   raw tensor pointer becomes a `tch::Tensor`;
//! - `onednn`: libtorch's oneDNN linear with fused epilogues (`cpp/onednn_linear.cpp`);
//! - `kernels`: our AVX-512 attention and LayerNorm (`cpp/attention.cpp`,
//!   `cpp/layer_norm.cpp`);
//! - `device`: CPU/CUDA selection and loading libtorch's CUDA backend;
//! - `allocator`: how the C allocator keeps memory between forward passes.
//!
//! Invariant: no `unsafe` outside this module (the tidy test checks it), and nothing
//! here knows about layers or architectures; `layers/` calls in, never the reverse.

pub(crate) mod allocator;
pub(crate) mod device;
pub(crate) mod kernels;
pub(crate) mod onednn;
mod shim;

/// Creates a FIFO at `path`: tests check that model files which are not regular
/// files are refused rather than read (a FIFO would block forever).
#[cfg(test)]
pub(crate) fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().expect("a UTF-8 test path")).expect("no NUL in a test path");
    // SAFETY: a valid C string; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}
