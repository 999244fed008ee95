//! Our own CPU kernels (`cpp/attention.cpp`, `cpp/layer_norm.cpp`): AVX-512 code
//! for the two steps of a transformer layer where libtorch's CPU operators are far
//! from this hardware's limit on embedding-sized batches. Each file says why, with
//! the measurements; callers check [`available`] and fall back to aten.

use tch::{Device, Tensor};

use crate::error::EmbedError;

/// Whether the kernels run here: built for x86-64 (not with MSVC), on a CPU with
/// AVX-512 F, BW and VL.
pub(crate) fn available() -> bool {
    ffi::available()
}

/// Whether `xs` is a tensor the kernels take: on the CPU, with [`available`].
pub(crate) fn supports(xs: &Tensor) -> bool {
    xs.device() == Device::Cpu && available()
}

/// `softmax(q kᵀ / √d + key_bias + head_bias) v` over fused projections `qkv`
/// `[B, T, 3·hidden]` split into `heads` heads; `key_bias` is `[B, T]` f32 (0, or
/// the lowest f32 for padding), `head_bias` `[heads, T, T]` f32, or
/// `[T, T]` shared by every head. Returns
/// `[B, T, hidden]` in `qkv`'s precision.
pub(crate) fn attention(
    qkv: &Tensor,
    key_bias: &Tensor,
    head_bias: Option<&Tensor>,
    heads: i64,
) -> Result<Tensor, EmbedError> {
    ffi::attention(qkv, key_bias, head_bias, heads)
}

/// Layer normalization of `xs` over its last dimension, with `weight` and `bias`
/// in `xs`'s precision.
pub(crate) fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor, EmbedError> {
    ffi::layer_norm(xs, weight, bias, eps)
}

#[cfg(all(target_arch = "x86_64", not(target_env = "msvc")))]
mod ffi {
    use std::ffi::c_char;
    use std::sync::OnceLock;

    use tch::Tensor;
    use torch_sys::C_tensor;

    use super::super::shim::tensor_result;
    use crate::error::EmbedError;

    extern "C" {
        fn dartboard_cpu_kernels_supported() -> bool;
        fn dartboard_attention(
            qkv: *const C_tensor,
            key_bias: *const C_tensor,
            head_bias: *const C_tensor,
            heads: i64,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        fn dartboard_layer_norm(
            x: *const C_tensor,
            weight: *const C_tensor,
            bias: *const C_tensor,
            eps: f64,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
    }

    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        // SAFETY: a pure query of the CPU's features.
        *AVAILABLE.get_or_init(|| unsafe { dartboard_cpu_kernels_supported() })
    }

    pub(super) fn attention(
        qkv: &Tensor,
        key_bias: &Tensor,
        head_bias: Option<&Tensor>,
        heads: i64,
    ) -> Result<Tensor, EmbedError> {
        // SAFETY: the tensors outlive the call, and the shim follows `shim`'s convention.
        unsafe {
            tensor_result("attention kernel", |out| {
                let head_bias = head_bias.map_or(std::ptr::null(), Tensor::as_ptr);
                dartboard_attention(qkv.as_ptr(), key_bias.as_ptr(), head_bias, heads, out)
            })
        }
    }

    pub(super) fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor, EmbedError> {
        // SAFETY: as above.
        unsafe {
            tensor_result("layer norm kernel", |out| {
                dartboard_layer_norm(xs.as_ptr(), weight.as_ptr(), bias.as_ptr(), eps, out)
            })
        }
    }
}

/// Elsewhere the kernels are not built; [`available`] is false, so these are never
/// reached through the models.
#[cfg(not(all(target_arch = "x86_64", not(target_env = "msvc"))))]
mod ffi {
    use tch::Tensor;

    use crate::error::EmbedError;

    pub(super) fn available() -> bool {
        false
    }

    fn unsupported() -> EmbedError {
        EmbedError::Torch(tch::TchError::Torch(
            "dartboard's CPU kernels are built for x86-64 with GCC or clang only".into(),
        ))
    }

    pub(super) fn attention(_: &Tensor, _: &Tensor, _: Option<&Tensor>, _: i64) -> Result<Tensor, EmbedError> {
        Err(unsupported())
    }

    pub(super) fn layer_norm(_: &Tensor, _: &Tensor, _: &Tensor, _: f64) -> Result<Tensor, EmbedError> {
        Err(unsupported())
    }
}
