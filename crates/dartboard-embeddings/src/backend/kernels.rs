//! Our own CPU kernels (`cpp/attention.cpp`, `cpp/layer_norm.cpp`,
//! `cpp/rms_norm.cpp`, `cpp/gated.cpp`): AVX-512 code for the steps of a
//! transformer layer where libtorch's CPU operators are far from this hardware's
//! limit on embedding-sized batches. Each file says why, with the measurements;
//! callers check [`available`] (or [`supports`]) and fall back to aten.

use tch::{Device, Kind, Tensor};

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

/// Whether `xs` is a tensor the element-wise kernels (RMSNorm, gated
/// activations) take: [`supports`], in f32, bf16 or f16.
pub(crate) fn supports_elementwise(xs: &Tensor) -> bool {
    matches!(xs.kind(), Kind::Float | Kind::BFloat16 | Kind::Half) && supports(xs)
}

/// Where an RMSNorm rounds to the model's precision (see `cpp/rms_norm.cpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RmsForm {
    /// `weight · round(x · r)`, the product in the model's precision (Qwen3, T5).
    Plain = 0,
    /// `round(x · r · (1 + weight))`, the product in f32 (Gemma).
    Gemma = 1,
}

/// The gate of a gated activation (see `cpp/gated.cpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// SiLU (SwiGLU).
    Silu = 0,
    /// GELU, tanh form (GeGLU).
    GeluTanh = 1,
}

/// RMS normalization of `xs` over its last dimension times `scale` (f32, the
/// weight or Gemma's `1 + weight`), rounded as `form` says; `xs`'s precision.
pub(crate) fn rms_norm(xs: &Tensor, scale: &Tensor, eps: f64, form: RmsForm) -> Result<Tensor, EmbedError> {
    ffi::rms_norm(xs, scale, eps, form as i32)
}

/// `heads` heads of `scale`'s width taken from value `offset` on of each token of
/// `qkv` `[B, T, width]`, each RMS-normalized as [`rms_norm`] does and then rotated
/// with `cos` and `sin` `[T, head_dim]` (in `qkv`'s precision). Returns
/// `[B, T, heads·head_dim]`.
pub(crate) fn rms_norm_rope(
    qkv: &Tensor,
    scale: &Tensor,
    (cos, sin): (&Tensor, &Tensor),
    (offset, heads): (i64, i64),
    eps: f64,
    form: RmsForm,
) -> Result<Tensor, EmbedError> {
    ffi::rms_norm_rope(qkv, scale, cos, sin, offset, heads, eps, form as i32)
}

/// `gate(both[..., :n]) · both[..., n:]` for `both` `[..., 2n]`; `[..., n]`.
pub(crate) fn gated(both: &Tensor, gate: Gate) -> Result<Tensor, EmbedError> {
    ffi::gated(both, gate as i32)
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
        fn dartboard_rms_norm(
            x: *const C_tensor,
            scale: *const C_tensor,
            eps: f64,
            form: i32,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        fn dartboard_rms_norm_rope(
            qkv: *const C_tensor,
            scale: *const C_tensor,
            cos: *const C_tensor,
            sin: *const C_tensor,
            offset: i64,
            heads: i64,
            eps: f64,
            form: i32,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        fn dartboard_gated(both: *const C_tensor, gate: i32, out: *mut *mut C_tensor) -> *mut c_char;
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

    pub(super) fn rms_norm(xs: &Tensor, scale: &Tensor, eps: f64, form: i32) -> Result<Tensor, EmbedError> {
        // SAFETY: as above.
        unsafe {
            tensor_result("RMSNorm kernel", |out| dartboard_rms_norm(xs.as_ptr(), scale.as_ptr(), eps, form, out))
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rms_norm_rope(
        qkv: &Tensor,
        scale: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        offset: i64,
        heads: i64,
        eps: f64,
        form: i32,
    ) -> Result<Tensor, EmbedError> {
        // SAFETY: as above.
        unsafe {
            tensor_result("rotated RMSNorm kernel", |out| {
                dartboard_rms_norm_rope(
                    qkv.as_ptr(),
                    scale.as_ptr(),
                    cos.as_ptr(),
                    sin.as_ptr(),
                    offset,
                    heads,
                    eps,
                    form,
                    out,
                )
            })
        }
    }

    pub(super) fn gated(both: &Tensor, gate: i32) -> Result<Tensor, EmbedError> {
        // SAFETY: as above.
        unsafe { tensor_result("gated activation kernel", |out| dartboard_gated(both.as_ptr(), gate, out)) }
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

    pub(super) fn rms_norm(_: &Tensor, _: &Tensor, _: f64, _: i32) -> Result<Tensor, EmbedError> {
        Err(unsupported())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rms_norm_rope(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: i64,
        _: i64,
        _: f64,
        _: i32,
    ) -> Result<Tensor, EmbedError> {
        Err(unsupported())
    }

    pub(super) fn gated(_: &Tensor, _: i32) -> Result<Tensor, EmbedError> {
        Err(unsupported())
    }
}
