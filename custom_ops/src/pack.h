// Weights laid out once, in the order the kernels read them (see kernels.h).
#ifndef WAVEOPT_PACK_H
#define WAVEOPT_PACK_H

#include <cstdint>
#include <memory>

#include "kernels.h"

namespace waveopt {

struct AlignedFree {
  void operator()(float* p) const;
};
using AlignedBuffer = std::unique_ptr<float[], AlignedFree>;

// n floats, 64-byte aligned, zero-filled; nullptr if n is 0 or memory runs out.
AlignedBuffer aligned_floats(size_t n);

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

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace waveopt

#endif
