// Kernel test and micro-benchmark, linked against the kernel objects directly (no ORT):
// every SIMD table this CPU can run is compared with the scalar reference, kernel by kernel
// and over the whole WaveRNN loop; the AVX2 and AVX-512 paths must agree bit for bit.
//
//   waveopt_kernel_test [accuracy]       run the tests, printing the exp/sigmoid/tanh errors
//                                        on dense grids (exit status 1 on any failure)
//   waveopt_kernel_test bench [ISA] [STEPS]   samples/s of the loop at rnn 512, fc 512, 9 bits
//   waveopt_kernel_test bandwidth [MB ...]    streaming read GB/s of buffers of these sizes
//   waveopt_kernel_test gemm N K ROWS [COPIES] [t]   one GEMM shape (t: W given as [K, N])
//
// The sanitizer build (-DWAVEOPT_SANITIZE=ON) runs the same binary under ASan + UBSan.
#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dispatch.h"
#include "kernels.h"
#include "pack.h"
#include "wavernn_loop.h"

using namespace waveopt;

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

std::vector<float> random_vector(std::mt19937& rng, size_t n, float scale) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<const WaveoptKernels*> simd_tables() {
  std::vector<const WaveoptKernels*> out;
  for (const char* isa : {"avx2", "avx512"})
    if (const WaveoptKernels* k = kernels_for(isa)) out.push_back(k);
  return out;
}

// --- GEMM --------------------------------------------------------------------------------
void test_gemm(const WaveoptKernels* simd, std::mt19937& rng, std::vector<float>* last_out) {
  const WaveoptKernels* ref = waveopt_kernels_scalar();
  const int64_t ns[] = {1, 7, 16, 30, 33, 136, 512};
  const int64_t ks[] = {1, 5, 24, 200, 512};
  const size_t rows_list[] = {1, 2, 3, 4, 5, 7, 8, 9, 11, 14, 16, 17};
  std::vector<float> all;
  for (int64_t n : ns)
    for (int64_t k : ks)
      for (size_t rows : rows_list) {
        if (n * k * (int64_t)rows > 600000) continue;
        const int variant = (int)((n + k + rows) % 4);  // which epilogue parts to use
        const int act = (int)((n * 3 + k + rows) % 4);
        const bool transposed = (n + k) % 2 == 0;
        auto w = random_vector(rng, n * k, 0.2f);
        auto bias = random_vector(rng, n, 1.0f);
        auto x = random_vector(rng, rows * (k + 3), 1.0f);
        auto addend = random_vector(rng, rows * (n + 1), 1.0f);
        auto s = random_vector(rng, rows, 1.0f);
        auto u = random_vector(rng, n, 1.0f);
        PackedMatrix m;
        m.pack(w.data(), n, k, transposed, 1, variant & 1 ? bias.data() : nullptr);
        const size_t ldy = n + 2;
        std::vector<float> y_ref(rows * ldy, 7.0f), y(rows * ldy, 7.0f);
        const float* add = variant & 2 ? addend.data() : nullptr;
        const float* sp = variant == 3 ? s.data() : nullptr;
        const float* up = variant == 3 ? u.data() : nullptr;
        ref->gemm(m.view(), x.data(), k + 3, rows, add, n + 1, sp, up, act, y_ref.data(), ldy);
        simd->gemm(m.view(), x.data(), k + 3, rows, add, n + 1, sp, up, act, y.data(), ldy);
        double worst = 0;
        for (size_t b = 0; b < rows; ++b)
          for (size_t j = 0; j < ldy; ++j) {
            const double d = std::fabs((double)y[b * ldy + j] - y_ref[b * ldy + j]);
            if (j >= (size_t)n) check(y[b * ldy + j] == 7.0f, "gemm wrote past n");
            worst = std::max(worst, d);
          }
        // Rounding of a k-term sum of O(0.2) products: scale with sqrt(k).
        const double tol = 2e-6 * (1 + std::sqrt((double)k));
        char what[160];
        std::snprintf(what, sizeof what, "%s gemm n=%lld k=%lld rows=%zu variant=%d act=%d: max diff %.3g",
                      simd->isa, (long long)n, (long long)k, rows, variant, act, worst);
        check(worst <= tol, what);
        all.insert(all.end(), y.begin(), y.end());
      }
  *last_out = all;
}

