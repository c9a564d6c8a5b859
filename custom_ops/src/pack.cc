#include "pack.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

namespace waveopt {

void AlignedFree::operator()(float* p) const { std::free(p); }

AlignedBuffer aligned_floats(size_t n) {
  if (n == 0) return AlignedBuffer();
  // Buffers of 2 MB and more (the weights) are 2 MB-aligned and asked to be backed by
  // transparent huge pages before they are first touched: the kernels stream them every
  // step, and with 4 KB pages that streaming misses the TLB every 4 KB (Linux's THP default
  // is "madvise", which gives huge pages only to memory that asks for them).
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = n * sizeof(float) >= kHuge ? kHuge : 64;
  const size_t bytes = (n * sizeof(float) + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (!p) return AlignedBuffer();
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  std::memset(p, 0, bytes);
  return AlignedBuffer(static_cast<float*>(p));
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

}  // namespace waveopt
