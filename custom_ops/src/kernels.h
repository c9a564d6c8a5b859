/* The kernels every instruction set provides, as one plain C table per ISA.
 *
 * This header holds only declarations and plain structs: it is included by code compiled
 * with AVX-512 flags and by code compiled without any, so nothing inline may live here
 * (an inline function emitted by an AVX-512 translation unit could be the copy the linker
 * keeps for everybody, and SIGILL on a CPU without AVX-512).
 *
 * Weight layout (shared by all ISAs, built once by pack.cc): a matrix with n outputs and
 * k inputs is stored as n_pad/16 panels of 16 output rows; panel p holds, for k = 0..k-1,
 * the 16 weights W[16p .. 16p+15][k] contiguously, so a kernel streams each panel once and
 * multiplies one 16-wide weight vector by one broadcast input per k. Rows past n are zero.
 * GRU matrices are padded per gate (see WaveoptPacked::gate_pad) so each gate's block
 * starts on a panel boundary.
 *
 * Numerics of the SIMD paths (kernels_simd.inc), measured by `waveopt_kernel_test accuracy`
 * against double-precision libm over dense grids (identical for AVX2 and AVX-512):
 *   exp:     max relative error 1.2e-7 on [-87, 88], step 1e-3 (Cephes-style: x = n·ln2 + r,
 *            degree-6 polynomial in r; inputs clamped to [-87.34, 88])
 *   sigmoid: 1 / (1 + exp(-x)), max abs error 8.9e-8 on [-20, 20], step 1e-4
 *   tanh:    1 - 2 / (1 + exp(2x)), max abs error 1.8e-7 on [-20, 20], step 1e-4 (absolute:
 *            near 0 the relative error grows, which cannot matter where tanh feeds a convex
 *            mix of bounded values; the whole loop's logits stay within ~1e-6 of the scalar
 *            reference's, far inside the 1e-4 the tests allow)
 * The scalar reference uses libm (expf, tanhf) and plain loops; it is the ground truth the
 * other paths are tested against.
 */
#ifndef WAVEOPT_KERNELS_H
#define WAVEOPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WAVEOPT_PANEL 16 /* rows per weight panel, for every ISA */

enum WaveoptActivation {
  WAVEOPT_ACT_NONE = 0,
  WAVEOPT_ACT_RELU = 1,
  WAVEOPT_ACT_TANH = 2,
  WAVEOPT_ACT_SIGMOID = 3,
  WAVEOPT_ACT_EXP = 4, /* activate() only: lets tests measure the exp the sampler uses */
};

/* A packed weight matrix (see the layout above); it does not own its memory. */
typedef struct WaveoptPacked {
  int64_t n;        /* output columns a kernel stores (3·gate_pad for GRU matrices) */
  int64_t n_pad;    /* n rounded up to WAVEOPT_PANEL: rows in the panels */
  int64_t k;        /* inputs */
  int64_t gate_pad; /* GRU: each of the 3 gates' rows padded to this (0: not a GRU matrix) */
  const float* w;   /* n_pad/16 panels of k·16 floats, 64-byte aligned */
  const float* bias; /* n_pad floats (zero past the real rows), or NULL for no bias */
} WaveoptPacked;

/* Y[b, :n] = act(W·X[b] + bias + addend[b] + s[b]·u) for b < rows.
 * X [rows, ldx] (its first k columns are read), addend [rows, ld_add] or NULL,
 * s [rows] and u [n] both or neither. Y [rows, ldy] with ldy >= n; only columns < n are written. */
typedef void (*waveopt_gemm_fn)(const WaveoptPacked* w, const float* x, size_t ldx, size_t rows,
                                const float* addend, size_t ld_add, const float* s, const float* u,
                                int act, float* y, size_t ldy);