// --- GRU gates ---------------------------------------------------------------------------
void test_gates(const WaveoptKernels* simd, std::mt19937& rng, std::vector<float>* last_out) {
  const WaveoptKernels* ref = waveopt_kernels_scalar();
  std::vector<float> all;
  for (size_t H : {1, 5, 16, 64, 200, 512})
    for (size_t rows : {1, 3, 16}) {
      const size_t G = (size_t)round_up((int64_t)H, 16), ld_gi = 3 * H + 1, ld_g = 3 * G, ld_h = G;
      auto gi = random_vector(rng, rows * ld_gi, 3.0f);
      auto u = random_vector(rng, 3 * H, 1.0f);
      auto s = random_vector(rng, rows, 1.0f);
      auto gx = random_vector(rng, rows * ld_g, 2.0f);
      auto gh = random_vector(rng, rows * ld_g, 2.0f);
      auto h = random_vector(rng, rows * ld_h, 1.0f);
      auto add = random_vector(rng, rows * ld_h, 1.0f);
      for (int variant = 0; variant < 2; ++variant) {
        std::vector<float> out_ref(rows * ld_h, 5.0f), out(rows * ld_h, 5.0f);
        std::vector<float> sum_ref(rows * ld_h, 5.0f), sum(rows * ld_h, 5.0f);
        const float* gxp = variant ? gx.data() : nullptr;
        const float* sp = variant ? s.data() : nullptr;
        const float* addp = variant ? add.data() : nullptr;
        ref->gru_gates(H, G, rows, gi.data(), ld_gi, sp, u.data(), gxp, gh.data(), ld_g, h.data(), out_ref.data(),
                       ld_h, addp, sum_ref.data());
        simd->gru_gates(H, G, rows, gi.data(), ld_gi, sp, u.data(), gxp, gh.data(), ld_g, h.data(), out.data(), ld_h,
                        addp, sum.data());
        double worst = 0;
        for (size_t b = 0; b < rows; ++b)
          for (size_t j = 0; j < ld_h; ++j) {
            const size_t i = b * ld_h + j;
            if (j >= H) {
              check(out[i] == 5.0f && sum[i] == 5.0f, "gru_gates wrote past hidden");
              continue;
            }
            worst = std::max(worst, std::fabs((double)out[i] - out_ref[i]));
            if (variant) worst = std::max(worst, std::fabs((double)sum[i] - sum_ref[i]));
          }
        char what[120];
        std::snprintf(what, sizeof what, "%s gru_gates H=%zu rows=%zu variant=%d: max diff %.3g", simd->isa, H, rows,
                      variant, worst);
        check(worst <= 1e-6, what);
        all.insert(all.end(), out.begin(), out.end());
      }
    }
  *last_out = all;
}

// --- sampling ----------------------------------------------------------------------------
void test_sampling(const WaveoptKernels* simd, std::mt19937& rng, std::vector<float>* last_out) {
  const WaveoptKernels* ref = waveopt_kernels_scalar();
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> scratch(1024 + 32), picks;
  int ties = 0, trials = 0;
  for (size_t n : {2, 10, 17, 30, 256, 512, 1024})
    for (int rep = 0; rep < 200; ++rep) {
      auto logits = random_vector(rng, n, rep % 2 ? 8.0f : 2.0f);
      if (rep % 7 == 0) logits[rep % n] = 40.0f;  // a peaked distribution
      const float u = rep % 50 == 0 ? 0.0f : (rep % 50 == 1 ? 0.99999994f : uni(rng));
      const int64_t a = ref->sample_class(logits.data(), n, u, scratch.data());
      const int64_t b = simd->sample_class(logits.data(), n, u, scratch.data());
      ++trials;
      picks.push_back((float)b);
      check(b >= 0 && b < (int64_t)n, "sample_class out of range");
      if (a == b) continue;
      // A disagreement must be a near-tie: u within 1e-5 of a CDF boundary (in double).
      double m = logits[0], total = 0, prefix = 0, nearest = 1;
      for (float l : logits) m = std::max(m, (double)l);
      for (float l : logits) total += std::exp(l - m);
      for (float l : logits) {
        prefix += std::exp(l - m);
        nearest = std::min(nearest, std::fabs(prefix / total - u));
      }
      ++ties;
      char what[120];
      std::snprintf(what, sizeof what, "%s sample_class n=%zu u=%.9g: %lld vs scalar %lld, %.2g from a boundary",
                    simd->isa, n, u, (long long)b, (long long)a, nearest);
      check(nearest < 1e-5, what);
    }
  std::printf("  %s sample_class: %d/%d draws differ from scalar (all near-ties)\n", simd->isa, ties, trials);
  *last_out = picks;
}

