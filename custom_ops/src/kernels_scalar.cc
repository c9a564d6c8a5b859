// The scalar reference of every kernel: plain loops and libm, compiled without ISA flags.
// Every SIMD path is tested against these (custom_ops/tests/kernel_test.cc, tests/).
#include <math.h>

#include "kernels.h"

namespace {

float apply_act(float v, int act) {
  switch (act) {
    case WAVEOPT_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case WAVEOPT_ACT_TANH: return tanhf(v);
    case WAVEOPT_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case WAVEOPT_ACT_EXP: return expf(v);
    default: return v;
  }
}

float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// Y = act(W·X + bias + addend + s·u), one panel of 16 output rows at a time, reading the
// panel in the order it is stored (k-major, 16 rows per k), for up to 4 batch rows at once
// (independent sums, so the compiler can overlap them).
void gemm(const WaveoptPacked* w, const float* x, size_t ldx, size_t rows, const float* addend,
          size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy) {
  const int64_t P = WAVEOPT_PANEL;
  const size_t R = 4;
  for (int64_t panel = 0; panel < w->n_pad / P; ++panel) {
    const float* wp = w->w + panel * w->k * P;
    for (size_t b0 = 0; b0 < rows; b0 += R) {
      const size_t nb = rows - b0 < R ? rows - b0 : R;
      float acc[4][WAVEOPT_PANEL] = {{0.0f}};
      for (int64_t c = 0; c < w->k; ++c) {
        const float* wc = wp + c * P;
        for (size_t j = 0; j < R; ++j) {
          const float xv = j < nb ? x[(b0 + j) * ldx + c] : 0.0f;
          for (int64_t lane = 0; lane < P; ++lane) acc[j][lane] += wc[lane] * xv;
        }
      }
      for (size_t j = 0; j < nb; ++j) {
        const size_t b = b0 + j;
        for (int64_t lane = 0; lane < P; ++lane) {
          const int64_t col = panel * P + lane;
          if (col >= w->n) break;
          float v = acc[j][lane];
          if (w->bias) v += w->bias[col];
          if (addend) v += addend[b * ld_add + col];
          if (s) v += s[b] * u[col];
          y[b * ldy + col] = apply_act(v, act);
        }
      }
    }
  }
}

void gru_gates(size_t hidden, size_t gate_pad, size_t rows, const float* gi, size_t ld_gi,
               const float* s, const float* u, const float* gx, const float* gh, size_t ld_g,
               const float* h, float* h_out, size_t ld_h, const float* add, float* sum_out) {
  const size_t H = hidden, G = gate_pad;
  for (size_t b = 0; b < rows; ++b) {
    const float* gib = gi + b * ld_gi;
    const float* ghb = gh + b * ld_g;
    const float* gxb = gx ? gx + b * ld_g : nullptr;
    for (size_t j = 0; j < H; ++j) {
      float in_r = gib[j], in_z = gib[H + j], in_n = gib[2 * H + j];
      if (s) {
        in_r += s[b] * u[j];
        in_z += s[b] * u[H + j];
        in_n += s[b] * u[2 * H + j];
      }
      if (gxb) {
        in_r += gxb[j];
        in_z += gxb[G + j];
        in_n += gxb[2 * G + j];
      }
      const float r = sigmoid(in_r + ghb[j]);
      const float z = sigmoid(in_z + ghb[G + j]);
      const float n = tanhf(in_n + r * ghb[2 * G + j]);
      const float hp = h[b * ld_h + j];
      const float out = (hp - n) * z + n;
      h_out[b * ld_h + j] = out;
      if (add) sum_out[b * ld_h + j] = out + add[b * ld_h + j];
    }
  }
}

int64_t sample_class(const float* logits, size_t n, float u, float* scratch) {
  float m = logits[0];
  for (size_t i = 1; i < n; ++i) m = logits[i] > m ? logits[i] : m;
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    scratch[i] = expf(logits[i] - m);
    total += scratch[i];
  }
  // #{k : cdf_k < u} for a nondecreasing cdf is the first k with cdf_k >= u.
  const double target = (double)u * total;
  double prefix = 0.0;
  for (size_t i = 0; i < n; ++i) {
    prefix += scratch[i];
    if (prefix >= target) return (int64_t)i;
  }
  return (int64_t)n - 1;
}

void activate(float* x, size_t n, int act) {
  for (size_t i = 0; i < n; ++i) x[i] = apply_act(x[i], act);
}

const WaveoptKernels kTable = {"scalar", gemm, gru_gates, sample_class, activate};

}  // namespace

extern "C" const WaveoptKernels* waveopt_kernels_scalar(void) { return &kTable; }
