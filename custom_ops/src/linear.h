// One matrix abstraction for float32, int16 and int8 weights (like Opus dnn's LinearLayer and
// compute_linear): the step body of the loop and FusedDense call Linear::compute and never
// ask which precision they run. Shared code (no ISA flags): it only calls a kernel table.
//
// Row slices: compute() takes a range of 16-row panels (per gate for GRU matrices), so a
// member of a thread team computes exactly its own output rows with the same kernel and the
// same per-element summation order as the whole matrix (kernels.h: every output is one FMA
// chain, or one exact integer sum, over k): slicing never changes a bit of the result.
#ifndef WAVEOPT_LINEAR_H
#define WAVEOPT_LINEAR_H

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels.h"
#include "pack.h"
#include "thread_team.h"

namespace waveopt {

// The view of output rows [row0, row0 + rows) of a packed matrix (row0 a multiple of 16):
// its own panels, scales, row sums and bias, no gate padding; n clipped to the real rows.
WaveoptPacked slice_rows(const WaveoptPacked& w, int64_t row0, int64_t rows, int64_t real_rows);
WaveoptPackedQ slice_rows(const WaveoptPackedQ& w, int64_t row0, int64_t rows, int64_t real_rows);

// Integer inputs of a product: quantized copies of a float vector with a fixed per-row scale.
struct QuantizedInput {
  void* q = nullptr;  // [rows, ld] u8 (bits 8) or s16 (bits 16)
  size_t ld = 0;      // elements
  int zero = 0, qmin = 0, qmax = 0, bits = 0;
  const float* inv_scale = nullptr;  // [rows]
  const float* scale = nullptr;      // [rows]
};

// A vector the step passes from one product to the next: floats [rows, ld], and for integer
// weights also their quantized copy (QuantizedInput) that the next product reads. `k` and
// `k_pad` are what the consuming products read (every consumer of one vector has the same k).
struct StepVector {
  float* f = nullptr;
  size_t ld = 0;
  QuantizedInput q;  // bits 0: float32 weights, nothing to quantize
  int64_t k = 0, k_pad = 0;

  // Quantizes the columns of `panels` (16 columns each; the range that reaches the end also
  // writes the k..k_pad padding). Elementwise, so a slice equals the same columns of a
  // whole-vector quantize bit for bit. Nothing to do for float32.
  void publish(const WaveoptKernels* kt, size_t rows, Range panels) const;
};

class Linear {
 public:
  // Packs W (n outputs × k inputs, [k, n] when w_is_k_by_n) with an optional bias [n] as
  // float32 (bits 0) or quantized per row (8, 16; see QuantizedMatrix). gates = 3: a GRU
  // weight [3·hidden, k], each gate padded to whole panels. Returns an error message.
  std::string pack(const float* w, int64_t n, int64_t k, bool w_is_k_by_n, int gates, const float* bias, int bits);

  int bits() const { return bits_; }
  bool empty() const { return bits_ ? q_.empty() : f_.empty(); }
  // Panels a member's range is taken from: of one gate for GRU weights, else of the matrix.
  int64_t panels() const { return rows_per_gate_ / WAVEOPT_PANEL; }
  int64_t gate_pad() const { return gates_ == 3 ? rows_per_gate_ : 0; }
  int64_t k() const { return k_; }
  int64_t k_pad() const;
  const WaveoptPacked* float_view() const { return f_.view(); }
  const WaveoptPackedQ* quant_view() const { return q_.view(); }

  // For each gate g (GRU) or once: y[b, g·gate_pad + j] = act(W·x[b] + bias + addend[b] + s[b]·u)
  // for the rows j of `panels` (offsets into addend, u and y as into the whole matrix's rows).
  // x must hold what this precision reads (x.f for float32, x.q quantized for integers).
  // `bias` overrides the packed bias when `override_bias` (FusedDense's per-call bias).
  void compute(const WaveoptKernels* kt, const StepVector& x, size_t rows, Range panels, const float* addend,
               size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy) const;
  void compute(const WaveoptKernels* kt, const StepVector& x, size_t rows, Range panels, const float* addend,
               size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy, const float* bias) const;

 private:
  void compute_impl(const WaveoptKernels* kt, const StepVector& x, size_t rows, Range panels, const float* addend,
                    size_t ld_add, const float* s, const float* u, int act, float* y, size_t ldy, bool override_bias,
                    const float* bias) const;

  PackedMatrix f_;
  QuantizedMatrix q_;
  int bits_ = 0, gates_ = 1;
  int64_t n_ = 0, k_ = 0, rows_per_gate_ = 0;
};

}  // namespace waveopt

#endif
