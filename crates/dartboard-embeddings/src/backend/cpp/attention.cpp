// Multi-head attention for the CPU, softmax(q kᵀ · scale + bias) v, one text (and
// group of heads) per unit of work, in f32 registers and per-head buffer slices
// that stream through L1/L2.
//
// Why our own: libtorch's fused CPU attention (`_scaled_dot_product_flash_
// attention_for_cpu`) is built for long sequences. On the batches an embedding
// model sees (32 texts of 8–256 tokens, heads of 32) it reaches 20–110 GFLOP/s on a
// 2-core Zen 5, where the model's linear layers reach ~900; at 128 tokens it took
// as long as the layer's four matrix products together. Spelling the same
// computation as aten operators (two batched products and a softmax) is faster
// below 64 tokens but makes six passes over a `[B, heads, T, T]` f32 tensor.
// Here a text's queries, keys and values are converted to f32 once, the scores of
// four queries at a time stay in a buffer of a few KB, and the result is written
// straight into `[B, T, heads·head_dim]` in the model's precision.
//
// Numerics follow the explicit f32 computation: products and sums in f32, the
// softmax as aten computes it (subtract the row maximum, exp, one division), with
// an exp within 2 ulp of exact. Keys whose bias is the lowest finite f32
// (transformers' padding value) at the end of a row are skipped: their weight is
// exactly 0 in f32 unless every key is padding, and then all keys are kept, giving
// transformers' uniform average.
//
// Requires AVX-512 F/BW/VL (every AVX-512 CPU since Skylake-SP and Zen 4);
// `dartboard_cpu_kernels_supported` says whether this CPU has it, and the Rust side
// falls back to aten otherwise.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "avx512.h"
#include "shim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using dartboard::Io;
using dartboard::lanes;
using dartboard::round16;

// Queries per register tile: 4 queries × 4 vectors of 16 keys is 16 accumulators
// in the score product, leaving registers for the operands.
constexpr int kQueries = 4;
constexpr int kKeyVectors = 4;
// Dimension vectors (of 16) the value product keeps in registers at once; wider
// heads are done in slices.
constexpr int kMaxDimVectors = 8;

// e^x for x ≤ 0 (softmax arguments after subtracting the row maximum), within
// 2 ulp (`exp_reduced`). Below -103, where e^x is at most a
// denormal 1e-45, the result is 0; a NaN stays NaN, so a NaN score poisons its row
// as it does in aten. Inline, it costs a third of a call to libtorch's Sleef exp,
// which was a fifth of the kernel's time at 256 tokens.
DARTBOARD_AVX512 inline __m512 exp_nonpositive(__m512 x) {
  const __mmask16 alive = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.0f), _CMP_NLT_UQ);
  x = _mm512_max_ps(_mm512_set1_ps(-103.0f), x);  // returns x when x is NaN
  return _mm512_maskz_mov_ps(alive, dartboard::exp_reduced(x));
}

struct Problem {
  int64_t batch, seq, heads, dim;
  float scale;
  const float* key_bias;   // [batch, seq]
  const float* head_bias;  // [heads, seq, seq], [seq, seq] shared by every head, or null
  int64_t head_bias_stride;  // seq·seq, or 0 when every head shares one [seq, seq] bias
};

// Per-thread buffers, reused across the units of work a thread handles. Each
// head's slice is contiguous, so the products below stream through L1/L2.
struct Scratch {
  std::vector<float> queries;  // [heads][seq][dim_padded], already scaled
  std::vector<float> keys;     // [heads][dim][stride], transposed: a key's scores are one vector lane
  std::vector<float> values;   // [heads][keys][dim_padded]
  std::vector<float> scores;   // [kQueries][stride]
  std::vector<float> block;    // [16][dim_padded], 16 keys on their way to `keys`
};

// What the score tile adds to q·k before the softmax, and where the keys end.
struct ScoreBias {
  const float* keys;  // [seq], or null when no key before `count` is padding
  const float* head;  // [seq][seq] for this head, or null
  int64_t seq;
  int64_t count;      // keys taking part; lanes from here on become -inf
};

