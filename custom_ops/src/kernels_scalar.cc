// The scalar reference of every kernel: plain loops and libm, compiled without ISA flags.
// Every SIMD path is tested against these (custom_ops/tests/kernel_test.cc, tests/); the
// integer GEMM's SIMD paths must match it bit for bit (for act none and relu).
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

void gru_gates(size_t units, size_t hidden, size_t gate_pad, size_t rows, const float* gi, size_t ld_gi,
               const float* s, const float* u, const float* gx, const float* gh, size_t ld_g,
               const float* h, float* h_out, size_t ld_h, const float* add, float* sum_out) {
  const size_t H = hidden, G = gate_pad;
  for (size_t b = 0; b < rows; ++b) {
    const float* gib = gi + b * ld_gi;
    const float* ghb = gh + b * ld_g;
    const float* gxb = gx ? gx + b * ld_g : nullptr;
    for (size_t j = 0; j < units; ++j) {
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

// --- integer GEMM (formats: kernels.h) --------------------------------------------------------

void quantize(const float* x, size_t ldx, size_t rows, size_t k, size_t k_pad, const float* inv_scale,
              int zero_point, int qmin, int qmax, int bits, void* out, size_t ld_out) {
  // Clamp in float first (see kernels.h): the same as clamping the rounded integer for finite
  // inputs, and defined for inf and NaN (NaN fails both comparisons and becomes lo).
  const float lo = (float)(qmin - zero_point), hi = (float)(qmax - zero_point);
  for (size_t b = 0; b < rows; ++b) {
    for (size_t c = 0; c < k_pad; ++c) {
      int q = zero_point;
      if (c < k) {
        float t = x[b * ldx + c] * inv_scale[b];
        t = t > lo ? t : lo;
        t = t < hi ? t : hi;
        q = (int)nearbyintf(t) + zero_point;
      }
      if (bits == 8)
        ((uint8_t*)out)[b * ld_out + c] = (uint8_t)q;
      else
        ((int16_t*)out)[b * ld_out + c] = (int16_t)q;
    }
  }
}

// Y = act(((float)(Σ q·w - z·row_sum)) · (w_scale · x_scale) + bias + addend + s·u), the
// integer sums in int64 (exact; the SIMD paths' s32 sums are exact within the format's
// bounds), one panel and one batch row at a time, reading the panel in storage order.
void gemm_q(const WaveoptPackedQ* w, const void* xq, size_t ldxq, size_t rows, const float* x_scale, int x_zero,
            const float* addend, size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy) {
  const int64_t P = WAVEOPT_PANEL;
  const int64_t G = w->bits == 8 ? 4 : 2;  // inputs per 64-byte group
  const int64_t groups = w->k_pad / G;
  for (int64_t panel = 0; panel < w->n_pad / P; ++panel) {
    for (size_t b = 0; b < rows; ++b) {
      int64_t acc[WAVEOPT_PANEL] = {0};
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t base = (panel * groups + g) * P * G;  // element index of the group
        for (int64_t lane = 0; lane < P; ++lane)
          for (int64_t t = 0; t < G; ++t) {
            const int64_t c = g * G + t, i = base + lane * G + t;
            if (w->bits == 8)
              acc[lane] += (int64_t)((const uint8_t*)xq)[b * ldxq + c] * ((const int8_t*)w->w)[i];
            else
              acc[lane] += (int64_t)((const int16_t*)xq)[b * ldxq + c] * ((const int16_t*)w->w)[i];
          }
      }
      for (int64_t lane = 0; lane < P; ++lane) {
        const int64_t col = panel * P + lane;
        if (col >= w->n) break;
        int64_t d = acc[lane];
        if (w->row_sum) d -= (int64_t)x_zero * w->row_sum[col];
        float v = (float)d * (w->scale[col] * x_scale[b]);
        if (w->bias) v += w->bias[col];
        if (addend) v += addend[b * ld_add + col];
        if (s) v = fmaf(s[b], u[col], v);
        y[b * ldy + col] = apply_act(v, act);
      }
    }
  }
}

const WaveoptKernels kTable = {"scalar", gemm, gru_gates, sample_class, activate, quantize, gemm_q};

}  // namespace

extern "C" const WaveoptKernels* waveopt_kernels_scalar(void) { return &kTable; }
