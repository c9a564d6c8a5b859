// AVX-512 (F/BW/VL) + FMA kernels: the 16-float vector type for kernels_simd.inc.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mfma and nothing else; everything here
// has internal linkage, and only waveopt_kernels_avx512() is visible outside.
#include <immintrin.h>

#include "kernels.h"

#define WAVEOPT_SIMD_ISA "avx512"
#define WAVEOPT_SIMD_TABLE waveopt_kernels_avx512
// Register blocking of the GEMM: P panels per block for 1, 2, 4 and NB_BIG batch rows
// (P·NB accumulators + P weights + 1 broadcast <= 32 zmm). Measured at rnn 512 on a Xeon
// with AVX-512: 16 rows × 1 panel was 10-30 % slower than 2 × (8 rows × 3 panels).
// NB_BIG/P_BIG can be overridden (-D) for tuning experiments.
#define WAVEOPT_GEMM_P1 8
#define WAVEOPT_GEMM_P2 6
#define WAVEOPT_GEMM_P4 4
#ifndef WAVEOPT_GEMM_NB_BIG
#define WAVEOPT_GEMM_NB_BIG 8
#define WAVEOPT_GEMM_P_BIG 3
#endif

namespace {

#define WV_INLINE static inline __attribute__((always_inline))

typedef __m512 V;

WV_INLINE __mmask16 tail_mask(size_t n) { return (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u)); }
WV_INLINE V v_zero() { return _mm512_setzero_ps(); }
WV_INLINE V v_set1(float a) { return _mm512_set1_ps(a); }
WV_INLINE V v_load(const float* p) { return _mm512_loadu_ps(p); }
WV_INLINE V v_loadn(const float* p, size_t n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
WV_INLINE V v_loadn_fill(const float* p, size_t n, float fill) {
  return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), tail_mask(n), p);
}
WV_INLINE void v_store(float* p, V a) { _mm512_storeu_ps(p, a); }
WV_INLINE void v_storen(float* p, V a, size_t n) { _mm512_mask_storeu_ps(p, tail_mask(n), a); }
WV_INLINE V v_add(V a, V b) { return _mm512_add_ps(a, b); }
WV_INLINE V v_sub(V a, V b) { return _mm512_sub_ps(a, b); }
WV_INLINE V v_mul(V a, V b) { return _mm512_mul_ps(a, b); }
WV_INLINE V v_div(V a, V b) { return _mm512_div_ps(a, b); }
WV_INLINE V v_max(V a, V b) { return _mm512_max_ps(a, b); }
WV_INLINE V v_min(V a, V b) { return _mm512_min_ps(a, b); }
WV_INLINE V v_fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
WV_INLINE V v_round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integer-valued n in [-126, 127].
WV_INLINE V v_pow2(V n) {
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
WV_INLINE float v_reduce_max(V a) {
  __m256 m = _mm256_max_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

#include "kernels_simd.inc"

}  // namespace

extern "C" const WaveoptKernels* waveopt_kernels_avx512(void) { return &kSimdTable; }