// 16 rows of 16 floats (row stride `from_stride`) into 16 columns (row stride
// `to_stride`), writing only the first `rows_out` rows of the result.
DARTBOARD_AVX512 inline void transpose16(const float* from, int64_t from_stride, float* to, int64_t to_stride,
                                         int64_t rows_out) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(from + i * from_stride);
  // Interleave pairs of rows, then pairs of pairs, then 128-bit lanes twice.
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int64_t i = 0; i < rows_out; ++i) _mm512_storeu_ps(to + i * to_stride, r[i]);
}

// For QB queries (rows of `queries`, already scaled) and the KV·16 keys from j0:
// scores = q·k + bias, -inf past the last key, stored in `scores` (row stride
// `stride`), with each query's running maximum kept in `max`.
template <int QB, int KV>
DARTBOARD_AVX512 void score_tile(const float* queries, int64_t dim_padded, const float* keys, int64_t stride,
                                 int64_t dim, int64_t j0, const ScoreBias& bias, int64_t i0, float* scores,
                                 __m512* max) {
  __m512 acc[QB][KV];
#pragma GCC unroll 4
  for (int q = 0; q < QB; ++q)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) acc[q][v] = _mm512_setzero_ps();
  for (int64_t d = 0; d < dim; ++d) {
    __m512 k[KV];
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) k[v] = _mm512_loadu_ps(keys + d * stride + j0 + 16 * v);
#pragma GCC unroll 4
    for (int q = 0; q < QB; ++q) {
      __m512 x = _mm512_set1_ps(queries[q * dim_padded + d]);
#pragma GCC unroll 4
      for (int v = 0; v < KV; ++v) acc[q][v] = _mm512_fmadd_ps(x, k[v], acc[q][v]);
    }
  }
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
#pragma GCC unroll 4
  for (int q = 0; q < QB; ++q) {
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) {
      const int64_t j = j0 + 16 * v;
      const __mmask16 m = lanes(j, bias.count);
      __m512 x = acc[q][v];
      if (bias.keys) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias.keys + j));
      if (bias.head) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias.head + (i0 + q) * bias.seq + j));
      if (m != 0xffff) x = _mm512_mask_blend_ps(m, minus_inf, x);
      _mm512_storeu_ps(scores + q * stride + j, x);
      max[q] = _mm512_max_ps(max[q], x);
    }
  }
}

template <int QB>
DARTBOARD_AVX512 void scores_for(const float* queries, int64_t dim_padded, const float* keys, int64_t keys_padded,
                                 int64_t stride, int64_t dim, const ScoreBias& bias, int64_t i0, float* scores,
                                 __m512* max) {
  for (int64_t j0 = 0; j0 < keys_padded; j0 += 16 * kKeyVectors) {
    switch (std::min<int64_t>(kKeyVectors, (keys_padded - j0) / 16)) {
      case 1: score_tile<QB, 1>(queries, dim_padded, keys, stride, dim, j0, bias, i0, scores, max); break;
      case 2: score_tile<QB, 2>(queries, dim_padded, keys, stride, dim, j0, bias, i0, scores, max); break;
      case 3: score_tile<QB, 3>(queries, dim_padded, keys, stride, dim, j0, bias, i0, scores, max); break;
      default: score_tile<QB, 4>(queries, dim_padded, keys, stride, dim, j0, bias, i0, scores, max); break;
    }
  }
}

