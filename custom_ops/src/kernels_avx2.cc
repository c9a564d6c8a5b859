// AVX2 + FMA kernels: the 16-float vector type of kernels_simd.inc as two ymm registers.
// Compiled with -mavx2 -mfma and nothing else; everything here has internal linkage, and
// only waveopt_kernels_avx2() is visible outside.
#include <immintrin.h>

#include "kernels.h"

#define WAVEOPT_SIMD_ISA "avx2"
#define WAVEOPT_SIMD_TABLE waveopt_kernels_avx2
// Register blocking of the GEMM: P panels per block for 1, 2, 4 and NB_BIG batch rows
// (16 ymm; a panel row of 16 floats takes two). On a Xeon, 6×1, 5×1 and 3×2 blocks for
// 16 rows measured the same as 4×1 within noise; not yet measured on Zen 3.
#define WAVEOPT_GEMM_P1 4
#define WAVEOPT_GEMM_P2 2
#define WAVEOPT_GEMM_P4 1
#ifndef WAVEOPT_GEMM_NB_BIG
#define WAVEOPT_GEMM_NB_BIG 4
#define WAVEOPT_GEMM_P_BIG 1
#endif

namespace {

#define WV_INLINE static inline __attribute__((always_inline))

struct V {
  __m256 lo, hi;
};

WV_INLINE V make(__m256 lo, __m256 hi) {
  V v;
  v.lo = lo;
  v.hi = hi;
  return v;
}
// Lane masks for the first n of 16 lanes.
WV_INLINE __m256i mask_lo(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
WV_INLINE __m256i mask_hi(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
}
WV_INLINE V v_zero() { return make(_mm256_setzero_ps(), _mm256_setzero_ps()); }
WV_INLINE V v_set1(float a) {
  __m256 x = _mm256_set1_ps(a);
  return make(x, x);
}
WV_INLINE V v_load(const float* p) { return make(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)); }
WV_INLINE V v_loadn(const float* p, size_t n) {
  if (n >= 16) return v_load(p);
  return make(_mm256_maskload_ps(p, mask_lo(n)), _mm256_maskload_ps(p + 8, mask_hi(n)));
}
WV_INLINE V v_loadn_fill(const float* p, size_t n, float fill) {
  if (n >= 16) return v_load(p);
  const __m256 f = _mm256_set1_ps(fill);
  const __m256i ml = mask_lo(n), mh = mask_hi(n);
  return make(_mm256_blendv_ps(f, _mm256_maskload_ps(p, ml), _mm256_castsi256_ps(ml)),
              _mm256_blendv_ps(f, _mm256_maskload_ps(p + 8, mh), _mm256_castsi256_ps(mh)));
}
WV_INLINE void v_store(float* p, V a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
WV_INLINE void v_storen(float* p, V a, size_t n) {
  if (n >= 16) return v_store(p, a);
  _mm256_maskstore_ps(p, mask_lo(n), a.lo);
  _mm256_maskstore_ps(p + 8, mask_hi(n), a.hi);
}
WV_INLINE V v_add(V a, V b) { return make(_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)); }
WV_INLINE V v_sub(V a, V b) { return make(_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)); }
WV_INLINE V v_mul(V a, V b) { return make(_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)); }
WV_INLINE V v_div(V a, V b) { return make(_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)); }
WV_INLINE V v_max(V a, V b) { return make(_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)); }
WV_INLINE V v_min(V a, V b) { return make(_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)); }
WV_INLINE V v_fmadd(V a, V b, V c) {
  return make(_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi));
}
WV_INLINE V v_round(V a) {
  const int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return make(_mm256_round_ps(a.lo, mode), _mm256_round_ps(a.hi, mode));
}
// 2^n for integer-valued n in [-126, 127].
WV_INLINE __m256 pow2_half(__m256 n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
WV_INLINE V v_pow2(V n) { return make(pow2_half(n.lo), pow2_half(n.hi)); }
WV_INLINE float v_reduce_max(V a) {
  __m256 m = _mm256_max_ps(a.lo, a.hi);
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

#include "kernels_simd.inc"

}  // namespace

extern "C" const WaveoptKernels* waveopt_kernels_avx2(void) { return &kSimdTable; }
