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
  struct Item {
    Linear* m;
    const char* name;
    const float* w;
    int64_t n, k;
    int gates;
    const float* bias;
  };
  const Item items[] = {{&hh1, "W_hh1", p_hh1, 3 * H, H, 3, p_bhh1}, {&x2, "W_x2", p_x2, 3 * H, H, 3, nullptr},
                        {&hh2, "W_hh2", p_hh2, 3 * H, H, 3, p_bhh2}, {&fc1, "W_fc1", p_fc1, F, H, 1, nullptr},
                        {&fc2, "W_fc2", p_fc2, F, F, 1, nullptr},    {&fc3, "W_fc3", p_fc3, N, F, 1, p_bfc3}};
  for (const Item& it : items) {
    const std::string error = it.m->pack(it.w, it.n, it.k, false, it.gates, it.bias, q.bits);
    if (!error.empty()) return std::string("WaveRNNLoop: ") + it.name + " " + error;
  }
  return std::string();
}

int64_t noise_columns(Sampler sampler) {
  switch (sampler) {
    case Sampler::kArgmax: return 0;
    case Sampler::kGumbelMax: return kMolMixtures + 1;
    case Sampler::kInverseCdf: break;
  }
  return 2;
}

namespace {

// The samplers' scalar parts (libm, the same on every ISA; see Sampler in wavernn_loop.h).
float raw_value(int64_t c, int64_t n) { return 2.0f * static_cast<float>(c) / static_cast<float>(n - 1) - 1.0f; }

// The first index of the largest value (a NaN never compares larger).
int64_t first_max(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) best = x[i] > x[best] ? i : best;
  return best;
}

int64_t gumbel_component(const float* logits, const float* u) {
  float perturbed[kMolMixtures];
  for (int i = 0; i < kMolMixtures; ++i) perturbed[i] = logits[i] - std::log(-std::log(u[i]));
  return first_max(perturbed, kMolMixtures);
}

// fatchord's MOL sample given the chosen component.
float mol_value(const float* logits, int64_t k, float u1) {
  const float log_scale_min = static_cast<float>(std::log(1e-14));
  const float mean = logits[kMolMixtures + k];
  float log_scale = logits[2 * kMolMixtures + k];
  log_scale = log_scale < log_scale_min ? log_scale_min : log_scale;
  const float logistic = std::log(u1) - std::log(1.0f - u1);
  const float x = mean + std::exp(log_scale) * logistic;
  return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
}

// Sets up the quantized copy of a step vector holding values in [-range, range] (or
// [0, range] when non_negative) with fixed scales: buffer [batch, ld] elements, params
// 2·batch floats (inverse scales, then scales).
void setup_quantized(StepVector* v, int bits, bool non_negative, float range, int64_t batch, void* buffer,
                     size_t ld, float* params) {
  QuantizedInput& q = v->q;
  q.bits = bits;
  q.q = buffer;
  q.ld = ld;
  const float levels = bits == 8 ? (non_negative ? 255.0f : 127.0f) : static_cast<float>(WAVEOPT_Q16_MAX);
  q.zero = bits == 8 && !non_negative ? 128 : 0;
  q.qmin = bits == 8 ? (non_negative ? 0 : 1) : -WAVEOPT_Q16_MAX;
  q.qmax = bits == 8 ? 255 : WAVEOPT_Q16_MAX;
  for (int64_t b = 0; b < batch; ++b) {
    params[b] = levels / range;
    params[batch + b] = range / levels;
  }
  q.inv_scale = params;
  q.scale = params + batch;
}

