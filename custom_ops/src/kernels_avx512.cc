// AVX-512 (F/BW/VL) + FMA kernels: the 16-float vector type for kernels_simd.inc, and the
// 16-lane s32 type of its integer GEMM (int8: vpmaddubsw + vpmaddwd with ones + vpaddd;
// int16: vpmaddwd + vpaddd).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mfma and nothing else; everything here
// has internal linkage, and only waveopt_kernels_avx512() is visible outside.
//
// kernels_avx512vnni.cc defines WAVEOPT_AVX512_VNNI and includes this file, compiled with
// -mavx512vnni as well: the same kernels, but the integer dot products on vpdpbusd and
// vpdpwssd, and the table waveopt_kernels_avx512vnni() (isa "avx512vnni") instead.
#include <immintrin.h>

#include "kernels.h"

#ifdef WAVEOPT_AVX512_VNNI
#ifndef __AVX512VNNI__
#error "kernels_avx512vnni.cc must be compiled with -mavx512vnni"
#endif
#define WAVEOPT_SIMD_ISA "avx512vnni"
#else
#define WAVEOPT_SIMD_ISA "avx512"
#endif
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
// The same for the integer GEMM. 16 rows at 512×512 and 1536×512 on a Xeon (Sapphire
// Rapids class): without VNNI (3 uops per 64 int8 MACs, port-bound) 8×3, 8×2 and 4×4 are
// within noise; with VNNI 8 rows × 2 panels gave ~420 int8 GOP/s against ~340 for 8×3.
#define WAVEOPT_GEMMQ_P1 8
#define WAVEOPT_GEMMQ_P2 6
#define WAVEOPT_GEMMQ_P4 4
#ifndef WAVEOPT_GEMMQ_NB_BIG
#define WAVEOPT_GEMMQ_NB_BIG 8
#ifdef WAVEOPT_AVX512_VNNI
#define WAVEOPT_GEMMQ_P_BIG 2
#else
#define WAVEOPT_GEMMQ_P_BIG 3
#endif
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

// --- 16 s32 lanes (one per panel row) ---
typedef __m512i VI;

WV_INLINE VI vi_zero() { return _mm512_setzero_si512(); }
WV_INLINE VI vi_set1(int32_t a) { return _mm512_set1_epi32(a); }
WV_INLINE VI vi_load(const void* p) { return _mm512_loadu_si512(p); }
WV_INLINE VI vi_sub(VI a, VI b) { return _mm512_sub_epi32(a, b); }
WV_INLINE VI vi_mullo(VI a, VI b) { return _mm512_mullo_epi32(a, b); }
#ifdef WAVEOPT_AVX512_VNNI
// One instruction each; exact sums (no intermediate s16 saturation at all).
WV_INLINE VI vi_dot8(VI acc, VI x, VI w) { return _mm512_dpbusd_epi32(acc, x, w); }
WV_INLINE VI vi_dot16(VI acc, VI x, VI w) { return _mm512_dpwssd_epi32(acc, x, w); }
#else
// u8·s8 pairs summed to s16 (never saturating under the pair bound), pairs of those to s32.
WV_INLINE VI vi_dot8(VI acc, VI x, VI w) {
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(x, w), _mm512_set1_epi16(1)));
}
WV_INLINE VI vi_dot16(VI acc, VI x, VI w) { return _mm512_add_epi32(acc, _mm512_madd_epi16(x, w)); }
#endif
WV_INLINE V vi_to_float(VI a) { return _mm512_cvtepi32_ps(a); }
// Rounds 16 clamped floats (half to even), adds the zero point and stores the first n
// (<= 16; more is 16) as u8 (bits 8) or s16 with a masked narrowing store.
WV_INLINE void v_quant_store(V t, int zero, size_t n, int bits, void* out) {
  const VI q = _mm512_add_epi32(_mm512_cvtps_epi32(t), _mm512_set1_epi32(zero));
  if (bits == 8)
    _mm512_mask_cvtepi32_storeu_epi8(out, tail_mask(n), q);
  else
    _mm512_mask_cvtepi32_storeu_epi16(out, tail_mask(n), q);
}

#include "kernels_simd.inc"

}  // namespace

#ifdef WAVEOPT_AVX512_VNNI
extern "C" const WaveoptKernels* waveopt_kernels_avx512vnni(void) { return &kSimdTable; }
#else
extern "C" const WaveoptKernels* waveopt_kernels_avx512(void) { return &kSimdTable; }
#endif