// --- activations: accuracy over a dense grid ---------------------------------------------
void test_activations(const WaveoptKernels* simd, bool print) {
  const size_t n = 400001;  // [-20, 20] step 1e-4
  std::vector<float> grid(n), t(n), sg(n);
  for (size_t i = 0; i < n; ++i) grid[i] = -20.0f + 1e-4f * (float)i;
  t = grid;
  sg = grid;
  simd->activate(t.data(), n, WAVEOPT_ACT_TANH);
  simd->activate(sg.data(), n, WAVEOPT_ACT_SIGMOID);
  double tanh_err = 0, sig_err = 0;
  for (size_t i = 0; i < n; ++i) {
    tanh_err = std::max(tanh_err, std::fabs(t[i] - std::tanh((double)grid[i])));
    sig_err = std::max(sig_err, std::fabs(sg[i] - 1.0 / (1.0 + std::exp(-(double)grid[i]))));
  }
  // exp (the sampler's) over [-87, 88], relative error.
  std::vector<float> eg, e;
  for (double x = -87.0; x <= 88.0; x += 1e-3) eg.push_back((float)x);
  e = eg;
  simd->activate(e.data(), e.size(), WAVEOPT_ACT_EXP);
  double exp_err = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    const double want = std::exp((double)eg[i]);
    exp_err = std::max(exp_err, std::fabs(e[i] - want) / want);
  }
  if (print) std::printf("  %s exp max rel err %.3g on [-87, 88] step 1e-3\n", simd->isa, exp_err);
  check(exp_err < 5e-7, std::string(simd->isa) + " exp error too large");
  char what[160];
  std::snprintf(what, sizeof what, "%s tanh max abs err %.3g, sigmoid max abs err %.3g (grid [-20, 20] step 1e-4)",
                simd->isa, tanh_err, sig_err);
  if (print) std::printf("  %s\n", what);
  check(tanh_err < 3e-7 && sig_err < 3e-7, what);
}

// --- the whole loop ----------------------------------------------------------------------
struct LoopCase {
  LoopDims d;
  SampleMode mode;
  std::vector<float> gi1, gi2, f1, f2, u1, u2, u3, whh1, bhh1, wx2, whh2, bhh2, wfc1, wfc2, wfc3, bfc3, noise, prev;
  LoopWeights w;
};

