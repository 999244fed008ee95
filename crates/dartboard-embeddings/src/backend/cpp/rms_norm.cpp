// RMSNorm over the last dimension, alone or per attention head followed by the
// rotary embedding, for the CPU: one pass over each row in f32 registers, with
// the roundings to the model's precision where transformers has them.
//
// Why our own: transformers' RMSNorm (Qwen3, Gemma 3, T5) is six aten operators
// plus two precision conversions, each a pass over the whole batch and a dispatch,
// and Qwen3 applies one to every query and key head before another five for the
// rotation. On the Qwen3-Embedding-0.6B shape in bf16 (docs/benchmarks.md, "Real
// shapes") libtorch's element-wise kernels were 28% of the pass. A row here (a
// hidden state of 1024 values or a head of 128) stays in L1 between reading it for
// the mean of squares and writing it normalized.
//
// Rounding, as transformers computes it (the mean of squares and the product by
// its reciprocal root always in f32):
// - `Plain` (Qwen3RMSNorm, T5LayerNorm): `weight · round(x · r)`, the product in
//   the model's precision, so rounded twice;
// - `Gemma` (Gemma3RMSNorm): `round(x · r · (1 + weight))`, the product in f32,
//   rounded once.
// The rotation (Qwen3's `apply_rotary_pos_emb` on bf16 tensors with bf16 tables)
// rounds each product and the sum: `round(round(n·cos) + round(rotate_half(n)·sin))`.
// In f32 every rounding is the identity.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "avx512.h"
#include "shim.h"

#include <cmath>
#include <vector>

namespace {

using dartboard::Io;
using dartboard::lanes;

enum class Form : int32_t { Plain = 0, Gemma = 1 };

// 1 / sqrt(mean(x²) + eps) of a row, as f32 arithmetic gives it.
template <typename T>
DARTBOARD_AVX512 float inverse_rms(const T* x, int64_t n, float eps) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = Io<T>::load(x + i, lanes(i, n));
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  const float mean = _mm512_reduce_add_ps(squares) / static_cast<float>(n);
  return 1.0f / std::sqrt(mean + eps);
}

// The normalized, scaled values of 16 lanes, rounded as `form` says.
template <typename T>
DARTBOARD_AVX512 __m512 scaled(__m512 x, __m512 r, __m512 scale, Form form) {
  const __m512 normalized = _mm512_mul_ps(x, r);
  if (form == Form::Gemma) return Io<T>::round(_mm512_mul_ps(normalized, scale));
  return Io<T>::round(_mm512_mul_ps(Io<T>::round(normalized), scale));
}

template <typename T>
DARTBOARD_AVX512 void normalize_row(const T* x, const float* scale, T* y, int64_t n, float eps, Form form) {
  const __m512 r = _mm512_set1_ps(inverse_rms(x, n, eps));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(i, n);
    Io<T>::store(y + i, scaled<T>(Io<T>::load(x + i, k), r, _mm512_maskz_loadu_ps(k, scale + i), form), k);
  }
}

// One head of `d` values: normalized into `buffer` (f32, already rounded), then
// rotated with this position's `cos` and `sin` rows (in the model's precision).
template <typename T>
DARTBOARD_AVX512 void normalize_rotate_row(const T* x, const float* scale, const T* cos, const T* sin, T* y,
                                           int64_t d, float eps, Form form, float* buffer) {
  const __m512 r = _mm512_set1_ps(inverse_rms(x, d, eps));
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 k = lanes(i, d);
    _mm512_mask_storeu_ps(buffer + i, k,
                          scaled<T>(Io<T>::load(x + i, k), r, _mm512_maskz_loadu_ps(k, scale + i), form));
  }
  // Dimension i pairs with i + d/2: rotate_half(n) is (-n[d/2:], n[:d/2]).
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; i += 16) {
    const __mmask16 k = lanes(i, half);
    const __m512 a = _mm512_maskz_loadu_ps(k, buffer + i), b = _mm512_maskz_loadu_ps(k, buffer + half + i);
    const __m512 first = _mm512_sub_ps(Io<T>::round(_mm512_mul_ps(a, Io<T>::load(cos + i, k))),
                                       Io<T>::round(_mm512_mul_ps(b, Io<T>::load(sin + i, k))));
    const __m512 second = _mm512_add_ps(Io<T>::round(_mm512_mul_ps(b, Io<T>::load(cos + half + i, k))),
                                        Io<T>::round(_mm512_mul_ps(a, Io<T>::load(sin + half + i, k))));
    Io<T>::store(y + i, first, k);
    Io<T>::store(y + half + i, second, k);
  }
}

template <typename T>
void normalize(const at::Tensor& x, const float* scale, at::Tensor& y, float eps, Form form) {
  const int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
  const T* in = x.const_data_ptr<T>();
  T* out = y.mutable_data_ptr<T>();
  // About 16K values per task: enough to amortize waking a thread.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) normalize_row<T>(in + row * n, scale, out + row * n, n, eps, form);
  });
}

