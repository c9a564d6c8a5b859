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

/* One GRU cell's gate math for `rows` batch rows (PyTorch GRUCell semantics):
 *   r = σ(gi_r + s·u_r + gx_r + gh_r),  z = σ(gi_z + s·u_z + gx_z + gh_z)
 *   n = tanh(gi_n + s·u_n + gx_n + r ⊙ gh_n),  h' = (h - n) ⊙ z + n
 * gi [rows, ld_gi] with gates at columns 0, hidden, 2·hidden; u [3·hidden] (or s, u NULL);
 * gx and gh [rows, ld_g] with gates at columns 0, gate_pad, 2·gate_pad (gx may be NULL);
 * h, h_out [rows, ld_h]. With `add` non-NULL also sum_out[b] = h'[b] + add[b] ([rows, ld_h]). */
typedef void (*waveopt_gru_gates_fn)(size_t hidden, size_t gate_pad, size_t rows,
                                     const float* gi, size_t ld_gi, const float* s, const float* u,
                                     const float* gx, const float* gh, size_t ld_g,
                                     const float* h, float* h_out, size_t ld_h,
                                     const float* add, float* sum_out);

/* Inverse-CDF sample of softmax(logits[0..n)) at uniform u: #{k : cdf_k < u}, clamped to n-1.
 * scratch holds n + 16 floats. */
typedef int64_t (*waveopt_sample_class_fn)(const float* logits, size_t n, float u, float* scratch);

/* Elementwise act over n floats, in place (FusedDense's fallback path and tests). */
typedef void (*waveopt_activate_fn)(float* x, size_t n, int act);

typedef struct WaveoptKernels {
  const char* isa; /* "scalar", "avx2", "avx512" */
  waveopt_gemm_fn gemm;
  waveopt_gru_gates_fn gru_gates;
  waveopt_sample_class_fn sample_class;
  waveopt_activate_fn activate;
} WaveoptKernels;

const WaveoptKernels* waveopt_kernels_scalar(void);
const WaveoptKernels* waveopt_kernels_avx2(void);
const WaveoptKernels* waveopt_kernels_avx512(void);

#ifdef __cplusplus
}
#endif

#endif /* WAVEOPT_KERNELS_H */