/* One GRU cell's gate math for `units` hidden units of `rows` batch rows (PyTorch GRUCell
 * semantics):
 *   r = σ(gi_r + s·u_r + gx_r + gh_r),  z = σ(gi_z + s·u_z + gx_z + gh_z)
 *   n = tanh(gi_n + s·u_n + gx_n + r ⊙ gh_n),  h' = (h - n) ⊙ z + n
 * gi [rows, ld_gi] with gates at columns 0, hidden, 2·hidden; u with gates at 0, hidden,
 * 2·hidden (or s, u NULL); gx and gh [rows, ld_g] with gates at columns 0, gate_pad,
 * 2·gate_pad (gx may be NULL); h, h_out [rows, ld_h]. With `add` non-NULL also
 * sum_out[b] = h'[b] + add[b] ([rows, ld_h]). units = hidden is the whole cell; a thread
 * team's member passes its own units (pointers offset to its first unit, a multiple of 16). */
typedef void (*waveopt_gru_gates_fn)(size_t units, size_t hidden, size_t gate_pad, size_t rows,
                                     const float* gi, size_t ld_gi, const float* s, const float* u,
                                     const float* gx, const float* gh, size_t ld_g,
                                     const float* h, float* h_out, size_t ld_h,
                                     const float* add, float* sum_out);

/* Inverse-CDF sample of softmax(logits[0..n)) at uniform u: #{k : cdf_k < u}, clamped to n-1.
 * scratch holds n + 16 floats. */
typedef int64_t (*waveopt_sample_class_fn)(const float* logits, size_t n, float u, float* scratch);

/* Elementwise act over n floats, in place (FusedDense's fallback path and tests). */
typedef void (*waveopt_activate_fn)(float* x, size_t n, int act);

/* --- integer (quantized) GEMM ---------------------------------------------------------------
 *
 * Formats (identical for every ISA, so a quantized model gives bit-identical GEMM outputs on
 * every machine; built once by pack.cc's QuantizedMatrix):
 *
 * int8:  weights s8, one float scale per output row; activations u8 with a zero point
 *        (128 for signed inputs, quantized to [1, 255]; 0 for non-negative ones, [0, 255]).
 *        Packed as n_pad/16 panels; panel p holds, for each group g of 4 inputs
 *        (k_pad = k rounded up to 4), 64 bytes: row 16p+r's weights for inputs 4g..4g+3 at
 *        bytes 4r..4r+3. Each row's scale is chosen (QuantizedMatrix::pack: the largest
 *        pair sum / 126, checked after rounding) so that no adjacent pair
 *        (inputs 2i, 2i+1) has |w[2i]| + |w[2i+1]| > 127: then vpmaddubsw (u8 × s8 pairs summed
 *        into s16 with saturation) never saturates, 255·127 = 32385 < 32767, and the AVX2,
 *        AVX-512BW and VNNI (vpdpbusd) paths compute the same exact integer sums.
 *        row_sum[j] = Σ_k w[j][k] lets a kernel remove the zero point: Σ x·w = Σ q·w - z·row_sum.
 * int16: weights s16, one float scale per row, activations s16 symmetric in
 *        [-WAVEOPT_Q16_MAX, WAVEOPT_Q16_MAX] (12 bits). Packed like int8 but with groups of 2
 *        inputs (k_pad = k rounded up to 2): 64 bytes per group = row 16p+r's two s16 weights
 *        at bytes 4r..4r+3. Each row's scale also bounds Σ_k |w_q| · WAVEOPT_Q16_MAX <= 2^31 - 1
 *        (Σ|w_q| <= WAVEOPT_Q16_L1_MAX; pack: max(max|w| / 32767, Σ|w| / L1_MAX), checked
 *        after rounding), so the s32 accumulation (vpmaddwd or vpdpwssd) can never overflow.
 * A row of zeros has scale 0. Rows past n (and padding rows of GRU gates) have zero weights
 * and scale 0; inputs k..k_pad-1 have zero weights (and the zero point as activation).
 *
 * Output: y[b, j] = act(((float)(acc[b][j] - z·row_sum[j])) · (w_scale[j] · x_scale[b])
 *                        + bias[j] + addend[b, j] + s[b]·u[j])   (in this order; the last term
 * is one fmaf), so every ISA rounds identically to the scalar reference. */

