#include "wavernn_loop.h"

#include <chrono>
#include <cmath>
#include <utility>

namespace waveopt {

const char* const kLoopStageNames[kLoopStages] = {"rnn1", "rnn2", "fc1", "fc2", "fc3", "sampling"};

std::string LoopWeights::pack(const LoopDims& d, const float* p_hh1, const float* p_bhh1,
                              const float* p_x2, const float* p_hh2, const float* p_bhh2,
                              const float* p_fc1, const float* p_fc2, const float* p_fc3,
                              const float* p_bfc3, const LoopQuant& q) {
  const int64_t H = d.hidden, F = d.fc, N = d.classes;
  quant = q;
  bool ok;
  if (q.bits) {
    ok = q_hh1.pack(p_hh1, 3 * H, H, false, 3, p_bhh1, q.bits) &&
         q_x2.pack(p_x2, 3 * H, H, false, 3, nullptr, q.bits) &&
         q_hh2.pack(p_hh2, 3 * H, H, false, 3, p_bhh2, q.bits) &&
         q_fc1.pack(p_fc1, F, H, false, 1, nullptr, q.bits) &&
         q_fc2.pack(p_fc2, F, F, false, 1, nullptr, q.bits) &&
         q_fc3.pack(p_fc3, N, F, false, 1, p_bfc3, q.bits);
  } else {
    ok = w_hh1.pack(p_hh1, 3 * H, H, false, 3, p_bhh1) &&
         w_x2.pack(p_x2, 3 * H, H, false, 3, nullptr) &&
         w_hh2.pack(p_hh2, 3 * H, H, false, 3, p_bhh2) &&
         w_fc1.pack(p_fc1, F, H, false, 1, nullptr) &&
         w_fc2.pack(p_fc2, F, F, false, 1, nullptr) &&
         w_fc3.pack(p_fc3, N, F, false, 1, p_bfc3);
  }
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

// One quantized input of a matrix product: [B, ld] u8 or s16 values with their per-row
// scales, quantized from floats known to lie in [-range, range] (or [0, range]).
struct QuantizedInput {
  void* q = nullptr;
  size_t ld = 0;
  int zero = 0, qmin = 0, qmax = 0, bits = 0;
  float* inv_scale = nullptr;  // [B], all equal
  float* scale = nullptr;      // [B]

  void setup(int bits_, bool non_negative, float range, int64_t batch, void* buffer, size_t ld_, float* params) {
    bits = bits_;
    q = buffer;
    ld = ld_;
    const float levels = bits == 8 ? (non_negative ? 255.0f : 127.0f) : static_cast<float>(WAVEOPT_Q16_MAX);
    zero = bits == 8 && !non_negative ? 128 : 0;
    qmin = bits == 8 ? (non_negative ? 0 : 1) : -WAVEOPT_Q16_MAX;
    qmax = bits == 8 ? 255 : WAVEOPT_Q16_MAX;
    inv_scale = params;
    scale = params + batch;
    for (int64_t b = 0; b < batch; ++b) {
      inv_scale[b] = levels / range;
      scale[b] = range / levels;
    }
  }

  void quantize(const WaveoptKernels* k, const float* x, size_t ldx, size_t rows, const WaveoptPackedQ* w) const {
    k->quantize(x, ldx, rows, static_cast<size_t>(w->k), static_cast<size_t>(w->k_pad), inv_scale, zero, qmin, qmax,
                bits, q, ld);
  }

  void gemm(const WaveoptKernels* k, const WaveoptPackedQ* w, size_t rows, const float* addend, size_t ld_add,
            const float* s, const float* u, int act, float* y, size_t ldy) const {
    k->gemm_q(w, q, ld, rows, scale, zero, addend, ld_add, s, u, act, y, ldy);
  }
};

float max_of(const float* x, int64_t rows, int64_t cols, int64_t ld, float m) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) m = x[r * ld + c] > m ? x[r * ld + c] : m;
  return m;
}

}  // namespace

