// Weights laid out once, in the order the kernels read them (see kernels.h).
#ifndef WAVEOPT_PACK_H
#define WAVEOPT_PACK_H

#include <cstdint>
#include <memory>

#include "kernels.h"

namespace waveopt {

struct AlignedFree {
  void operator()(void* p) const;
};
template <class T>
using AlignedArray = std::unique_ptr<T[], AlignedFree>;
using AlignedBuffer = AlignedArray<float>;

// `bytes` bytes, zero-filled, 64-byte aligned (2 MB-aligned and THP-advised from 2 MB up);
// nullptr if bytes is 0 or memory runs out. Free with AlignedFree.
void* aligned_zeroed(size_t bytes);

// n elements of T (a trivial type), as aligned_zeroed.
template <class T>
AlignedArray<T> aligned_array(size_t n) {
  return AlignedArray<T>(static_cast<T*>(aligned_zeroed(n * sizeof(T))));
}

// n floats, 64-byte aligned, zero-filled; nullptr if n is 0 or memory runs out.
inline AlignedBuffer aligned_floats(size_t n) { return aligned_array<float>(n); }

class PackedMatrix {
 public:
  // Packs W (n outputs × k inputs) and an optional bias [n]. `w_is_k_by_n` says W is stored
  // [k, n] (a MatMul right operand) rather than [n, k] (a Linear/GRU weight). With gates = 3
  // (GRU weights, n = 3·hidden) each gate's rows are padded to a multiple of 16 separately.
  // Returns false on allocation failure.
  bool pack(const float* w, int64_t n, int64_t k, bool w_is_k_by_n, int gates, const float* bias);

  const WaveoptPacked* view() const { return &view_; }
  const float* source() const { return source_; }
  bool empty() const { return !data_; }

 private:
  AlignedBuffer data_, bias_;
  WaveoptPacked view_{};
  const float* source_ = nullptr;
};

// A weight matrix quantized to int8 or int16 with one scale per output row, in the layout
// and with the scale rules of kernels.h (WaveoptPackedQ). Same arguments as PackedMatrix.
//
// Row scales (each row on its own; a row of zeros gets scale 0 and all-zero weights):
//   int8:  s = max over adjacent pairs (inputs 2i, 2i+1) of (|w[2i]| + |w[2i+1]|) / 126, so
//          that even with both weights rounded up a pair sums to at most 127;
//   int16: s = max(max |w| / 32767, Σ|w| / WAVEOPT_Q16_L1_MAX);
// then q = nearbyint(w / s) (in double), and if a bound still fails after rounding, s grows
// slightly and the row is quantized again, so the kernels.h bounds always hold. s is at
// least FLT_MIN (no denormal scales). Dequantized weights q·s are within s/2 of w.
class QuantizedMatrix {
 public:
  // Quantizes and packs W; returns false on allocation failure, non-finite weights, bits not
  // 8 or 16, or (int8) k > WAVEOPT_Q8_MAX_K.
  bool pack(const float* w, int64_t n, int64_t k, bool w_is_k_by_n, int gates, const float* bias, int bits);
  // Packs already-quantized weights q (row-major [n, k], int8 values when bits is 8) with
  // their row scales as given, no checks of the pair/L1 bounds (tests build edge cases).
  bool pack_quantized(const int16_t* q, const float* scales, int64_t n, int64_t k, const float* bias, int bits);

  const WaveoptPackedQ* view() const { return &view_; }
  bool empty() const { return !data_; }
  // Weight (row, c) of the packed matrix as an integer, for tests (row < n_pad, c < k_pad).
  int q_at(int64_t row, int64_t c) const;

 private:
  bool allocate(int64_t rows, int64_t k, int64_t gate_pad, const float* bias, int bits);
  void place_row(int64_t dst, const int16_t* q, float scale);

  AlignedArray<uint8_t> data_;
  AlignedArray<float> scale_, bias_;
  AlignedArray<int32_t> row_sum_;
  WaveoptPackedQ view_{};
};

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace waveopt

#endif