#define WAVEOPT_Q16_MAX 4095
/* int16: the largest Σ_k |w_q| of a row, floor((2^31 - 1) / WAVEOPT_Q16_MAX). */
#define WAVEOPT_Q16_L1_MAX 524415
/* int8: the largest k, so that Σ q·w (|q| <= 255, pairs of |w| summing to <= 127) and
 * z·row_sum fit in s32: 255·127·(k/2) < 2^31. */
#define WAVEOPT_Q8_MAX_K 131072

typedef struct WaveoptPackedQ {
  int64_t n, n_pad, k, gate_pad; /* as in WaveoptPacked */
  int64_t k_pad;                 /* k rounded up to 4 (int8) or 2 (int16) */
  int bits;                      /* 8 or 16 */
  const void* w;                 /* int8_t or int16_t panels, 64-byte aligned */
  const float* scale;            /* n_pad per-row scales (0 past n) */
  const int32_t* row_sum;        /* int8: n_pad row sums of the s8 weights; int16: NULL */
  const float* bias;             /* n_pad floats or NULL */
} WaveoptPackedQ;

/* Quantizes rows × k floats: q = clamp(nearbyint(x·inv_scale[b]) + zero_point, qmin, qmax)
 * (x·inv_scale one float multiply, round half to even), written as u8 (bits 8) or s16
 * (bits 16) into out [rows, ld_out] (ld_out in elements), with columns k..k_pad-1 set to
 * zero_point. qmin <= zero_point <= qmax must fit the output type. Every ISA clamps in float
 * before rounding (t = x·inv_scale; t = t > lo ? t : lo; t = t < hi ? t : hi with
 * lo = qmin - zero_point, hi = qmax - zero_point), which equals the formula above for all
 * finite x, gives qmax for +inf and huge x, qmin for -inf, and qmin for NaN, bit-identically. */
typedef void (*waveopt_quantize_fn)(const float* x, size_t ldx, size_t rows, size_t k, size_t k_pad,
                                    const float* inv_scale, int zero_point, int qmin, int qmax, int bits,
                                    void* out, size_t ld_out);

/* Y = act(dequantized W·X + bias + addend + s·u) as described above; xq [rows, ldxq] holds
 * u8 (int8 matrices) or s16 (int16) activations from quantize() (k_pad columns are read),
 * x_scale [rows] their scales, x_zero the zero point they were quantized with (ignored for
 * int16, which has no row_sum). Other arguments as gemm. Integer sums are exact whenever the
 * bounds above hold (weights from QuantizedMatrix::pack, activations in range); relu and none
 * then give bit-identical floats on every ISA, tanh and sigmoid are as close as gemm's. */
typedef void (*waveopt_gemm_q_fn)(const WaveoptPackedQ* w, const void* xq, size_t ldxq, size_t rows,
                                  const float* x_scale, int x_zero, const float* addend, size_t ld_add,
                                  const float* s, const float* u, int act, float* y, size_t ldy);

typedef struct WaveoptKernels {
  const char* isa; /* "scalar", "avx2", "avx512", "avx512vnni" */
  waveopt_gemm_fn gemm;
  waveopt_gru_gates_fn gru_gates;
  waveopt_sample_class_fn sample_class;
  waveopt_activate_fn activate;
  waveopt_quantize_fn quantize;
  waveopt_gemm_q_fn gemm_q; /* int8 and int16 */
} WaveoptKernels;

const WaveoptKernels* waveopt_kernels_scalar(void);
const WaveoptKernels* waveopt_kernels_avx2(void);
const WaveoptKernels* waveopt_kernels_avx512(void);
/* The AVX-512 table with the int8 GEMM on VNNI (vpdpbusd); its own translation unit. */
const WaveoptKernels* waveopt_kernels_avx512vnni(void);

#ifdef __cplusplus
}
#endif

#endif /* WAVEOPT_KERNELS_H */