// The fed-back value of one batch row from its logits [n] and its noise row u.
float sample_value(const WaveoptKernels* k, const Sampling& s, const float* logits, int64_t n, const float* u,
                   float* scratch) {
  switch (s.sampler) {
    case Sampler::kArgmax: return raw_value(first_max(logits, n), n);
    case Sampler::kGumbelMax: return mol_value(logits, gumbel_component(logits, u), u[kMolMixtures]);
    case Sampler::kInverseCdf: break;
  }
  if (s.mode == SampleMode::kRaw) return raw_value(k->sample_class(logits, static_cast<size_t>(n), u[0], scratch), n);
  return mol_value(logits, k->sample_class(logits, kMolMixtures, u[0], scratch), u[1]);
}

float max_of(const float* x, int64_t rows, int64_t c0, int64_t c1, int64_t ld, float m) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) m = x[r * ld + c] > m ? x[r * ld + c] : m;
  return m;
}

}  // namespace

std::string run_wavernn_loop(const WaveoptKernels* k, const LoopDims& d, const LoopWeights& w,
                             const LoopInputs& in, const Sampling& sampling, float* out, LoopStageTimes* times,
                             LoopActivationStats* stats, ThreadTeam* team) {
  const int64_t T = d.steps, B = d.batch, H = d.hidden, F = d.fc, N = d.classes;
  const int64_t Hp = round_up(H, WAVEOPT_PANEL), Fp = round_up(F, WAVEOPT_PANEL), Np = round_up(N, WAVEOPT_PANEL);
  const int bits = w.quant.bits;
  const int64_t G = w.hh1.gate_pad(), Gs = 3 * G;
  const int members = team ? team->size() : 1;
  // All scratch for the whole call, sized once: nothing is allocated per step. Shared:
  // the step vectors and gate pre-activations; per member: sampler scratch, its copy of the
  // fed-back values s, its stage times and activation maxima.
  const int64_t per_member = round_up(Np + 16, 16) + round_up(B, 16) + 16;
  const size_t total =
      static_cast<size_t>(5 * B * Hp + 2 * B * Gs + 2 * B * Fp + B * Np + members * per_member);
  AlignedBuffer scratch = aligned_floats(total);
  if (!scratch) return "out of memory for WaveRNNLoop scratch";
  float* p = scratch.get();
  auto take = [&p](int64_t n) { float* r = p; p += n; return r; };
  StepVector h1, h1_next, h2, h2_next, h_sum, t1, t2;
  for (StepVector* v : {&h1, &h1_next, &h2, &h2_next, &h_sum}) {
    v->f = take(B * Hp);
    v->ld = static_cast<size_t>(Hp);
    v->k = H;
    v->k_pad = w.hh1.k_pad();
  }
  float* gx = take(B * Gs);
  float* gh = take(B * Gs);
  for (StepVector* v : {&t1, &t2}) {
    v->f = take(B * Fp);
    v->ld = static_cast<size_t>(Fp);
    v->k = F;
    v->k_pad = w.fc2.k_pad();
  }
  float* logits = take(B * Np);
  float* member_scratch = p;

  // Quantized copies (integer weights): h1 and h2 (kept quantized between steps, so h1' is
  // quantized once for W_x2 now and W_hh1 next step), h1' + h2', relu(fc1), relu(fc2), each
  // in its own buffer (one member may still read relu(fc1) while another writes relu(fc2)).
  const bool q = bits != 0;
  const int64_t q_ld = round_up(Hp > Fp ? Hp : Fp, 32);  // elements; >= every k_pad
  const size_t q_bytes = static_cast<size_t>(B * q_ld * 2);
  AlignedArray<uint8_t> q_buffers = aligned_array<uint8_t>(q ? 7 * q_bytes + 14 * B * sizeof(float) : 0);
  if (q && !q_buffers) return "out of memory for WaveRNNLoop quantized scratch";
  if (q) {
    uint8_t* base = q_buffers.get();
    float* params = reinterpret_cast<float*>(base + 7 * q_bytes);
    struct Setup {
      StepVector* v;
      bool non_negative;
      float range;
    };
    const Setup setups[] = {{&h1, false, 1.0f},      {&h1_next, false, 1.0f},
                            {&h2, false, 1.0f},      {&h2_next, false, 1.0f},
                            {&h_sum, false, 2.0f},   {&t1, true, w.quant.fc1_range},
                            {&t2, true, w.quant.fc2_range}};
    for (int i = 0; i < 7; ++i)
      setup_quantized(setups[i].v, bits, setups[i].non_negative, setups[i].range, B, base + i * q_bytes,
                      static_cast<size_t>(q_ld), params + 2 * B * i);
    const Range all{0, Hp / WAVEOPT_PANEL};
    h1.publish(k, static_cast<size_t>(B), all);  // the zero initial states
    h2.publish(k, static_cast<size_t>(B), all);
  }

  const bool teacher = in.prev_samples != nullptr;
  const int64_t columns = noise_columns(sampling.sampler);
  using Clock = std::chrono::steady_clock;
  Clock::duration spent[kLoopStages] = {};  // member 0's stage times
  float stat_max[2 * kMaxThreads] = {};

  // The step body, written once for every precision and team size: member `crew.member()`
  // computes its own rows of every product (crew.share over panels), sync() where the next
  // product reads the whole vector. Runs steps [t_begin, t_end); everything a later call
  // needs is in the shared buffers (h1/h2 alternate by step parity, s is out[t - 1]).
  auto body = [&](const Crew& crew, int64_t t_begin, int64_t t_end) {
    const int m = crew.member();
    const Range hid = crew.share(Hp / WAVEOPT_PANEL), fcr = crew.share(Fp / WAVEOPT_PANEL),
                outr = crew.share(Np / WAVEOPT_PANEL);
    const int64_t u0 = hid.begin * WAVEOPT_PANEL, u1 = hid.end * WAVEOPT_PANEL < H ? hid.end * WAVEOPT_PANEL : H;
    const int64_t f0 = fcr.begin * WAVEOPT_PANEL, f1e = fcr.end * WAVEOPT_PANEL < F ? fcr.end * WAVEOPT_PANEL : F;
    float* mine = member_scratch + m * per_member;
    float* sample_scratch = mine;
    float* s = mine + round_up(Np + 16, 16);
    const size_t rows = static_cast<size_t>(B);
    const bool odd = t_begin % 2 != 0;
    StepVector h1c = odd ? h1_next : h1, h1n = odd ? h1 : h1_next, h2c = odd ? h2_next : h2, h2n = odd ? h2 : h2_next;

    // Stage timers (member 0): `lap(stage)` charges the time since the previous lap to `stage`.
    const bool timed = times != nullptr && m == 0;
    Clock::time_point mark;
    auto lap = [&](LoopStage stage) {
      const Clock::time_point now = Clock::now();
      spent[stage] += now - mark;
      mark = now;
    };
    // GRU gate math for this member's hidden units [u0, u1).
    auto gates = [&](const float* gi, const float* u, const float* gxp, const StepVector& hp, const StepVector& hn,
                     const float* add, float* sum) {
      if (u1 <= u0) return;
      k->gru_gates(static_cast<size_t>(u1 - u0), static_cast<size_t>(H), static_cast<size_t>(G), rows, gi + u0,
                   static_cast<size_t>(3 * H), s, u + u0, gxp ? gxp + u0 : nullptr, gh + u0, static_cast<size_t>(Gs),
                   hp.f + u0, hn.f + u0, static_cast<size_t>(Hp), add ? add + u0 : nullptr, sum ? sum + u0 : nullptr);
    };

    for (int64_t b = 0; b < B; ++b)
      s[b] = t_begin > 0 && !teacher ? out[(t_begin - 1) * B + b] : (in.x0 ? in.x0[b] : 0.0f);
    for (int64_t t = t_begin; t < t_end; ++t) {
      if (timed) mark = Clock::now();
      if (teacher)
        for (int64_t b = 0; b < B; ++b) s[b] = in.prev_samples[t * B + b];
      const float* gi1 = in.gi1 + t * B * 3 * H;
      const float* gi2 = in.gi2 + t * B * 3 * H;
      const float* f1 = in.f1 + t * B * F;
      const float* f2 = in.f2 + t * B * F;
      float* step_logits = teacher ? out + t * B * N : logits;
      const size_t ld_logits = static_cast<size_t>(teacher ? N : Np);
      // rnn1: gh = W_hh1·h1 + b_hh1; h1' from gi1 + s·u1 and gh.
      w.hh1.compute(k, h1c, rows, hid, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gh, Gs);
      gates(gi1, in.u1, nullptr, h1c, h1n, nullptr, nullptr);
      h1n.publish(k, rows, hid);
      crew.sync();
      if (timed) lap(kStageRnn1);
      // rnn2: input side gi2 + s·u2 + W_x2·h1', hidden side W_hh2·h2 + b_hh2; also h1' + h2'.
      w.x2.compute(k, h1n, rows, hid, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gx, Gs);
      w.hh2.compute(k, h2c, rows, hid, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, gh, Gs);
      gates(gi2, in.u2, gx, h2c, h2n, h1n.f, h_sum.f);
      h2n.publish(k, rows, hid);
      h_sum.publish(k, rows, hid);
      crew.sync();
      if (timed) lap(kStageRnn2);
      // fc1, fc2, fc3.
      w.fc1.compute(k, h_sum, rows, fcr, f1, F, s, in.u3, WAVEOPT_ACT_RELU, t1.f, Fp);
      t1.publish(k, rows, fcr);
      crew.sync();
      if (timed) lap(kStageFc1);
      w.fc2.compute(k, t1, rows, fcr, f2, F, nullptr, nullptr, WAVEOPT_ACT_RELU, t2.f, Fp);
      t2.publish(k, rows, fcr);
      crew.sync();
      if (timed) lap(kStageFc2);
      w.fc3.compute(k, t2, rows, outr, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, step_logits, ld_logits);
      if (timed) lap(kStageFc3);
      if (stats) {
        stat_max[2 * m] = max_of(t1.f, B, f0, f1e, Fp, stat_max[2 * m]);
        stat_max[2 * m + 1] = max_of(t2.f, B, f0, f1e, Fp, stat_max[2 * m + 1]);
      }
      if (!teacher) {
        crew.sync();  // every member samples every row from the whole logits
        for (int64_t b = 0; b < B; ++b) {
          const float value = sample_value(k, sampling, logits + b * Np, N, in.noise + (t * B + b) * columns,
                                           sample_scratch);
          if (m == 0) out[t * B + b] = value;
          s[b] = value;
        }
      }
      std::swap(h1c, h1n);
      std::swap(h2c, h2n);
      if (timed) lap(kStageSampling);  // the sampler (free-running) and the step's bookkeeping
    }
  };
  if (team) {
    // One job per kStepsPerJob steps, so the team can change its member count with the load.
    constexpr int64_t kStepsPerJob = 64;
    for (int64_t t0 = 0; t0 < T; t0 += kStepsPerJob) {
      const int64_t t1 = t0 + kStepsPerJob < T ? t0 + kStepsPerJob : T;
      team->run([&](const Crew& crew) { body(crew, t0, t1); });
    }
  } else {
    body(Crew(0, 1, nullptr), 0, T);
  }

  if (times)
    for (int i = 0; i < kLoopStages; ++i) times->seconds[i] = std::chrono::duration<double>(spent[i]).count();
  if (stats)
    for (int i = 0; i < members; ++i) {
      stats->fc1_max = stat_max[2 * i] > stats->fc1_max ? stat_max[2 * i] : stats->fc1_max;
      stats->fc2_max = stat_max[2 * i + 1] > stats->fc2_max ? stat_max[2 * i + 1] : stats->fc2_max;
    }
  return std::string();
}

}  // namespace waveopt
