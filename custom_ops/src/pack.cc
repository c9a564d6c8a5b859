// Weight packing, float and quantized (layouts and scale rules: kernels.h, pack.h).
#include "pack.h"

#include <sys/mman.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace waveopt {

void AlignedFree::operator()(void* p) const { std::free(p); }

void* aligned_zeroed(size_t bytes) {
  if (bytes == 0) return nullptr;
  // Buffers of 2 MB and more (the weights) are 2 MB-aligned and asked to be backed by
  // transparent huge pages before they are first touched: the kernels stream them every
  // step, and with 4 KB pages that streaming misses the TLB every 4 KB (Linux's THP default
  // is "madvise", which gives huge pages only to memory that asks for them).
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  const size_t padded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, padded);
  if (!p) return nullptr;
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, padded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  std::memset(p, 0, padded);
  return p;
}

bool PackedMatrix::pack(const float* w, int64_t n, int64_t k, bool w_is_k_by_n, int gates,
                        const float* bias) {
  const int64_t P = WAVEOPT_PANEL;
  const int64_t per_gate = n / gates;
  const int64_t gate_pad = gates > 1 ? round_up(per_gate, P) : 0;
  const int64_t rows = gates > 1 ? gates * gate_pad : n;  // rows a kernel stores
  const int64_t n_pad = round_up(rows, P);
  data_ = aligned_floats(static_cast<size_t>(n_pad * (k > 0 ? k : 1)));
  if (!data_) return false;
  bias_.reset();
  if (bias) {
    bias_ = aligned_floats(static_cast<size_t>(n_pad));
    if (!bias_) return false;
  }
  float* out = data_.get();
  if (w_is_k_by_n && gates == 1) {
    // [k, n]: panel p at input c is W[c, 16p .. 16p+15], already contiguous.
    for (int64_t p = 0; p < n_pad / P; ++p) {
      const int64_t cols = n - p * P < P ? n - p * P : P;
      for (int64_t c = 0; c < k; ++c) std::memcpy(out + (p * k + c) * P, w + c * n + p * P, cols * sizeof(float));
    }
    if (bias) std::memcpy(bias_.get(), bias, n * sizeof(float));
  } else {
    for (int64_t row = 0; row < n; ++row) {
      // Packed row of source row `row`.
      const int64_t dst = gates > 1 ? (row / per_gate) * gate_pad + row % per_gate : row;
      float* panel = out + (dst / P) * k * P + dst % P;
      if (w_is_k_by_n) {
        for (int64_t c = 0; c < k; ++c) panel[c * P] = w[c * n + row];
      } else {
        const float* src = w + row * k;
        for (int64_t c = 0; c < k; ++c) panel[c * P] = src[c];
      }
      if (bias) bias_[dst] = bias[row];
    }
  }
  view_.n = rows;
  view_.n_pad = n_pad;
  view_.k = k;
  view_.gate_pad = gate_pad;
  view_.w = data_.get();
  view_.bias = bias ? bias_.get() : nullptr;
  source_ = w;
  return true;
}

// --- quantized matrices ----------------------------------------------------------------------

namespace {

// Inputs per 64-byte group of a panel: 4 s8 or 2 s16 weights for each of the 16 rows.
int64_t group_inputs(int bits) { return bits == 8 ? 4 : 2; }

// Element index of weight (row, c) in the panels of a matrix with k_pad inputs.
int64_t q_index(int64_t row, int64_t c, int64_t k_pad, int bits) {
  const int64_t G = group_inputs(bits), P = WAVEOPT_PANEL;
  return ((row / P * (k_pad / G) + c / G) * P + row % P) * G + c % G;
}

// Do the quantized weights q[0..k) meet the bounds of kernels.h?
bool within_bounds(const int16_t* q, int64_t k, int bits) {
  if (bits == 8) {
    for (int64_t c = 0; c < k; c += 2) {
      const int a = std::abs(q[c]), b = c + 1 < k ? std::abs(q[c + 1]) : 0;
      if (a + b > 127) return false;
    }
    return true;
  }
  int64_t l1 = 0;
  for (int64_t c = 0; c < k; ++c) l1 += std::abs(q[c]);
  return l1 <= WAVEOPT_Q16_L1_MAX;
}

// Quantizes one row w[0..k) (finite) to q with the scale rules of pack.h; returns the scale.
float quantize_row(const float* w, int64_t k, int bits, int16_t* q) {
  double bound = 0.0;  // the scale before rounding, in double
  if (bits == 8) {
    for (int64_t c = 0; c < k; c += 2) {
      const double pair = std::fabs((double)w[c]) + (c + 1 < k ? std::fabs((double)w[c + 1]) : 0.0);
      bound = pair > bound ? pair : bound;
    }
    bound /= 126.0;
  } else {
    double max_abs = 0.0, l1 = 0.0;
    for (int64_t c = 0; c < k; ++c) {
      const double a = std::fabs((double)w[c]);
      max_abs = a > max_abs ? a : max_abs;
      l1 += a;
    }
    bound = std::fmax(max_abs / 32767.0, l1 / WAVEOPT_Q16_L1_MAX);
  }
  if (bound == 0.0) {  // a row of zeros: scale 0, no division
    for (int64_t c = 0; c < k; ++c) q[c] = 0;
    return 0.0f;
  }
  float scale = std::fmax((float)bound, FLT_MIN);
  if ((double)scale < bound) scale = std::nextafter(scale, FLT_MAX);  // never below the bound
  for (;;) {
    for (int64_t c = 0; c < k; ++c) q[c] = (int16_t)std::nearbyint((double)w[c] / (double)scale);
    if (within_bounds(q, k, bits)) return scale;
    scale *= 1.0f + 1.0f / 4096.0f;  // rounding pushed a bound over: a slightly coarser scale
  }
}

}  // namespace