// `qkv` [B, T, width] contiguous; heads [offset, offset + heads·d) of each token.
template <typename T>
void normalize_rotate(const at::Tensor& qkv, int64_t offset, int64_t heads, const float* scale, const at::Tensor& cos,
                      const at::Tensor& sin, at::Tensor& y, float eps, Form form) {
  const int64_t batch = qkv.size(0), seq = qkv.size(1), width = qkv.size(2), d = cos.size(-1);
  const T* in = qkv.const_data_ptr<T>();
  const T* c = cos.const_data_ptr<T>();
  const T* s = sin.const_data_ptr<T>();
  T* out = y.mutable_data_ptr<T>();
  const int64_t rows = batch * seq * heads;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(static_cast<size_t>(dartboard::round16(d)));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t token = row / heads, head = row % heads, position = token % seq;
      normalize_rotate_row<T>(in + token * width + offset + head * d, scale, c + position * d, s + position * d,
                              out + row * d, d, eps, form, buffer.data());
    }
  });
}

Form form_of(int32_t form) {
  TORCH_CHECK(form == 0 || form == 1, "RMSNorm form must be 0 (plain) or 1 (Gemma), not ", form);
  return static_cast<Form>(form);
}

}  // namespace

extern "C" {

// `x` [..., n] on the CPU, f32, bf16 or f16; `scale` [n] f32 (the weight, or
// Gemma's `1 + weight`). Stores x / sqrt(mean(x²) + eps) · scale over the last
// dimension, rounded as `form` says (0 plain, 1 Gemma; see the top of this file),
// in `x`'s precision, in `*out`. Needs `dartboard_cpu_kernels_supported`.
char* dartboard_rms_norm(const at::Tensor* x, const at::Tensor* scale, double eps, int32_t form, at::Tensor** out) {
  return dartboard::guarded(out, [&] {
    TORCH_CHECK(dartboard::avx512_supported(), "this CPU lacks AVX-512 (F, BW, VL)");
    TORCH_CHECK(x->device().is_cpu() && x->dim() >= 1, "RMSNorm input must be a CPU tensor");
    const int64_t n = x->size(-1);
    TORCH_CHECK(scale->is_cpu() && scale->scalar_type() == at::kFloat && scale->numel() == n,
                "RMSNorm scale must be a CPU f32 tensor of ", n, " values");
    const Form f = form_of(form);
    at::Tensor xs = x->contiguous(), w = scale->contiguous();
    at::Tensor y = at::empty_like(xs);
    const float* sw = w.const_data_ptr<float>();
    const float e = static_cast<float>(eps);
    switch (xs.scalar_type()) {
      case at::kFloat: normalize<float>(xs, sw, y, e, f); break;
      case at::kBFloat16: normalize<c10::BFloat16>(xs, sw, y, e, f); break;
      case at::kHalf: normalize<c10::Half>(xs, sw, y, e, f); break;
      default: TORCH_CHECK(false, "RMSNorm input must be f32, bf16 or f16, not ", xs.scalar_type());
    }
    return y;
  });
}

// `qkv` [B, T, width] on the CPU, f32, bf16 or f16: heads of d = `scale`'s length
// side by side, of which `heads` from value `offset` on are taken. Each is
// RMS-normalized as `dartboard_rms_norm` does (`scale` [d] f32), then rotated
// (`cos`, `sin` [T, d] in `qkv`'s precision, the "rotate half" pairing). Stores
// [B, T, heads·d] in `qkv`'s precision in `*out`.
char* dartboard_rms_norm_rope(const at::Tensor* qkv, const at::Tensor* scale, const at::Tensor* cos,
                              const at::Tensor* sin, int64_t offset, int64_t heads, double eps, int32_t form,
                              at::Tensor** out) {
  return dartboard::guarded(out, [&] {
    TORCH_CHECK(dartboard::avx512_supported(), "this CPU lacks AVX-512 (F, BW, VL)");
    TORCH_CHECK(qkv->device().is_cpu() && qkv->dim() == 3, "rotated RMSNorm input must be a [B, T, width] CPU tensor");
    const int64_t d = scale->numel(), seq = qkv->size(1);
    TORCH_CHECK(d > 0 && d % 2 == 0, "head width must be even and positive, not ", d);
    TORCH_CHECK(scale->is_cpu() && scale->scalar_type() == at::kFloat, "RMSNorm scale must be a CPU f32 tensor");
    TORCH_CHECK(heads > 0 && offset >= 0 && offset + heads * d <= qkv->size(2), "heads [", offset, ", ",
                offset + heads * d, ") do not fit in a width of ", qkv->size(2));
    for (const at::Tensor* t : {cos, sin}) {
      TORCH_CHECK(t->is_cpu() && t->scalar_type() == qkv->scalar_type() && t->dim() == 2 && t->size(0) == seq &&
                      t->size(1) == d,
                  "rotation tables must be [", seq, ", ", d, "] CPU tensors in the input's precision");
    }
    const Form f = form_of(form);
    at::Tensor xs = qkv->contiguous(), w = scale->contiguous(), c = cos->contiguous(), s = sin->contiguous();
    at::Tensor y = at::empty({xs.size(0), seq, heads * d}, xs.options());
    const float* sw = w.const_data_ptr<float>();
    const float e = static_cast<float>(eps);
    switch (xs.scalar_type()) {
      case at::kFloat: normalize_rotate<float>(xs, offset, heads, sw, c, s, y, e, f); break;
      case at::kBFloat16: normalize_rotate<c10::BFloat16>(xs, offset, heads, sw, c, s, y, e, f); break;
      case at::kHalf: normalize_rotate<c10::Half>(xs, offset, heads, sw, c, s, y, e, f); break;
      default: TORCH_CHECK(false, "rotated RMSNorm input must be f32, bf16 or f16, not ", xs.scalar_type());
    }
    return y;
  });
}

}  // extern "C"