void make_case(LoopCase* c, std::mt19937& rng, int64_t T, int64_t B, int64_t H, int64_t F, int64_t N, SampleMode mode) {
  c->d.steps = T;
  c->d.batch = B;
  c->d.hidden = H;
  c->d.fc = F;
  c->d.classes = N;
  c->mode = mode;
  const float gs = 1.5f / std::sqrt((float)H);
  c->gi1 = random_vector(rng, T * B * 3 * H, 1.0f);
  c->gi2 = random_vector(rng, T * B * 3 * H, 1.0f);
  c->f1 = random_vector(rng, T * B * F, 0.5f);
  c->f2 = random_vector(rng, T * B * F, 0.5f);
  c->u1 = random_vector(rng, 3 * H, 0.5f);
  c->u2 = random_vector(rng, 3 * H, 0.5f);
  c->u3 = random_vector(rng, F, 0.5f);
  c->whh1 = random_vector(rng, 3 * H * H, gs);
  c->bhh1 = random_vector(rng, 3 * H, 0.2f);
  c->wx2 = random_vector(rng, 3 * H * H, gs);
  c->whh2 = random_vector(rng, 3 * H * H, gs);
  c->bhh2 = random_vector(rng, 3 * H, 0.2f);
  c->wfc1 = random_vector(rng, F * H, 1.5f / std::sqrt((float)H));
  c->wfc2 = random_vector(rng, F * F, 1.5f / std::sqrt((float)F));
  c->wfc3 = random_vector(rng, N * F, 3.0f / std::sqrt((float)F));
  c->bfc3 = random_vector(rng, N, 0.5f);
  std::uniform_real_distribution<float> uni(1e-5f, 1.0f - 1e-5f);
  c->noise.resize(T * B * 2);
  for (auto& x : c->noise) x = uni(rng);
  c->prev = random_vector(rng, T * B, 1.0f);
  const std::string err = c->w.pack(c->d, c->whh1.data(), c->bhh1.data(), c->wx2.data(), c->whh2.data(),
                                    c->bhh2.data(), c->wfc1.data(), c->wfc2.data(), c->wfc3.data(), c->bfc3.data());
  check(err.empty(), "pack: " + err);
}

std::vector<float> run_case(const LoopCase& c, const WaveoptKernels* k, bool teacher) {
  LoopInputs in{c.gi1.data(), c.gi2.data(), c.f1.data(), c.f2.data(), c.u1.data(), c.u2.data(), c.u3.data(),
                teacher ? nullptr : c.noise.data(), teacher ? c.prev.data() : nullptr, nullptr};
  std::vector<float> out(teacher ? c.d.steps * c.d.batch * c.d.classes : c.d.steps * c.d.batch);
  const std::string err = run_wavernn_loop(k, c.d, c.w, in, c.mode, out.data());
  check(err.empty(), "run_wavernn_loop: " + err);
  return out;
}

void test_loop(const std::vector<const WaveoptKernels*>& simds, std::mt19937& rng) {
  const WaveoptKernels* ref = waveopt_kernels_scalar();
  struct Shape { int64_t T, B, H, F, N; SampleMode mode; };
  const Shape shapes[] = {{300, 1, 200, 136, 1024, SampleMode::kRaw}, {300, 3, 64, 48, 512, SampleMode::kRaw},
                          {300, 16, 200, 136, 30, SampleMode::kMol}, {100, 2, 1, 1, 2, SampleMode::kRaw}};
  for (const Shape& s : shapes) {
    LoopCase c;
    make_case(&c, rng, s.T, s.B, s.H, s.F, s.N, s.mode);
    const auto logits_ref = run_case(c, ref, true);
    const auto samples_ref = run_case(c, ref, false);
    std::vector<float> first_logits, first_samples;
    for (const WaveoptKernels* k : simds) {
      const auto logits = run_case(c, k, true);
      double worst = 0;
      for (size_t i = 0; i < logits.size(); ++i) worst = std::max(worst, std::fabs((double)logits[i] - logits_ref[i]));
      char what[160];
      std::snprintf(what, sizeof what, "%s loop T=%lld B=%lld H=%lld F=%lld N=%lld teacher-forced logits: max diff %.3g",
                    k->isa, (long long)s.T, (long long)s.B, (long long)s.H, (long long)s.F, (long long)s.N, worst);
      check(worst < 1e-4, what);
      const auto samples = run_case(c, k, false);
      int64_t agree = s.T;
      for (int64_t t = 0; t < s.T && agree == s.T; ++t)
        for (int64_t b = 0; b < s.B; ++b)
          if (std::fabs(samples[t * s.B + b] - samples_ref[t * s.B + b]) > (s.mode == SampleMode::kMol ? 1e-4 : 0)) {
            agree = t;
            break;
          }
      std::printf("  %s loop H=%lld B=%lld %s: logits within %.2g of scalar; free-run samples agree for %lld/%lld steps\n",
                  k->isa, (long long)s.H, (long long)s.B, s.mode == SampleMode::kMol ? "mol" : "raw", worst,
                  (long long)agree, (long long)s.T);
      if (first_logits.empty()) {
        first_logits = logits;
        first_samples = samples;
      } else {
        check(logits == first_logits && samples == first_samples,
              std::string(k->isa) + " loop is not bitwise identical to " + simds[0]->isa);
      }
    }
  }
}

