// Gated activations of a fused gate/up projection for the CPU: `act(gate) · up`
// in one pass, SiLU (SwiGLU: Qwen3, Llama) or GELU's tanh form (GeGLU: Gemma 3,
// T5's gated-gelu).
//
// Why our own: from the fused `[..., 2·inner]` projection aten takes two strided
// halves through an activation kernel and a multiplication, two passes and a
// temporary as large as the result; on the Qwen3-Embedding-0.6B shape each layer's
// 3072-wide gate is the widest element-wise step of the block. Here each row of
// the projection is read once.
//
// Rounding, as transformers on tensors of the model's precision computes it: the
// activation in f32, rounded, times `up`, rounded: `round(round(act(g)) · u)`.
// The exponential is a degree-6 polynomial after range reduction (Cephes'
// `expf`, within about 1 ulp, as Sleef's `expf_u10` that aten uses is); SiLU is
// `g / (1 + exp(-g))` and GELU-tanh `0.5·g·(1 + tanh(z))`, both as aten writes
// them.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "avx512.h"
#include "shim.h"

#include <cmath>
#include <vector>

namespace {

using dartboard::Io;
using dartboard::lanes;

enum class Gate : int32_t { Silu = 0, GeluTanh = 1 };

// e^x for f32 lanes (`exp_reduced`, whose scalef overflows to infinity and
// underflows to zero as expf does). Inputs are clamped where the result is
// already 0 or infinity.
DARTBOARD_AVX512 __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
  return dartboard::exp_reduced(x);
}

// tanh(z) = ±(1 - 2 / (e^{2|z|} + 1)): within about an ulp, and rounded once
// near ±1, where GELU reads it.
DARTBOARD_AVX512 __m512 tanh_ps(__m512 z) {
  const __m512 magnitude = _mm512_abs_ps(z);
  const __m512 e = exp_ps(_mm512_add_ps(magnitude, magnitude));
  const __m512 t = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                                 _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
  // The sign of z on |tanh|.
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(INT32_MIN));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
}

template <Gate G>
DARTBOARD_AVX512 __m512 activate(__m512 g) {
  const __m512 one = _mm512_set1_ps(1.0f);
  if constexpr (G == Gate::Silu) {
    return _mm512_div_ps(g, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
  } else {
    // 0.5·g·(1 + tanh(z)) with aten's z = √(2/π)·(g + 0.044715·g³), in aten's
    // order: where tanh(z) is close to -1 the sum cancels, and a more exact form
    // would round to different bf16 values than transformers' in that tail.
    const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(g, g), g);
    const __m512 z = _mm512_mul_ps(_mm512_set1_ps(static_cast<float>(M_SQRT2 * M_2_SQRTPI * 0.5)),
                                   _mm512_add_ps(g, _mm512_mul_ps(_mm512_set1_ps(0.044715f), cube)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), g), _mm512_add_ps(one, tanh_ps(z)));
  }
}

template <typename T, Gate G>
DARTBOARD_AVX512 void gate_row(const T* gate, const T* up, T* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(i, n);
    const __m512 activated = Io<T>::round(activate<G>(Io<T>::load(gate + i, k)));
    Io<T>::store(y + i, _mm512_mul_ps(activated, Io<T>::load(up + i, k)), k);
  }
}

template <typename T, Gate G>
void gated(const at::Tensor& both, at::Tensor& y, int64_t inner) {
  const int64_t rows = inner == 0 ? 0 : y.numel() / inner;
  const T* in = both.const_data_ptr<T>();
  T* out = y.mutable_data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* r = in + row * 2 * inner;
      gate_row<T, G>(r, r + inner, out + row * inner, inner);
    }
  });
}

template <typename T>
void dispatch(const at::Tensor& both, at::Tensor& y, int64_t inner, Gate gate) {
  if (gate == Gate::Silu) {
    gated<T, Gate::Silu>(both, y, inner);
  } else {
    gated<T, Gate::GeluTanh>(both, y, inner);
  }
}

}  // namespace

extern "C" {

// `both` [..., 2·inner] on the CPU, f32, bf16 or f16: the gate, then the up
// projection. Stores act(gate) · up [..., inner] in `both`'s precision in `*out`;
// `gate` 0 is SiLU, 1 GELU's tanh form. Needs `dartboard_cpu_kernels_supported`.
char* dartboard_gated(const at::Tensor* both, int32_t gate, at::Tensor** out) {
  return dartboard::guarded(out, [&] {
    TORCH_CHECK(dartboard::avx512_supported(), "this CPU lacks AVX-512 (F, BW, VL)");
    TORCH_CHECK(both->device().is_cpu() && both->dim() >= 1 && both->size(-1) % 2 == 0,
                "gated activation input must be a CPU tensor of an even width");
    TORCH_CHECK(gate == 0 || gate == 1, "gate must be 0 (SiLU) or 1 (GELU tanh), not ", gate);
    const Gate g = static_cast<Gate>(gate);
    at::Tensor xs = both->contiguous();
    const int64_t inner = xs.size(-1) / 2;
    std::vector<int64_t> shape(xs.sizes().begin(), xs.sizes().end());
    shape.back() = inner;
    at::Tensor y = at::empty(shape, xs.options());
    switch (xs.scalar_type()) {
      case at::kFloat: dispatch<float>(xs, y, inner, g); break;
      case at::kBFloat16: dispatch<c10::BFloat16>(xs, y, inner, g); break;
      case at::kHalf: dispatch<c10::Half>(xs, y, inner, g); break;
      default: TORCH_CHECK(false, "gated activation input must be f32, bf16 or f16, not ", xs.scalar_type());
    }
    return y;
  });
}

}  // extern "C"
