// AVX-512 building blocks shared by our CPU kernels (attention.cpp, gated.cpp,
// layer_norm.cpp, rms_norm.cpp): loads and stores between the model's precision
// and f32 registers, rounding to that precision in registers, tail masks, and e^x.
// Functions that use them carry DARTBOARD_AVX512 and run only after
// `dartboard::avx512_supported()`; the rest of each file is compiled for the
// baseline CPU.

#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define DARTBOARD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace dartboard {

// AVX-512 F, BW and VL: every AVX-512 CPU since Skylake-SP and Zen 4.
inline bool avx512_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

template <typename T>
struct Io;

template <>
struct Io<float> {
  DARTBOARD_AVX512 static __m512 load(const float* p, __mmask16 m) {
    return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
  }
  DARTBOARD_AVX512 static void store(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
  // The value an f32 tensor would hold: itself.
  DARTBOARD_AVX512 static __m512 round(__m512 v) { return v; }
};

template <>
struct Io<c10::BFloat16> {
  DARTBOARD_AVX512 static __m512 load(const c10::BFloat16* p, __mmask16 m) {
    __m256i raw = m == 0xffff ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  // Round to nearest even, as c10::BFloat16 does; a NaN stays a quiet NaN. The
  // bf16 bits sit in the low half of each 32-bit lane.
  DARTBOARD_AVX512 static __m512i to_bits(__m512 v) {
    __m512i bits = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_epi32(nan, rounded, _mm512_set1_epi32(0x7fc0));
  }
  DARTBOARD_AVX512 static void store(c10::BFloat16* p, __m512 v, __mmask16 m) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(to_bits(v)));
  }
  // The value a bf16 tensor would hold, back in f32: what an aten operator on
  // bf16 tensors leaves between two steps.
  DARTBOARD_AVX512 static __m512 round(__m512 v) { return _mm512_castsi512_ps(_mm512_slli_epi32(to_bits(v), 16)); }
};

template <>
struct Io<c10::Half> {
  DARTBOARD_AVX512 static __m512 load(const c10::Half* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
  DARTBOARD_AVX512 static void store(c10::Half* p, __m512 v, __mmask16 m) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  DARTBOARD_AVX512 static __m512 round(__m512 v) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};

// Lanes [0, n) of a 16-lane vector starting at `from`, for a row of length `len`.
inline __mmask16 lanes(int64_t from, int64_t len) {
  int64_t n = std::clamp<int64_t>(len - from, 0, 16);
  return static_cast<__mmask16>((1u << n) - 1u);
}

inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

// e^x for f32 lanes whose x the caller has already bounded (attention.cpp to
// [-103, 0], gated.cpp to [-104, 89]): x = n·ln2 + r with |r| ≤ ln2/2, a
// degree-7 polynomial for e^r (Cephes' expf coefficients), then ·2ⁿ by
// vscalefps; within 2 ulp. One copy, so both kernels round alike.
DARTBOARD_AVX512 inline __m512 exp_reduced(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

}  // namespace dartboard
