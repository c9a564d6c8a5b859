#include "linear.h"

#include <cmath>

namespace waveopt {

WaveoptPacked slice_rows(const WaveoptPacked& w, int64_t row0, int64_t rows, int64_t real_rows) {
  WaveoptPacked v = w;
  v.n = real_rows - row0 < rows ? (real_rows - row0 > 0 ? real_rows - row0 : 0) : rows;
  v.n_pad = rows;
  v.gate_pad = 0;
  v.w = w.w + row0 * w.k;  // panel p starts at p·16·k floats
  v.bias = w.bias ? w.bias + row0 : nullptr;
  return v;
}

WaveoptPackedQ slice_rows(const WaveoptPackedQ& w, int64_t row0, int64_t rows, int64_t real_rows) {
  WaveoptPackedQ v = w;
  v.n = real_rows - row0 < rows ? (real_rows - row0 > 0 ? real_rows - row0 : 0) : rows;
  v.n_pad = rows;
  v.gate_pad = 0;
  // A panel is k_pad·16 weights of bits/8 bytes (int8: k_pad/4 groups of 64 bytes; int16: k_pad/2).
  v.w = static_cast<const uint8_t*>(w.w) + row0 * w.k_pad * (w.bits / 8);
  v.scale = w.scale + row0;
  v.row_sum = w.row_sum ? w.row_sum + row0 : nullptr;
  v.bias = w.bias ? w.bias + row0 : nullptr;
  return v;
}

void StepVector::publish(const WaveoptKernels* kt, size_t rows, Range panels) const {
  if (!q.bits || panels.size() <= 0) return;
  const int64_t c0 = panels.begin * WAVEOPT_PANEL;
  const int64_t c1 = panels.end * WAVEOPT_PANEL < k ? panels.end * WAVEOPT_PANEL : k;
  if (c0 >= c1) return;
  const int64_t pad_end = c1 == k ? k_pad : c1;
  const size_t es = q.bits == 8 ? 1 : 2;
  kt->quantize(f + c0, ld, rows, static_cast<size_t>(c1 - c0), static_cast<size_t>(pad_end - c0), q.inv_scale,
               q.zero, q.qmin, q.qmax, q.bits, static_cast<uint8_t*>(q.q) + c0 * es, q.ld);
}

std::string Linear::pack(const float* w, int64_t n, int64_t k, bool w_is_k_by_n, int gates, const float* bias,
                         int bits) {
  bits_ = bits;
  gates_ = gates;
  n_ = n;
  k_ = k;
  rows_per_gate_ = gates == 3 ? round_up(n / 3, WAVEOPT_PANEL) : round_up(n, WAVEOPT_PANEL);
  if (n < 1) return "has no output rows (N = 0)";
  if (bits) {
    for (int64_t i = 0; i < n * k; ++i)
      if (!std::isfinite(w[i]))
        return "weights hold NaN or Inf (element " + std::to_string(i) + "), which " + std::to_string(bits) +
               "-bit quantization cannot represent";
    if (bits == 8 && k > WAVEOPT_Q8_MAX_K)
      return "int8 needs K <= " + std::to_string(WAVEOPT_Q8_MAX_K) + ", got " + std::to_string(k);
    if (!q_.pack(w, n, k, w_is_k_by_n, gates, bias, bits)) return "out of memory packing weights";
  } else if (!f_.pack(w, n, k, w_is_k_by_n, gates, bias)) {
    return "out of memory packing weights";
  }
  return std::string();
}

int64_t Linear::k_pad() const { return bits_ ? q_.view()->k_pad : k_; }

void Linear::compute(const WaveoptKernels* kt, const StepVector& x, size_t rows, Range panels, const float* addend,
                     size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy) const {
  compute_impl(kt, x, rows, panels, addend, ld_add, s, u, act, y, ldy, false, nullptr);
}

void Linear::compute(const WaveoptKernels* kt, const StepVector& x, size_t rows, Range panels, const float* addend,
                     size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy,
                     const float* bias) const {
  compute_impl(kt, x, rows, panels, addend, ld_add, s, u, act, y, ldy, true, bias);
}

void Linear::compute_impl(const WaveoptKernels* kt, const StepVector& x, size_t rows, Range panels,
                          const float* addend, size_t ld_add, const float* s, const float* u, int act, float* y,
                          size_t ldy, bool override_bias, const float* bias) const {
  if (panels.size() <= 0 || rows == 0) return;
  const int64_t gate_rows = rows_per_gate_, count = panels.size() * WAVEOPT_PANEL;
  for (int g = 0; g < gates_; ++g) {
    const int64_t row0 = g * gate_rows + panels.begin * WAVEOPT_PANEL;
    // GRU gates write their padding rows too (as the whole matrix does); others stop at n.
    const int64_t real_end = gates_ == 3 ? (g + 1) * gate_rows : n_;
    const float* add = addend ? addend + row0 : nullptr;
    const float* uu = u ? u + row0 : nullptr;
    if (bits_) {
      WaveoptPackedQ v = slice_rows(*q_.view(), row0, count, real_end);
      if (override_bias) v.bias = bias ? bias + row0 : nullptr;
      if (v.n > 0)
        kt->gemm_q(&v, x.q.q, x.q.ld, rows, x.q.scale, x.q.zero, add, ld_add, s, uu, act, y + row0, ldy);
    } else {
      WaveoptPacked v = slice_rows(*f_.view(), row0, count, real_end);
      if (override_bias) v.bias = bias ? bias + row0 : nullptr;
      if (v.n > 0) kt->gemm(&v, x.f, x.ld, rows, add, ld_add, s, uu, act, y + row0, ldy);
    }
  }
}

}  // namespace waveopt