// out[q] = Σ_j p[q][j] · values[j] · inv[q], written in the model's precision.
// With few accumulators (QB·DV ≤ 8) even and odd keys go to separate sets, so that
// enough independent FMAs are in flight to cover their latency.
template <typename T, int QB, int DV>
DARTBOARD_AVX512 void value_tile(const float* p, int64_t stride, const float* values, int64_t dim_padded,
                                 int64_t keys, const float* inv, T* out, int64_t out_stride, int64_t dim) {
  constexpr int kSets = QB * DV <= 8 ? 2 : 1;
  __m512 acc[kSets][QB][DV];
#pragma GCC unroll 2
  for (int s = 0; s < kSets; ++s)
#pragma GCC unroll 4
    for (int q = 0; q < QB; ++q)
#pragma GCC unroll 8
      for (int v = 0; v < DV; ++v) acc[s][q][v] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + kSets <= keys; j += kSets) {
#pragma GCC unroll 2
    for (int s = 0; s < kSets; ++s) {
      __m512 x[DV];
#pragma GCC unroll 8
      for (int v = 0; v < DV; ++v) x[v] = _mm512_loadu_ps(values + (j + s) * dim_padded + 16 * v);
#pragma GCC unroll 4
      for (int q = 0; q < QB; ++q) {
        __m512 w = _mm512_set1_ps(p[q * stride + j + s]);
#pragma GCC unroll 8
        for (int v = 0; v < DV; ++v) acc[s][q][v] = _mm512_fmadd_ps(w, x[v], acc[s][q][v]);
      }
    }
  }
  for (; j < keys; ++j) {
#pragma GCC unroll 4
    for (int q = 0; q < QB; ++q) {
      __m512 w = _mm512_set1_ps(p[q * stride + j]);
#pragma GCC unroll 8
      for (int v = 0; v < DV; ++v)
        acc[0][q][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(values + j * dim_padded + 16 * v), acc[0][q][v]);
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < QB; ++q) {
    __m512 scale = _mm512_set1_ps(inv[q]);
#pragma GCC unroll 8
    for (int v = 0; v < DV; ++v) {
      __m512 sum = kSets == 2 ? _mm512_add_ps(acc[0][q][v], acc[kSets - 1][q][v]) : acc[0][q][v];
      Io<T>::store(out + q * out_stride + 16 * v, _mm512_mul_ps(sum, scale), lanes(16 * v, dim));
    }
  }
}

// Four queries at a time while the accumulators fit the 32 registers (up to 4
// dimension vectors), then pairs, then one.
template <typename T, int DV>
DARTBOARD_AVX512 void values_for(int qb, const float* p, int64_t stride, const float* values, int64_t dim_padded,
                                 int64_t keys, const float* inv, T* out, int64_t out_stride, int64_t dim) {
  int q = 0;
  if constexpr (DV <= 4) {
    for (; q + 4 <= qb; q += 4)
      value_tile<T, 4, DV>(p + q * stride, stride, values, dim_padded, keys, inv + q, out + q * out_stride,
                           out_stride, dim);
  }
  for (; q + 2 <= qb; q += 2)
    value_tile<T, 2, DV>(p + q * stride, stride, values, dim_padded, keys, inv + q, out + q * out_stride,
                         out_stride, dim);
  for (; q < qb; ++q)
    value_tile<T, 1, DV>(p + q * stride, stride, values, dim_padded, keys, inv + q, out + q * out_stride,
                         out_stride, dim);
}

template <typename T>
DARTBOARD_AVX512 void values_dispatch(int dim_vectors, int qb, const float* p, int64_t stride,
                                      const float* values, int64_t dim_padded, int64_t keys, const float* inv, T* out,
                                      int64_t out_stride, int64_t dim) {
  switch (dim_vectors) {
#define DARTBOARD_CASE(N) \
  case N: values_for<T, N>(qb, p, stride, values, dim_padded, keys, inv, out, out_stride, dim); break;
    DARTBOARD_CASE(1)
    DARTBOARD_CASE(2)
    DARTBOARD_CASE(3)
    DARTBOARD_CASE(4)
    DARTBOARD_CASE(5)
    DARTBOARD_CASE(6)
    DARTBOARD_CASE(7)
    DARTBOARD_CASE(8)
#undef DARTBOARD_CASE
  }
}

