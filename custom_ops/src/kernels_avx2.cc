// AVX2 + FMA kernels: the 16-float vector type of kernels_simd.inc as two ymm registers,
// and its 16-lane s32 type for the integer GEMM likewise (int8: vpmaddubsw + vpmaddwd with
// ones + vpaddd; int16: vpmaddwd + vpaddd).
// Compiled with -mavx2 -mfma and nothing else; everything here has internal linkage, and
// only waveopt_kernels_avx2() is visible outside.
#include <immintrin.h>

#include "kernels.h"

#define WAVEOPT_SIMD_ISA "avx2"
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
// The same for the integer GEMM (a panel's 16 s32 sums take two ymm, like 16 floats).
#define WAVEOPT_GEMMQ_P1 4
#define WAVEOPT_GEMMQ_P2 2
#define WAVEOPT_GEMMQ_P4 1
#ifndef WAVEOPT_GEMMQ_NB_BIG
#define WAVEOPT_GEMMQ_NB_BIG 4
#define WAVEOPT_GEMMQ_P_BIG 1
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

// --- 16 s32 lanes (one per panel row) as two ymm ---
struct VI {
  __m256i lo, hi;
};

WV_INLINE VI make_i(__m256i lo, __m256i hi) {
  VI v;
  v.lo = lo;
  v.hi = hi;
  return v;
}
WV_INLINE VI vi_zero() { return make_i(_mm256_setzero_si256(), _mm256_setzero_si256()); }
WV_INLINE VI vi_set1(int32_t a) {
  const __m256i x = _mm256_set1_epi32(a);
  return make_i(x, x);
}
WV_INLINE VI vi_load(const void* p) {
  const __m256i* q = (const __m256i*)p;
  return make_i(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1));
}
WV_INLINE VI vi_sub(VI a, VI b) { return make_i(_mm256_sub_epi32(a.lo, b.lo), _mm256_sub_epi32(a.hi, b.hi)); }
WV_INLINE VI vi_mullo(VI a, VI b) { return make_i(_mm256_mullo_epi32(a.lo, b.lo), _mm256_mullo_epi32(a.hi, b.hi)); }
// u8·s8 pairs summed to s16 (never saturating under the pair bound), pairs of those to s32.
WV_INLINE __m256i dot8(__m256i acc, __m256i x, __m256i w) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)));
}
WV_INLINE VI vi_dot8(VI acc, VI x, VI w) { return make_i(dot8(acc.lo, x.lo, w.lo), dot8(acc.hi, x.hi, w.hi)); }
WV_INLINE VI vi_dot16(VI acc, VI x, VI w) {
  return make_i(_mm256_add_epi32(acc.lo, _mm256_madd_epi16(x.lo, w.lo)),
                _mm256_add_epi32(acc.hi, _mm256_madd_epi16(x.hi, w.hi)));
}
WV_INLINE V vi_to_float(VI a) { return make(_mm256_cvtepi32_ps(a.lo), _mm256_cvtepi32_ps(a.hi)); }
// Rounds 16 clamped floats (half to even), adds the zero point and stores the first n
// (<= 16; more is 16) as u8 (bits 8) or s16; the packs cannot saturate on clamped values.
WV_INLINE void v_quant_store(V t, int zero, size_t n, int bits, void* out) {
  const __m256i z = _mm256_set1_epi32(zero);
  const __m256i a = _mm256_add_epi32(_mm256_cvtps_epi32(t.lo), z), b = _mm256_add_epi32(_mm256_cvtps_epi32(t.hi), z);
  const __m256i s16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);  // 16 s16 in order
  const __m128i u8 = _mm_packus_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
  if (n >= 16) {
    if (bits == 8)
      _mm_storeu_si128((__m128i*)out, u8);
    else
      _mm256_storeu_si256((__m256i*)out, s16);
    return;
  }
  alignas(32) uint8_t tmp[32];  // a ragged tail: through memory
  if (bits == 8)
    _mm_store_si128((__m128i*)tmp, u8);
  else
    _mm256_store_si256((__m256i*)tmp, s16);
  __builtin_memcpy(out, tmp, n * (bits == 8 ? 1 : 2));
}

#include "kernels_simd.inc"

}  // namespace

extern "C" const WaveoptKernels* waveopt_kernels_avx2(void) { return &kSimdTable; }
