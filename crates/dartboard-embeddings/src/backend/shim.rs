//! The calling convention of the C++ shims in `cpp/` (libtorch operators tch has no
//! binding for, and our CPU attention kernel): a shim takes borrowed `at::Tensor*`
//! arguments, stores a new `at::Tensor*` in its out-parameter and returns null, or
//! returns a `malloc`'d message after catching every C++ exception.

use std::ffi::{c_char, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::EmbedError;

/// Runs `call` with an out-parameter and turns what it reports into a tensor or an
/// error; `what` names the operation in the error when no tensor comes back.
///
/// # Safety
/// `call` must follow the convention above: on a null return it has stored a
/// valid, owned tensor pointer (or left null); on a non-null return, the pointer is
/// a NUL-terminated string allocated with `malloc`.
pub(crate) unsafe fn tensor_result(
    what: &str,
    call: impl FnOnce(*mut *mut C_tensor) -> *mut c_char,
) -> Result<Tensor, EmbedError> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let error = call(&mut out);
    if !error.is_null() {
        // SAFETY: a NUL-terminated string the shim allocated with malloc (caller's contract).
        let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
        unsafe { libc::free(error.cast()) };
        return Err(EmbedError::Torch(tch::TchError::Torch(format!("{what}: {message}"))));
    }
    if out.is_null() {
        return Err(EmbedError::Torch(tch::TchError::Torch(format!("{what} returned no tensor"))));
    }
    // SAFETY: non-null, and owned by us from here on (caller's contract).
    Ok(unsafe { Tensor::from_ptr(out) })
}
