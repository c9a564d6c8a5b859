#include "wavernn_loop.h"

#include <chrono>
#include <cmath>
#include <utility>

namespace waveopt {

const char* const kLoopStageNames[kLoopStages] = {"rnn1", "rnn2", "fc1", "fc2", "fc3", "sampling"};

std::string LoopWeights::pack(const LoopDims& d, const float* p_hh1, const float* p_bhh1,
                              const float* p_x2, const float* p_hh2, const float* p_bhh2,
                              const float* p_fc1, const float* p_fc2, const float* p_fc3,
                              const float* p_bfc3) {
  const int64_t H = d.hidden, F = d.fc, N = d.classes;
  const bool ok = w_hh1.pack(p_hh1, 3 * H, H, false, 3, p_bhh1) &&
                  w_x2.pack(p_x2, 3 * H, H, false, 3, nullptr) &&
                  w_hh2.pack(p_hh2, 3 * H, H, false, 3, p_bhh2) &&
                  w_fc1.pack(p_fc1, F, H, false, 1, nullptr) &&
                  w_fc2.pack(p_fc2, F, F, false, 1, nullptr) &&
                  w_fc3.pack(p_fc3, N, F, false, 1, p_bfc3);
  return ok ? std::string() : std::string("out of memory packing WaveRNNLoop weights");
}

namespace {

// fatchord's MOL sample given the chosen component (scalar libm, the same on every ISA).
float mol_value(const float* logits, int64_t k, float u1) {
  const float log_scale_min = static_cast<float>(std::log(1e-14));
  const float mean = logits[kMolMixtures + k];
  float log_scale = logits[2 * kMolMixtures + k];
  log_scale = log_scale < log_scale_min ? log_scale_min : log_scale;
  const float logistic = std::log(u1) - std::log(1.0f - u1);
  const float x = mean + std::exp(log_scale) * logistic;
  return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
}

}  // namespace

std::string run_wavernn_loop(const WaveoptKernels* k, const LoopDims& d, const LoopWeights& w,
                             const LoopInputs& in, SampleMode mode, float* out, LoopStageTimes* times) {
  const int64_t T = d.steps, B = d.batch, H = d.hidden, F = d.fc, N = d.classes;
  const int64_t Hp = round_up(H, WAVEOPT_PANEL), Fp = round_up(F, WAVEOPT_PANEL);
  const int64_t Np = round_up(N, WAVEOPT_PANEL), G = w.w_hh1.view()->gate_pad, Gs = 3 * G;
  // All scratch for the whole call, sized once: nothing is allocated per step.
  const size_t total = static_cast<size_t>(4 * B * Hp + B * Hp + 2 * B * Gs + 2 * B * Fp + B * Np + Np + 16 + B);
  AlignedBuffer scratch = aligned_floats(total);
  if (!scratch) return "out of memory for WaveRNNLoop scratch";
  float* p = scratch.get();
  auto take = [&p](int64_t n) { float* r = p; p += n; return r; };
  float* h1 = take(B * Hp);
  float* h1_next = take(B * Hp);
  float* h2 = take(B * Hp);
  float* h2_next = take(B * Hp);
  float* h_sum = take(B * Hp);
  float* gx = take(B * Gs);
  float* gh = take(B * Gs);
  float* t1 = take(B * Fp);
  float* t2 = take(B * Fp);
  float* logits = take(B * Np);
  float* sample_scratch = take(Np + 16);
  float* s = take(B);

  // Stage timers: `lap(stage)` charges the time since the previous lap to `stage`.
  using Clock = std::chrono::steady_clock;
  const bool timed = times != nullptr;
  Clock::duration spent[kLoopStages] = {};
  Clock::time_point mark;
  auto lap = [&](LoopStage stage) {
    const Clock::time_point now = Clock::now();
    spent[stage] += now - mark;
    mark = now;
  };

  const bool teacher = in.prev_samples != nullptr;
  for (int64_t b = 0; b < B; ++b) s[b] = in.x0 ? in.x0[b] : 0.0f;
  for (int64_t t = 0; t < T; ++t) {
    if (timed) mark = Clock::now();
    if (teacher)
      for (int64_t b = 0; b < B; ++b) s[b] = in.prev_samples[t * B + b];
    const float* gi1 = in.gi1 + t * B * 3 * H;
    const float* gi2 = in.gi2 + t * B * 3 * H;
    const float* f1 = in.f1 + t * B * F;
    const float* f2 = in.f2 + t * B * F;
    // rnn1: gh = W_hh1·h1 + b_hh1; h1' from gi1 + s·u1 and gh.
    k->gemm(w.w_hh1.view(), h1, Hp, B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gh, Gs);
    k->gru_gates(H, G, B, gi1, 3 * H, s, in.u1, nullptr, gh, Gs, h1, h1_next, Hp, nullptr, nullptr);
    if (timed) lap(kStageRnn1);
    // rnn2: input side gi2 + s·u2 + W_x2·h1', hidden side W_hh2·h2 + b_hh2; also h1' + h2'.
    k->gemm(w.w_x2.view(), h1_next, Hp, B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gx, Gs);
    k->gemm(w.w_hh2.view(), h2, Hp, B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gh, Gs);
    k->gru_gates(H, G, B, gi2, 3 * H, s, in.u2, gx, gh, Gs, h2, h2_next, Hp, h1_next, h_sum);
    if (timed) lap(kStageRnn2);
    // fc1, fc2, fc3.
    k->gemm(w.w_fc1.view(), h_sum, Hp, B, f1, F, s, in.u3, WAVEOPT_ACT_RELU, t1, Fp);
    if (timed) lap(kStageFc1);
    k->gemm(w.w_fc2.view(), t1, Fp, B, f2, F, nullptr, nullptr, WAVEOPT_ACT_RELU, t2, Fp);
    if (timed) lap(kStageFc2);
    float* step_logits = teacher ? out + t * B * N : logits;
    k->gemm(w.w_fc3.view(), t2, Fp, B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, step_logits,
            teacher ? N : Np);
    if (timed) lap(kStageFc3);
    if (!teacher) {
      for (int64_t b = 0; b < B; ++b) {
        const float* lb = logits + b * Np;
        const float* u = in.noise + (t * B + b) * 2;
        float value;
        if (mode == SampleMode::kRaw) {
          const int64_t c = k->sample_class(lb, static_cast<size_t>(N), u[0], sample_scratch);
          value = 2.0f * static_cast<float>(c) / static_cast<float>(N - 1) - 1.0f;
        } else {
          const int64_t c = k->sample_class(lb, kMolMixtures, u[0], sample_scratch);
          value = mol_value(lb, c, u[1]);
        }
        out[t * B + b] = value;
        s[b] = value;
      }
    }
    std::swap(h1, h1_next);
    std::swap(h2, h2_next);
    if (timed) lap(kStageSampling);  // the sampler (free-running) and the step's bookkeeping
  }
  if (timed)
    for (int s_i = 0; s_i < kLoopStages; ++s_i)
      times->seconds[s_i] = std::chrono::duration<double>(spent[s_i]).count();
  return std::string();
}

}  // namespace waveopt