// --- benchmark ---------------------------------------------------------------------------
int bench(const std::string& isa, int64_t steps) {
  const WaveoptKernels* k = isa.empty() ? dispatch().kernels : kernels_for(isa);
  if (!k) {
    std::printf("ISA %s is not available on this CPU\n", isa.c_str());
    return 2;
  }
  std::mt19937 rng(3);
  for (int64_t B : {1, 4, 16}) {
    LoopCase c;
    make_case(&c, rng, steps, B, 512, 512, 512, SampleMode::kRaw);
    run_case(c, k, false);  // warm-up
    // Best of 5 by wall clock and by this thread's CPU time: on a shared machine the CPU
    // time leaves out the time other processes held the core (not their cache traffic).
    double best = 1e30, best_cpu = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      timespec c0, c1;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
      const auto t0 = std::chrono::steady_clock::now();
      run_case(c, k, false);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
      best_cpu = std::min(best_cpu, (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec));
    }
    const double per_step = best / (double)steps, per_step_cpu = best_cpu / (double)steps;
    const double weight_bytes = 4.0 * (3 * 3 * 512 * 512 + 3 * 512 * 512);
    std::printf("%s B=%-2lld %8.0f samples/s (%8.0f by CPU time)  %7.1f us/step  weights %.1f GB/s  %.1f GFLOP/s\n",
                k->isa, (long long)B, (double)B / per_step, (double)B / per_step_cpu, per_step * 1e6,
                weight_bytes / per_step / 1e9, 2.0 * B * weight_bytes / 4.0 / per_step / 1e9);
  }
  return 0;
}

// --- read bandwidth probe ------------------------------------------------------------------
// Streams `floats` floats with 8 independent accumulators (AVX-512 when the CPU has it, else
// AVX2): the per-core read bandwidth a bandwidth-bound GEMV can hope for at that size.
__attribute__((target("avx512f"))) float stream_sum_avx512(const float* p, size_t n) {
  __m512 a[8];
  for (auto& x : a) x = _mm512_setzero_ps();
  for (size_t i = 0; i + 128 <= n; i += 128)
    for (int j = 0; j < 8; ++j) a[j] = _mm512_add_ps(a[j], _mm512_load_ps(p + i + 16 * j));
  for (int j = 1; j < 8; ++j) a[0] = _mm512_add_ps(a[0], a[j]);
  return _mm512_reduce_add_ps(a[0]);
}
__attribute__((target("avx2"))) float stream_sum_avx2(const float* p, size_t n) {
  __m256 a[8];
  for (auto& x : a) x = _mm256_setzero_ps();
  for (size_t i = 0; i + 64 <= n; i += 64)
    for (int j = 0; j < 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_load_ps(p + i + 8 * j));
  for (int j = 1; j < 8; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  float out[8];
  _mm256_storeu_ps(out, a[0]);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

// Y = X·W + b for one shape, `copies` different weight matrices in turn (so the working set
// can exceed the caches, as in the WaveRNN step).
int gemm_bench(int64_t n, int64_t k, size_t rows, int copies, bool transposed) {
  const WaveoptKernels* kt = dispatch().kernels;
  std::mt19937 rng(5);
  std::vector<PackedMatrix> mats(copies);
  auto bias = random_vector(rng, n, 1.0f);
  for (auto& m : mats) {
    auto w = random_vector(rng, n * k, 0.1f);
    m.pack(w.data(), n, k, transposed, 1, bias.data());
  }
  auto x = random_vector(rng, rows * k, 1.0f);
  std::vector<float> y(rows * n);
  double best = 1e30;
  for (int rep = 0; rep < 20; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& m : mats) kt->gemm(m.view(), x.data(), k, rows, nullptr, 0, nullptr, nullptr, 0, y.data(), n);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / copies);
  }
  std::printf("%s gemm n=%lld k=%lld rows=%zu: %.1f us, %.1f GFLOP/s, %.1f GB/s of weights\n", kt->isa, (long long)n,
              (long long)k, rows, best * 1e6, 2.0 * rows * n * k / best / 1e9, 4.0 * n * k / best / 1e9);
  return 0;
}