std::string run_wavernn_loop(const WaveoptKernels* k, const LoopDims& d, const LoopWeights& w,
                             const LoopInputs& in, SampleMode mode, float* out, LoopStageTimes* times,
                             LoopActivationStats* stats) {
  const int64_t T = d.steps, B = d.batch, H = d.hidden, F = d.fc, N = d.classes;
  const int64_t Hp = round_up(H, WAVEOPT_PANEL), Fp = round_up(F, WAVEOPT_PANEL);
  const int bits = w.quant.bits;
  const int64_t Np = round_up(N, WAVEOPT_PANEL);
  const int64_t G = bits ? w.q_hh1.view()->gate_pad : w.w_hh1.view()->gate_pad, Gs = 3 * G;
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

  // Quantized inputs (integer paths only): h1 and h2 (kept quantized between steps, so h1'
  // is quantized once for W_x2 now and W_hh1 next step), h1' + h2', relu(fc1), relu(fc2).
  const bool q = bits != 0;
  const int64_t q_ld = round_up(Hp > Fp ? Hp : Fp, 32);  // elements; >= every k_pad
  AlignedBuffer q_buffers = aligned_floats(q ? static_cast<size_t>(6 * B * q_ld * 2 / 4 + 10 * B) : 0);
  if (q && !q_buffers) return "out of memory for WaveRNNLoop quantized scratch";
  QuantizedInput qh1, qh1_next, qh2, qh2_next, qsum, qt1, qt2;
  if (q) {
    char* base = reinterpret_cast<char*>(q_buffers.get());
    const size_t bytes = static_cast<size_t>(B * q_ld * 2);
    float* params = reinterpret_cast<float*>(base + 6 * bytes);
    qh1.setup(bits, false, 1.0f, B, base, q_ld, params);
    qh1_next.setup(bits, false, 1.0f, B, base + bytes, q_ld, params);
    qh2.setup(bits, false, 1.0f, B, base + 2 * bytes, q_ld, params);
    qh2_next.setup(bits, false, 1.0f, B, base + 3 * bytes, q_ld, params);
    qsum.setup(bits, false, 2.0f, B, base + 4 * bytes, q_ld, params + 2 * B);
    qt1.setup(bits, true, w.quant.fc1_range, B, base + 5 * bytes, q_ld, params + 4 * B);
    // relu(fc2) reuses the buffer relu(fc1) is done with.
    qt2.setup(bits, true, w.quant.fc2_range, B, base + 5 * bytes, q_ld, params + 6 * B);
    qh1.quantize(k, h1, Hp, B, w.q_hh1.view());  // the zero initial states
    qh2.quantize(k, h2, Hp, B, w.q_hh2.view());
  }

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
    float* step_logits = teacher ? out + t * B * N : logits;
    const size_t ld_logits = teacher ? N : Np;
    if (q) {
      qh1.gemm(k, w.q_hh1.view(), B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gh, Gs);
      k->gru_gates(H, G, B, gi1, 3 * H, s, in.u1, nullptr, gh, Gs, h1, h1_next, Hp, nullptr, nullptr);
      qh1_next.quantize(k, h1_next, Hp, B, w.q_x2.view());
      if (timed) lap(kStageRnn1);
      qh1_next.gemm(k, w.q_x2.view(), B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gx, Gs);
      qh2.gemm(k, w.q_hh2.view(), B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gh, Gs);
      k->gru_gates(H, G, B, gi2, 3 * H, s, in.u2, gx, gh, Gs, h2, h2_next, Hp, h1_next, h_sum);
      qh2_next.quantize(k, h2_next, Hp, B, w.q_hh2.view());
      if (timed) lap(kStageRnn2);
      qsum.quantize(k, h_sum, Hp, B, w.q_fc1.view());
      qsum.gemm(k, w.q_fc1.view(), B, f1, F, s, in.u3, WAVEOPT_ACT_RELU, t1, Fp);
      if (timed) lap(kStageFc1);
      qt1.quantize(k, t1, Fp, B, w.q_fc2.view());
      qt1.gemm(k, w.q_fc2.view(), B, f2, F, nullptr, nullptr, WAVEOPT_ACT_RELU, t2, Fp);
      if (timed) lap(kStageFc2);
      qt2.quantize(k, t2, Fp, B, w.q_fc3.view());
      qt2.gemm(k, w.q_fc3.view(), B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, step_logits, ld_logits);
      if (timed) lap(kStageFc3);
      std::swap(qh1, qh1_next);
      std::swap(qh2, qh2_next);
    } else {
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
      k->gemm(w.w_fc3.view(), t2, Fp, B, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, step_logits, ld_logits);
      if (timed) lap(kStageFc3);
      if (stats) {
        stats->fc1_max = max_of(t1, B, F, Fp, stats->fc1_max);
        stats->fc2_max = max_of(t2, B, F, Fp, stats->fc2_max);
      }
    }
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
