// The WaveRNN recurrence over T steps on one kernel table (no ORT types: the op glue in
// op_wavernn_loop.cc validates tensors and calls this; the C++ kernel test calls it directly).
#ifndef WAVEOPT_WAVERNN_LOOP_H
#define WAVEOPT_WAVERNN_LOOP_H

#include <cstdint>
#include <string>

#include "kernels.h"
#include "pack.h"

namespace waveopt {

enum class SampleMode { kRaw, kMol };

constexpr int kMolMixtures = 10;

struct LoopDims {
  int64_t steps = 0, batch = 0, hidden = 0, fc = 0, classes = 0;
};

// The recurrent weights, packed once (see kernels.h for the layout).
struct LoopWeights {
  PackedMatrix w_hh1;  // [3H, H] + b_hh1, gate-padded
  PackedMatrix w_x2;   // [3H, H], gate-padded, no bias
  PackedMatrix w_hh2;  // [3H, H] + b_hh2, gate-padded
  PackedMatrix w_fc1;  // [F, H]
  PackedMatrix w_fc2;  // [F, F]
  PackedMatrix w_fc3;  // [N, F] + b_fc3

  // Returns an error message, empty on success. Pointers are row-major, PyTorch layout.
  std::string pack(const LoopDims& d, const float* w_hh1, const float* b_hh1, const float* w_x2,
                   const float* w_hh2, const float* b_hh2, const float* w_fc1, const float* w_fc2,
                   const float* w_fc3, const float* b_fc3);
};

// The per-step inputs (time-major, row-major, see the op's documentation in op_wavernn_loop.cc).
struct LoopInputs {
  const float *gi1, *gi2, *f1, *f2;  // [T, B, 3H], [T, B, 3H], [T, B, F], [T, B, F]
  const float *u1, *u2, *u3;         // [3H], [3H], [F]
  const float* noise;                // [T, B, 2] free-running, else nullptr
  const float* prev_samples;         // [T, B] teacher-forced, else nullptr
  const float* x0;                   // [B] first fed-back value (free-running), or nullptr for 0
};

// Per-stage time of one run_wavernn_loop call, summed over its steps (and batch rows).
enum LoopStage { kStageRnn1, kStageRnn2, kStageFc1, kStageFc2, kStageFc3, kStageSampling, kLoopStages };
extern const char* const kLoopStageNames[kLoopStages];  // "rnn1", "rnn2", "fc1", "fc2", "fc3", "sampling"

struct LoopStageTimes {
  double seconds[kLoopStages] = {};
};

// Runs the loop: free-running writes samples [T, B], teacher-forced writes logits [T, B, N].
// `times`, when not null, receives each stage's steady_clock time (off: one untaken branch
// per stage per step, nothing allocated). Returns an error message (allocation failure),
// empty on success.
std::string run_wavernn_loop(const WaveoptKernels* k, const LoopDims& d, const LoopWeights& w,
                             const LoopInputs& in, SampleMode mode, float* out,
                             LoopStageTimes* times = nullptr);

}  // namespace waveopt

#endif