float stream_sum_plain(const float* p, size_t n) {
  float a[8] = {0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

int bandwidth(const std::vector<double>& sizes_mb) {
  const bool avx512 = kernels_for("avx512") != nullptr, avx2 = kernels_for("avx2") != nullptr;
  for (double mb : sizes_mb) {
    const size_t n = (size_t)(mb * 1e6 / 4) / 128 * 128;
    AlignedBuffer buf = aligned_floats(n);
    for (size_t i = 0; i < n; ++i) buf[i] = 1e-3f * (float)(i % 7);
    volatile float sink = 0;
    const int passes = (int)std::max<size_t>(3, (size_t)(400e6 / (n * 4.0)));
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int p = 0; p < passes; ++p)
        sink = sink + (avx512 ? stream_sum_avx512(buf.get(), n)
                              : avx2 ? stream_sum_avx2(buf.get(), n) : stream_sum_plain(buf.get(), n));
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / passes);
    }
    std::printf("read %6.2f MB: %6.1f GB/s (%s loads, best of 5)\n", n * 4.0 / 1e6, n * 4.0 / best / 1e9,
                avx512 ? "avx512" : avx2 ? "avx2" : "sse2");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "gemm" && argc >= 5)
    return gemm_bench(std::atoll(argv[2]), std::atoll(argv[3]), (size_t)std::atoll(argv[4]),
                      argc > 5 ? std::atoi(argv[5]) : 8, argc > 6 && std::string(argv[6]) == "t");
  if (cmd == "bandwidth") {
    std::vector<double> sizes;
    for (int i = 2; i < argc; ++i) sizes.push_back(std::atof(argv[i]));
    if (sizes.empty()) sizes = {1, 3, 12, 16};
    return bandwidth(sizes);
  }
  if (cmd == "bench") return bench(argc > 2 ? argv[2] : "", argc > 3 ? std::atoll(argv[3]) : 300);
  const Dispatch& d = dispatch();
  std::printf("dispatch: %s (%s)\n", d.kernels ? d.kernels->isa : "none", d.reason.c_str());
  const auto simds = simd_tables();
  std::printf("SIMD tables on this CPU:");
  for (auto* k : simds) std::printf(" %s", k->isa);
  std::printf("%s\n", simds.empty() ? " none (only the scalar reference is tested)" : "");
  std::mt19937 rng(1);
  std::vector<std::vector<float>> gemm_out, gate_out, sample_out;
  for (const WaveoptKernels* k : simds) {
    std::mt19937 local(7);  // same inputs for every ISA, so their outputs can be compared
    gemm_out.emplace_back();
    gate_out.emplace_back();
    sample_out.emplace_back();
    test_gemm(k, local, &gemm_out.back());
    test_gates(k, local, &gate_out.back());
    test_sampling(k, local, &sample_out.back());
    test_activations(k, true);
  }
  for (size_t i = 1; i < simds.size(); ++i) {
    check(gemm_out[i] == gemm_out[0], std::string(simds[i]->isa) + " gemm differs bitwise from " + simds[0]->isa);
    check(gate_out[i] == gate_out[0], std::string(simds[i]->isa) + " gru_gates differ bitwise from " + simds[0]->isa);
    check(sample_out[i] == sample_out[0], std::string(simds[i]->isa) + " sampling differs from " + simds[0]->isa);
  }
  test_loop(simds, rng);
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "OK", g_failures);
  return g_failures ? 1 : 0;
}
