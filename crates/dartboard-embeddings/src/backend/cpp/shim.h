// The calling convention every shim in this directory follows, on the C++ side
// (the Rust side is `src/shim.rs`): borrowed `at::Tensor*` arguments in, a new
// `at::Tensor*` stored in `*out` and null returned on success, and on failure a
// malloc'd message, with no C++ exception ever crossing into Rust.

#pragma once

#include <ATen/core/Tensor.h>

#include <cstdlib>
#include <cstring>
#include <exception>

namespace dartboard {

template <typename F>
char* guarded(at::Tensor** out, F&& compute) {
  try {
    *out = new at::Tensor(compute());
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception");
  }
}

}  // namespace dartboard
