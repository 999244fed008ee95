//! libtorch's oneDNN linear (`mkldnn::_linear_pointwise`), reached through the small
//! C++ shim in `cpp/onednn_linear.cpp` because tch binds only `aten::` operators.
//!
//! Why bother, measured on the Zen 5 machine this project is benchmarked on
//! (2 cores, AVX-512 with BF16, no AMX):
//! - f32: `aten::linear` runs MKL, which takes its AVX2 code path on AMD CPUs:
//!   200–217 GFLOP/s for all-MiniLM's shapes. oneDNN uses AVX-512 and reaches
//!   420–470 GFLOP/s on the same products, in ordinary f32 arithmetic (results
//!   agree to ~1e-6 relative, the difference of summation order).
//! - bf16 and f32: the bias, GELU and the residual add run in the product's
//!   epilogue instead of as separate passes over the activations.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use super::shim::tensor_result;
use crate::error::EmbedError;

extern "C" {
    fn dartboard_linear_pointwise(
        x: *const C_tensor,
        w: *const C_tensor,
        b: *const C_tensor,
        other: *const C_tensor,
        attr: *const c_char,
        algorithm: *const c_char,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

/// What the kernel applies after `x Wᵀ + b`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Nothing.
    None,
    /// An elementwise function oneDNN can fuse.
    Pointwise(Pointwise),
    /// `+ other`, a tensor of the output's shape (a residual connection).
    Add(&'a Tensor),
}

/// The elementwise functions oneDNN's linear fuses (the activations that
/// `layers::Activation` can hand down; the others run as a separate aten pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pointwise {
    /// Exact GELU (erf).
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// ReLU.
    Relu,
    /// SiLU / swish.
    Silu,
}

/// Whether `x Wᵀ + b` over `xs` can run here: a CPU tensor in a precision oneDNN
/// computes natively on this CPU, with libtorch's oneDNN operators present.
pub(crate) fn supports(xs: &Tensor) -> bool {
    // f16 is left to aten: oneDNN's f16 path needs AVX512-FP16 or AMX-FP16.
    xs.device() == Device::Cpu && matches!(xs.kind(), Kind::Float | Kind::BFloat16) && available(xs.kind())
}

/// `x Wᵀ + b` and `epilogue` over the last dimension of `xs` (any rank). Callers
/// check [`supports`] first.
pub(crate) fn linear(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue<'_>,
) -> Result<Tensor, EmbedError> {
    let (attr, algorithm, other) = match epilogue {
        Epilogue::None => ("none", None, None),
        Epilogue::Pointwise(Pointwise::Gelu) => ("gelu", Some("none"), None),
        Epilogue::Pointwise(Pointwise::GeluTanh) => ("gelu", Some("tanh"), None),
        Epilogue::Pointwise(Pointwise::Relu) => ("relu", None, None),
        Epilogue::Pointwise(Pointwise::Silu) => ("swish", None, None),
        Epilogue::Add(other) => ("add", None, Some(other)),
    };
    let attr = CString::new(attr).expect("no NUL in a literal");
    let algorithm = algorithm.map(|a| CString::new(a).expect("no NUL in a literal"));
    // SAFETY: every pointer is either null (optional arguments) or borrowed from a
    // live tensor or CString for the duration of the call; the shim follows
    // `shim`'s convention.
    unsafe {
        tensor_result("oneDNN linear", |out| {
            dartboard_linear_pointwise(
                xs.as_ptr(),
                weight.as_ptr(),
                bias.map_or(std::ptr::null(), Tensor::as_ptr),
                other.map_or(std::ptr::null(), Tensor::as_ptr),
                attr.as_ptr(),
                algorithm.as_ref().map_or(std::ptr::null(), |a| a.as_ptr()),
                out,
            )
        })
    }
}

/// Probes once per precision whether the operator runs here: a libtorch built
/// without oneDNN, a CPU without AVX-512 for bf16, or a future libtorch that
/// renamed the operator all fall back to `aten::linear`.
fn available(kind: Kind) -> bool {
    static F32: OnceLock<bool> = OnceLock::new();
    static BF16: OnceLock<bool> = OnceLock::new();
    let cell = if kind == Kind::BFloat16 { &BF16 } else { &F32 };
    *cell.get_or_init(|| {
        let _guard = tch::no_grad_guard();
        let x = Tensor::ones([1, 2], (kind, Device::Cpu));
        // Both overloads: plain (and activations), and the residual add.
        let probe = linear(&x, &x, None, Epilogue::None).and_then(|y| linear(&x, &x, None, Epilogue::Add(&y)));
        match probe {
            Ok(y) => y.double_value(&[0, 0]) == 4.0,
            Err(err) => {
                tracing::warn!("libtorch's oneDNN linear does not run here for {kind:?}, using aten::linear: {err}");
                false
            }
        }
    })
}
