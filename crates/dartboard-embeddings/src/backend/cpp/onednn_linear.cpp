// The one operator dartboard calls that tch has no binding for: libtorch's oneDNN
// linear, `mkldnn::_linear_pointwise`, registered by libtorch itself (PyTorch's
// inductor compiler emits it for CPU linears). tch only binds `aten::` operators,
// so this reaches it through the dispatcher, boxed, the way TorchScript would.
//
// Ownership follows tch's C API (see shim.h): tensors are `at::Tensor*`; the result
// is a new `at::Tensor*` that the Rust side wraps with `Tensor::from_ptr` and frees.

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include "shim.h"

#include <optional>
#include <string>

namespace {

c10::IValue optional_tensor(const at::Tensor* t) { return t ? c10::IValue(*t) : c10::IValue(); }

}  // namespace

extern "C" {

// `x Wᵀ + b`, then `attr`: "none", "gelu" (with `algorithm` "none" for erf or
// "tanh"), or, when `other` is given, "add" (`+ other`). On success stores the
// result in `*out` and returns null; on failure returns a malloc'd message.
char* dartboard_linear_pointwise(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b,
                                 const at::Tensor* other, const char* attr, const char* algorithm,
                                 at::Tensor** out) {
  return dartboard::guarded(out, [&] {
    auto& dispatcher = c10::Dispatcher::singleton();
    torch::jit::Stack stack;
    if (other != nullptr) {
      static const auto op = dispatcher.findSchemaOrThrow("mkldnn::_linear_pointwise", "binary");
      stack = {*x, *other, *w, optional_tensor(b), std::string(attr)};
      op.callBoxed(&stack);
    } else {
      static const auto op = dispatcher.findSchemaOrThrow("mkldnn::_linear_pointwise", "");
      c10::IValue algo = algorithm ? c10::IValue(std::string(algorithm)) : c10::IValue();
      stack = {*x, *w, optional_tensor(b), std::string(attr), c10::List<std::optional<at::Scalar>>(), algo};
      op.callBoxed(&stack);
    }
    return stack.at(0).toTensor();
  });
}

}  // extern "C"