// Attention for heads [h0, h1) of text `b`. The text's rows are read in order, 16
// at a time for all the heads, and keys are transposed 16×16 in registers: one
// head at a time, with scalar transposing stores, the loads and stores took most
// of the kernel's time.
template <typename T>
DARTBOARD_AVX512 void attend_text(const T* qkv, T* out, const Problem& pr, int64_t b, int64_t h0, int64_t h1,
                                  Scratch& s) {
  const int64_t seq = pr.seq, dim = pr.dim, heads = h1 - h0;
  const int64_t row = 3 * pr.heads * dim, out_row = pr.heads * dim;
  const int64_t dim_padded = round16(dim), dim_vectors = dim_padded / 16;
  const float* key_bias = pr.key_bias + b * seq;

  // Trailing padding keys carry exactly zero weight, unless every key is padding.
  const float padding = std::numeric_limits<float>::lowest();
  int64_t keys = seq;
  while (keys > 0 && key_bias[keys - 1] == padding) --keys;
  if (keys == 0) keys = seq;
  const bool holes = std::any_of(key_bias, key_bias + keys, [](float x) { return x != 0.0f; });
  const int64_t keys_padded = round16(keys);
  // Rows of the transposed keys and of the scores are one cache line longer than
  // needed: at a power-of-two stride (1 KB for 256 keys) every row fell into the
  // same few L1 sets, and the transposing stores missed L1 one after another.
  const int64_t stride = keys_padded + 16;

  s.queries.resize(heads * seq * dim_padded);
  s.keys.resize(heads * dim * stride);
  s.values.resize(heads * keys * dim_padded);
  s.scores.resize(kQueries * stride);
  s.block.resize(16 * dim_padded);
  float* const queries = s.queries.data();
  float* const keys_t = s.keys.data();
  float* const values = s.values.data();
  float* const scores = s.scores.data();
  float* const block = s.block.data();

  const __m512 scale = _mm512_set1_ps(pr.scale);
  for (int64_t t = 0; t < seq; ++t) {
    const T* r = qkv + (b * seq + t) * row + h0 * dim;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t v = 0; v < dim_vectors; ++v)
        _mm512_storeu_ps(queries + (h * seq + t) * dim_padded + 16 * v,
                         _mm512_mul_ps(Io<T>::load(r + h * dim + 16 * v, lanes(16 * v, dim)), scale));
  }
  for (int64_t t0 = 0; t0 < keys_padded; t0 += 16) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t t = t0 + i;
        if (t >= keys) {
          for (int64_t v = 0; v < dim_vectors; ++v) _mm512_storeu_ps(block + i * dim_padded + 16 * v, _mm512_setzero_ps());
          continue;
        }
        const T* k = qkv + (b * seq + t) * row + (pr.heads + h0 + h) * dim;
        const T* val = k + pr.heads * dim;
        for (int64_t v = 0; v < dim_vectors; ++v) {
          const __mmask16 m = lanes(16 * v, dim);
          _mm512_storeu_ps(block + i * dim_padded + 16 * v, Io<T>::load(k + 16 * v, m));
          _mm512_storeu_ps(values + (h * keys + t) * dim_padded + 16 * v, Io<T>::load(val + 16 * v, m));
        }
      }
      for (int64_t v = 0; v < dim_vectors; ++v)
        transpose16(block + 16 * v, dim_padded, keys_t + (h * dim + 16 * v) * stride + t0, stride,
                    std::min<int64_t>(16, dim - 16 * v));
    }
  }

  float inv[kQueries];
  __m512 max[kQueries];
  for (int64_t h = 0; h < heads; ++h) {
    const ScoreBias bias{holes ? key_bias : nullptr, pr.head_bias ? pr.head_bias + (h0 + h) * pr.head_bias_stride : nullptr,
                         seq, keys};
    const float* kh = keys_t + h * dim * stride;
    const float* vh = values + h * keys * dim_padded;
    for (int64_t i0 = 0; i0 < seq; i0 += kQueries) {
      const int qb = static_cast<int>(std::min<int64_t>(kQueries, seq - i0));
      const float* qh = queries + (h * seq + i0) * dim_padded;
      for (int q = 0; q < qb; ++q) max[q] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      switch (qb) {
        case 1: scores_for<1>(qh, dim_padded, kh, keys_padded, stride, dim, bias, i0, scores, max); break;
        case 2: scores_for<2>(qh, dim_padded, kh, keys_padded, stride, dim, bias, i0, scores, max); break;
        case 3: scores_for<3>(qh, dim_padded, kh, keys_padded, stride, dim, bias, i0, scores, max); break;
        default: scores_for<4>(qh, dim_padded, kh, keys_padded, stride, dim, bias, i0, scores, max); break;
      }
      for (int q = 0; q < qb; ++q) {
        float* sc = scores + q * stride;
        const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(max[q]));
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < keys_padded; j += 16) {
          __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(sc + j), top));
          _mm512_storeu_ps(sc + j, e);
          sum = _mm512_add_ps(sum, e);
        }
        inv[q] = 1.0f / _mm512_reduce_add_ps(sum);
      }
      T* o = out + (b * seq + i0) * out_row + (h0 + h) * dim;
      for (int64_t c = 0; c < dim_vectors; c += kMaxDimVectors)
        values_dispatch<T>(static_cast<int>(std::min<int64_t>(kMaxDimVectors, dim_vectors - c)), qb, scores, stride,
                           vh + 16 * c, dim_padded, keys, inv, o + 16 * c, out_row, dim - 16 * c);
    }
  }
}

