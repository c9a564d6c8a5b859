// The WaveRNN recurrence over T steps on one kernel table (no ORT types: the op glue in
// op_wavernn_loop.cc validates tensors and calls this; the C++ kernel test calls it directly).
#ifndef WAVEOPT_WAVERNN_LOOP_H
#define WAVEOPT_WAVERNN_LOOP_H

#include <cstdint>
#include <string>

#include "kernels.h"
#include "linear.h"
#include "pack.h"
#include "thread_team.h"

namespace waveopt {

enum class SampleMode { kRaw, kMol };

constexpr int kMolMixtures = 10;

// How a free-running step turns its logits into the fed-back value, reading its row u of
// noise [T, B, noise_columns(sampler)]:
//   kInverseCdf  RAW: class by inverse CDF of softmax(logits) at u[0]; MOL: component by
//                inverse CDF of softmax(logits[:10]) at u[0], the logistic at u[1]
//   kArgmax      RAW only: the first class of largest logit (greedy); reads no noise
//   kGumbelMax   MOL only: component = first argmax over k < 10 of logits[k] - log(-log(u[k]))
//                (fatchord's, coqui's), the logistic at u[10]
// RAW's value is 2·class / (N - 1) - 1; MOL's is mean + exp(max(log_scale, log(1e-14)))·
// (log(u) - log(1 - u)) of the chosen component, clamped to [-1, 1].
enum class Sampler { kInverseCdf, kArgmax, kGumbelMax };

int64_t noise_columns(Sampler sampler);

struct Sampling {
  SampleMode mode = SampleMode::kRaw;
  Sampler sampler = Sampler::kInverseCdf;
  Sampling() = default;
  Sampling(SampleMode m, Sampler s = Sampler::kInverseCdf) : mode(m), sampler(s) {}  // NOLINT: implicit
};

struct LoopDims {
  int64_t steps = 0, batch = 0, hidden = 0, fc = 0, classes = 0;
};

// Integer inference (kernels.h, "integer (quantized) GEMM"): bits 0 = float32, 8 or 16.
// The inputs of the six matrix products are quantized every step with fixed scales: the GRU
// states h1, h2 lie in [-1, 1] (convex mixes of tanh outputs starting from 0) and h1 + h2 in
// [-2, 2]; the ReLU outputs of fc1 and fc2 have no bound, so their ranges are calibrated
// (LoopActivationStats on representative input) and larger values are clipped.
struct LoopQuant {
  int bits = 0;
  float fc1_range = 0.0f, fc2_range = 0.0f;  // largest relu(fc1) and relu(fc2) value kept
};

// The largest relu(fc1) and relu(fc2) values a float32 run saw (for calibration).
struct LoopActivationStats {
  float fc1_max = 0.0f, fc2_max = 0.0f;
};

// The recurrent weights, packed once (see kernels.h for the layout) as float32 or, with
// quant.bits 8 or 16, quantized (Linear hides which).
struct LoopWeights {
  Linear hh1;  // W_hh1 [3H, H] + b_hh1, gate-padded
  Linear x2;   // W_x2 [3H, H], gate-padded, no bias
  Linear hh2;  // W_hh2 [3H, H] + b_hh2, gate-padded
  Linear fc1;  // [F, H]
  Linear fc2;  // [F, F]
  Linear fc3;  // [N, F] + b_fc3
  LoopQuant quant;

  // Returns an error message, empty on success. Pointers are row-major, PyTorch layout.
  std::string pack(const LoopDims& d, const float* w_hh1, const float* b_hh1, const float* w_x2,
                   const float* w_hh2, const float* b_hh2, const float* w_fc1, const float* w_fc2,
                   const float* w_fc3, const float* b_fc3, const LoopQuant& quant = LoopQuant());
};

// The per-step inputs (time-major, row-major, see the op's documentation in op_wavernn_loop.cc).
struct LoopInputs {
  const float *gi1, *gi2, *f1, *f2;  // [T, B, 3H], [T, B, 3H], [T, B, F], [T, B, F]
  const float *u1, *u2, *u3;         // [3H], [3H], [F]
  const float* noise;                // [T, B, noise_columns] free-running, else nullptr
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
// `times`, when not null, receives each stage's steady_clock time as member 0 of the team
// sees it (barrier waits included; off: one untaken branch per stage per step, nothing
// allocated). `stats`, when not null (float32 weights only), receives the largest ReLU
// outputs. `team`, when not null, runs the steps on its members: each owns a fixed range of
// the hidden units (all three gates of them, so the GRU gate math stays with its rows), of
// fc1/fc2's outputs and of the logits, with a barrier after each product whose whole output
// the next one reads (5 per free-running step, 4 teacher-forced); every member samples all
// batch rows itself from the shared logits (no barrier after it). Results are bit-identical
// for every team size. Returns an error message (allocation failure), empty on success.
std::string run_wavernn_loop(const WaveoptKernels* k, const LoopDims& d, const LoopWeights& w,
                             const LoopInputs& in, const Sampling& sampling, float* out,
                             LoopStageTimes* times = nullptr, LoopActivationStats* stats = nullptr,
                             ThreadTeam* team = nullptr);

}  // namespace waveopt

#endif