int QuantizedMatrix::q_at(int64_t row, int64_t c) const {
  const int64_t i = q_index(row, c, view_.k_pad, view_.bits);
  return view_.bits == 8 ? (int)reinterpret_cast<const int8_t*>(data_.get())[i]
                         : (int)reinterpret_cast<const int16_t*>(data_.get())[i];
}

bool QuantizedMatrix::allocate(int64_t rows, int64_t k, int64_t gate_pad, const float* bias, int bits) {
  if ((bits != 8 && bits != 16) || k < 0 || (bits == 8 && k > WAVEOPT_Q8_MAX_K)) return false;
  const int64_t n_pad = round_up(rows, WAVEOPT_PANEL), k_pad = round_up(k, group_inputs(bits));
  data_ = aligned_array<uint8_t>(static_cast<size_t>(n_pad * (k_pad > 0 ? k_pad : 4) * (bits / 8)));
  scale_ = aligned_array<float>(static_cast<size_t>(n_pad > 0 ? n_pad : 1));
  row_sum_.reset();
  if (bits == 8) row_sum_ = aligned_array<int32_t>(static_cast<size_t>(n_pad > 0 ? n_pad : 1));
  bias_.reset();
  if (bias) bias_ = aligned_array<float>(static_cast<size_t>(n_pad > 0 ? n_pad : 1));
  if (!data_ || !scale_ || (bits == 8 && !row_sum_) || (bias && !bias_)) {
    data_.reset();
    return false;
  }
  view_.n = rows;
  view_.n_pad = n_pad;
  view_.k = k;
  view_.gate_pad = gate_pad;
  view_.k_pad = k_pad;
  view_.bits = bits;
  view_.w = data_.get();
  view_.scale = scale_.get();
  view_.row_sum = row_sum_.get();
  view_.bias = bias_.get();
  return true;
}

void QuantizedMatrix::place_row(int64_t dst, const int16_t* q, float scale) {
  int32_t sum = 0;
  for (int64_t c = 0; c < view_.k; ++c) {
    const int64_t i = q_index(dst, c, view_.k_pad, view_.bits);
    if (view_.bits == 8)
      reinterpret_cast<int8_t*>(data_.get())[i] = (int8_t)q[c];
    else
      reinterpret_cast<int16_t*>(data_.get())[i] = q[c];
    sum += q[c];
  }
  scale_[dst] = scale;
  if (row_sum_) row_sum_[dst] = sum;
}

bool QuantizedMatrix::pack(const float* w, int64_t n, int64_t k, bool w_is_k_by_n, int gates, const float* bias,
                           int bits) {
  for (int64_t i = 0; i < n * k; ++i)
    if (!std::isfinite(w[i])) return false;
  // Rows as PackedMatrix::pack places them: gates > 1 pads each gate to a panel boundary.
  const int64_t P = WAVEOPT_PANEL;
  const int64_t per_gate = n / gates;
  const int64_t gate_pad = gates > 1 ? round_up(per_gate, P) : 0;
  const int64_t rows = gates > 1 ? gates * gate_pad : n;
  if (!allocate(rows, k, gate_pad, bias, bits)) return false;
  std::vector<float> src(static_cast<size_t>(k));
  std::vector<int16_t> q(static_cast<size_t>(k));
  for (int64_t row = 0; row < n; ++row) {
    const int64_t dst = gates > 1 ? (row / per_gate) * gate_pad + row % per_gate : row;
    for (int64_t c = 0; c < k; ++c) src[c] = w_is_k_by_n ? w[c * n + row] : w[row * k + c];
    place_row(dst, q.data(), quantize_row(src.data(), k, bits, q.data()));
    if (bias) bias_[dst] = bias[row];
  }
  return true;
}

bool QuantizedMatrix::pack_quantized(const int16_t* q, const float* scales, int64_t n, int64_t k, const float* bias,
                                     int bits) {
  if (!allocate(n, k, 0, bias, bits)) return false;
  for (int64_t row = 0; row < n; ++row) {
    place_row(row, q + row * k, scales[row]);
    if (bias) bias_[row] = bias[row];
  }
  return true;
}

}  // namespace waveopt