// Units of work are (text, group of heads): whole texts when there are enough to
// keep every thread busy, smaller groups of heads for a batch of one or two.
template <typename T>
void attend(const at::Tensor& qkv, at::Tensor& out, const Problem& pr) {
  const T* in = qkv.const_data_ptr<T>();
  T* result = out.mutable_data_ptr<T>();
  const int64_t wanted = 2 * static_cast<int64_t>(at::get_num_threads());
  const int64_t groups = std::clamp<int64_t>((wanted + pr.batch - 1) / pr.batch, 1, pr.heads);
  const int64_t per_group = (pr.heads + groups - 1) / groups;
  at::parallel_for(0, pr.batch * groups, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / groups, h0 = unit % groups * per_group;
      if (h0 < pr.heads)
        attend_text<T>(in, result, pr, b, h0, std::min(pr.heads, h0 + per_group), scratch);
    }
  });
}

}  // namespace

extern "C" {

// Whether this CPU can run the kernels in this directory (this file's attention
// and layer_norm.cpp's).
bool dartboard_cpu_kernels_supported() { return dartboard::avx512_supported(); }

// `qkv`: [B, T, 3·heads·head_dim] (queries, keys, values side by side), f32, bf16
// or f16, on the CPU. `key_bias`: [B, T] f32, added to every query's score for
// that key (0, or the lowest f32 for padding). `head_bias`: null, [heads, T, T] f32
// added per head, or [T, T] f32 added to every head (any leading 1s): a causal or
// sliding-window band, which would cost heads times the memory expanded. On success stores a new
// [B, T, heads·head_dim] tensor in `qkv`'s precision in `*out` and returns null; on
// failure returns a malloc'd message.
char* dartboard_attention(const at::Tensor* qkv, const at::Tensor* key_bias, const at::Tensor* head_bias, int64_t heads,
                          at::Tensor** out) {
  return dartboard::guarded(out, [&] {
    TORCH_CHECK(dartboard::avx512_supported(), "this CPU lacks AVX-512 (F, BW, VL)");
    TORCH_CHECK(qkv->device().is_cpu() && qkv->dim() == 3, "qkv must be a [B, T, 3·hidden] CPU tensor");
    TORCH_CHECK(heads > 0 && qkv->size(2) % (3 * heads) == 0, "qkv width ", qkv->size(2), " is not 3 × ", heads,
                " heads");
    const int64_t batch = qkv->size(0), seq = qkv->size(1), dim = qkv->size(2) / (3 * heads);
    at::Tensor x = qkv->contiguous();
    at::Tensor kb = key_bias->contiguous();
    TORCH_CHECK(kb.is_cpu() && kb.scalar_type() == at::kFloat && kb.numel() == batch * seq,
                "key_bias must be a [B, T] f32 CPU tensor");
    at::Tensor hb;
    if (head_bias != nullptr) {
      hb = head_bias->contiguous();
      TORCH_CHECK(hb.is_cpu() && hb.scalar_type() == at::kFloat &&
                      (hb.numel() == heads * seq * seq || hb.numel() == seq * seq),
                  "head_bias must be a [heads, T, T] or [T, T] f32 CPU tensor");
    }
    const int64_t head_bias_stride = head_bias != nullptr && hb.numel() == heads * seq * seq ? seq * seq : 0;
    at::Tensor result = at::empty({batch, seq, heads * dim}, x.options());
    const Problem pr{batch, seq, heads, dim, static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim))), kb.const_data_ptr<float>(),
                     head_bias ? hb.const_data_ptr<float>() : nullptr, head_bias_stride};
    if (batch * seq > 0) {
      switch (x.scalar_type()) {
        case at::kFloat: attend<float>(x, result, pr); break;
        case at::kBFloat16: attend<c10::BFloat16>(x, result, pr); break;
        case at::kHalf: attend<c10::Half>(x, result, pr); break;
        default: TORCH_CHECK(false, "qkv must be f32, bf16 or f16, not ", x.scalar_type());
      }
    }
    return result;
  });
}

}  // extern "C"
