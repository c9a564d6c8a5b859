// Kernel test and micro-benchmark, linked against the kernel objects directly (no ORT):
// every SIMD table this CPU can run is compared with the scalar reference, kernel by kernel
// and over the whole WaveRNN loop; the AVX2, AVX-512 and AVX-512 VNNI paths must agree bit
// for bit. The integer kernels (quantize, gemm_q for int8 and int16) must match the scalar
// reference bit for bit too, and their sums an int64 reference exactly, saturation edge
// cases included; QuantizedMatrix::pack must keep the format's bounds after rounding.
//
//   waveopt_kernel_test [accuracy]       run the tests, printing the exp/sigmoid/tanh errors
//                                        on dense grids (exit status 1 on any failure)
//   waveopt_kernel_test bench [ISA] [STEPS]   samples/s of the loop at rnn 512, fc 512, 9 bits
//   waveopt_kernel_test bandwidth [MB ...]    streaming read GB/s of buffers of these sizes
//   waveopt_kernel_test gemm N K ROWS [COPIES] [t|n] [BITS] [ISA]
//                                        one GEMM shape (t: W given as [K, N]; BITS 32
//                                        (default), 16 or 8: float or integer GEMM)
//   waveopt_kernel_test qgemm [ISA]      fp32 vs int16 vs int8 at 512×512 and 1536×512,
//                                        rows 1 and 16
//   waveopt_kernel_test threads          only the thread-team tests: the loop with teams of
//                                        1-4 members bit-identical to no team (fp32, int16,
//                                        int8; even, uneven and empty shares), two callers on
//                                        one team at once (the ThreadSanitizer build runs this)
//   waveopt_kernel_test bench-threads [STEPS] [BITS]  samples/s of the loop at rnn 512 with
//                                        1 and 2 threads, B = 1 and 16
//   waveopt_kernel_test barrier [ROUNDS] ns per barrier round of 2 threads: pure spin,
//                                        spin-then-sleep (the default) and sleep at once
//
// The sanitizer builds run the same binary: -DWAVEOPT_SANITIZE=ON under ASan + UBSan (all
// tests), -DWAVEOPT_SANITIZE=thread under ThreadSanitizer (`threads`).
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
#include <thread>
#include <vector>

#include "dispatch.h"
#include "kernels.h"
#include "pack.h"
#include "thread_team.h"
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
  for (const char* isa : {"avx2", "avx512", "avx512vnni"})
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

// --- integer GEMM ------------------------------------------------------------------------

// The quantization of an input: zero point and range (kernels.h).
struct QParams {
  int bits, zero, qmin, qmax;
};
const QParams kQSigned8 = {8, 128, 1, 255}, kQUnsigned8 = {8, 0, 0, 255},
              kQ16 = {16, 0, -WAVEOPT_Q16_MAX, WAVEOPT_Q16_MAX};

size_t q_bytes(int bits) { return bits == 8 ? 1 : 2; }
int64_t q_group(int bits) { return bits == 8 ? 4 : 2; }

// Element (b, c) of a quantized input buffer as an int.
int q_get(const std::vector<uint8_t>& buf, int bits, size_t ld, size_t b, size_t c) {
  if (bits == 8) return buf[b * ld + c];
  int16_t v;
  std::memcpy(&v, buf.data() + 2 * (b * ld + c), 2);
  return v;
}

void test_quantize(const WaveoptKernels* simd, std::mt19937& rng, std::vector<uint8_t>* last_out) {
  const WaveoptKernels* ref = waveopt_kernels_scalar();
  std::vector<uint8_t> all;
  const float nan = std::nanf(""), inf = INFINITY;
  for (const QParams& qp : {kQSigned8, kQUnsigned8, kQ16})
    for (size_t k : {1, 3, 4, 5, 16, 17, 31, 33, 200, 512})
      for (size_t rows : {1, 2, 5, 17}) {
        const size_t k_pad = (size_t)round_up((int64_t)k, q_group(qp.bits)), ld = k_pad + 8, ldx = k + 2;
        auto x = random_vector(rng, rows * ldx, 1.3f);
        std::vector<float> inv(rows);
        for (size_t b = 0; b < rows; ++b) {
          // Row 1: a power of two with exact halves (x·inv = m + 0.5) to check half-to-even.
          inv[b] = b == 1 ? 64.0f : (qp.bits == 8 ? 127.0f : 4095.0f) * (0.5f + (float)(b % 3));
          if (b == 1)
            for (size_t c = 0; c < k; ++c) x[b * ldx + c] = ((float)((int)(c % 41) - 20) + 0.5f) / 64.0f;
        }
        const float specials[] = {nan, inf, -inf, 1e30f, -1e30f, 0.0f, -0.0f, 3e9f};
        for (size_t i = 0; i < 8 && i < rows * k; ++i) x[(i % rows) * ldx + (i * 7) % k] = specials[i];
        std::vector<uint8_t> q_ref(rows * ld * q_bytes(qp.bits), 0xAB), q(q_ref.size(), 0xAB);
        ref->quantize(x.data(), ldx, rows, k, k_pad, inv.data(), qp.zero, qp.qmin, qp.qmax, qp.bits, q_ref.data(), ld);
        simd->quantize(x.data(), ldx, rows, k, k_pad, inv.data(), qp.zero, qp.qmin, qp.qmax, qp.bits, q.data(), ld);
        char what[160];
        std::snprintf(what, sizeof what, "%s quantize bits=%d zero=%d k=%zu rows=%zu", simd->isa, qp.bits, qp.zero, k,
                      rows);
        check(q == q_ref, std::string(what) + ": differs from scalar");
        // The scalar reference against the formula, in double; the padding; nothing past k_pad.
        bool formula_ok = true, tail_ok = true;
        for (size_t b = 0; b < rows; ++b) {
          for (size_t c = 0; c < k; ++c) {
            const float t = x[b * ldx + c] * inv[b];
            double want = std::isnan(t) ? qp.qmin : std::nearbyint((double)t) + qp.zero;
            want = std::min<double>(std::max<double>(want, qp.qmin), qp.qmax);
            formula_ok &= q_get(q_ref, qp.bits, ld, b, c) == (int)want;
          }
          for (size_t c = k; c < k_pad; ++c) tail_ok &= q_get(q_ref, qp.bits, ld, b, c) == qp.zero;
          for (size_t i = k_pad * q_bytes(qp.bits); i < ld * q_bytes(qp.bits); ++i)
            tail_ok &= q_ref[b * ld * q_bytes(qp.bits) + i] == 0xAB;
        }
        check(formula_ok, std::string(what) + ": scalar differs from clamp(nearbyint(x*inv) + zero)");
        check(tail_ok, std::string(what) + ": padding columns wrong or written past k_pad");
        all.insert(all.end(), q.begin(), q.end());
      }
  // Round half to even, explicitly.
  {
    const float x[6] = {2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f};
    const int want[6] = {2, 4, -2, -4, 0, 0};
    int16_t out[6];
    const float inv = 1.0f;
    simd->quantize(x, 6, 1, 6, 6, &inv, 0, -WAVEOPT_Q16_MAX, WAVEOPT_Q16_MAX, 16, out, 6);
    bool ok = true;
    for (int i = 0; i < 6; ++i) ok &= out[i] == want[i];
    check(ok, std::string(simd->isa) + " quantize does not round half to even");
  }
  *last_out = all;
}

// Quantizes x [rows, k] (ld k) with the scalar reference, one scale per row from its max.
std::vector<uint8_t> quantize_rows(const std::vector<float>& x, size_t rows, size_t k, size_t k_pad, size_t ld,
                                   const QParams& qp, std::vector<float>* scale) {
  std::vector<uint8_t> q(rows * ld * q_bytes(qp.bits));
  std::vector<float> inv(rows);
  scale->resize(rows);
  const float levels = qp.bits == 16 ? (float)WAVEOPT_Q16_MAX : qp.zero ? 127.0f : 255.0f;
  for (size_t b = 0; b < rows; ++b) {
    float m = 0;
    for (size_t c = 0; c < k; ++c) m = std::max(m, std::fabs(x[b * k + c]));
    m = m > 0 ? m : 1.0f;
    inv[b] = levels / m;
    (*scale)[b] = m / levels;
  }
  waveopt_kernels_scalar()->quantize(x.data(), k, rows, k, k_pad, inv.data(), qp.zero, qp.qmin, qp.qmax, qp.bits,
                                     q.data(), ld);
  return q;
}

// gemm_q vs the scalar reference (bitwise for act none/relu) over ragged shapes, both
// formats, gates = 3 and [k, n] packing; the scalar result vs the float GEMM within the
// quantization error.
void test_gemm_q(const WaveoptKernels* simd, std::mt19937& rng, std::vector<float>* last_out) {
  const WaveoptKernels* ref = waveopt_kernels_scalar();
  const int64_t ns[] = {1, 7, 16, 30, 33, 48, 136, 512};
  const int64_t ks[] = {1, 2, 3, 5, 24, 200, 512};
  const size_t rows_list[] = {1, 2, 3, 4, 5, 7, 8, 9, 11, 14, 16, 17};
  std::vector<float> all;
  for (const QParams& qp : {kQSigned8, kQUnsigned8, kQ16})
    for (int64_t n : ns)
      for (int64_t k : ks)
        for (size_t rows : rows_list) {
          if (n * k * (int64_t)rows > 300000) continue;
          const int variant = (int)((n + k + rows) % 4);
          const int act = (int)((n * 3 + k + rows + qp.zero) % 4);
          const bool transposed = (n + k) % 2 == 0;
          const int gates = n % 3 == 0 && rows % 2 == 1 ? 3 : 1;
          auto w = random_vector(rng, n * k, 0.2f);
          auto bias = random_vector(rng, n, 1.0f);
          auto x = random_vector(rng, rows * k, 1.0f);
          if (!qp.zero)
            for (auto& v : x) v = std::fabs(v);
          QuantizedMatrix m;
          PackedMatrix mf;
          const float* bp = variant & 1 ? bias.data() : nullptr;
          check(m.pack(w.data(), n, k, transposed, gates, bp, qp.bits), "QuantizedMatrix::pack failed");
          mf.pack(w.data(), n, k, transposed, gates, bp);
          const WaveoptPackedQ* v = m.view();
          const int64_t N = v->n;  // columns stored (3·gate_pad with gates)
          const size_t ldq = (size_t)v->k_pad + 4;
          std::vector<float> xs;
          const auto xq = quantize_rows(x, rows, k, (size_t)v->k_pad, ldq, qp, &xs);
          auto addend = random_vector(rng, rows * (N + 1), 1.0f);
          auto s = random_vector(rng, rows, 1.0f);
          auto u = random_vector(rng, N, 1.0f);
          const size_t ldy = N + 2;
          std::vector<float> y_ref(rows * ldy, 7.0f), y(rows * ldy, 7.0f), y_f(rows * ldy, 7.0f);
          const float* add = variant & 2 ? addend.data() : nullptr;
          const float* sp = variant == 3 ? s.data() : nullptr;
          const float* up = variant == 3 ? u.data() : nullptr;
          ref->gemm_q(v, xq.data(), ldq, rows, xs.data(), qp.zero, add, N + 1, sp, up, act, y_ref.data(), ldy);
          simd->gemm_q(v, xq.data(), ldq, rows, xs.data(), qp.zero, add, N + 1, sp, up, act, y.data(), ldy);
          ref->gemm(mf.view(), x.data(), k, rows, add, N + 1, sp, up, act, y_f.data(), ldy);
          double worst = 0, worst_f = 0, max_scale = 0;
          for (int64_t j = 0; j < v->n_pad; ++j) max_scale = std::max(max_scale, (double)v->scale[j]);
          bool past_n = true;
          for (size_t b = 0; b < rows; ++b)
            for (size_t j = 0; j < ldy; ++j) {
              const size_t i = b * ldy + j;
              if (j >= (size_t)N) {
                past_n &= y[i] == 7.0f && y_ref[i] == 7.0f;
                continue;
              }
              worst = std::max(worst, std::fabs((double)y[i] - y_ref[i]));
              if (std::isnan(y[i]) != std::isnan(y_ref[i])) worst = INFINITY;
              worst_f = std::max(worst_f, std::fabs((double)y_ref[i] - y_f[i]));
            }
          // |x| <= 1, |w| <= 0.2: each product is off by at most 0.2·xs/2 + max_scale/2 (+ their product).
          const double xs_max = *std::max_element(xs.begin(), xs.end());
          const double tol_f = (double)k * (0.2 * xs_max / 2 + max_scale / 2 + xs_max * max_scale / 4) + 1e-5;
          char what[200];
          std::snprintf(what, sizeof what, "%s gemm_q bits=%d zero=%d n=%lld k=%lld rows=%zu gates=%d t=%d variant=%d act=%d",
                        simd->isa, qp.bits, qp.zero, (long long)n, (long long)k, rows, gates, (int)transposed, variant,
                        act);
          check(past_n, std::string(what) + ": wrote past n");
          if (act == WAVEOPT_ACT_NONE || act == WAVEOPT_ACT_RELU)
            check(worst == 0, std::string(what) + ": not bitwise equal to scalar, max diff " + std::to_string(worst));
          else
            check(worst <= 1e-6, std::string(what) + ": max diff to scalar " + std::to_string(worst));
          check(worst_f <= tol_f, std::string(what) + ": scalar gemm_q vs float gemm " + std::to_string(worst_f) +
                                      " > " + std::to_string(tol_f));
          all.insert(all.end(), y.begin(), y.end());
        }
  *last_out = all;
}

// Runs gemm_q (act none, scale 1, no epilogue) on integer weights q [n, k] and integer
// inputs xi [rows, k] and checks every table's result equals (float) of the int64 sum.
void check_exact(const std::vector<const WaveoptKernels*>& tables, const std::vector<int16_t>& q, int64_t n, int64_t k,
                 const std::vector<int>& xi, size_t rows, const QParams& qp, const std::string& name) {
  QuantizedMatrix m;
  std::vector<float> ones(n, 1.0f), xs(rows, 1.0f);
  check(m.pack_quantized(q.data(), ones.data(), n, k, nullptr, qp.bits), name + ": pack_quantized failed");
  const WaveoptPackedQ* v = m.view();
  const size_t ld = (size_t)v->k_pad;
  std::vector<uint8_t> xq(rows * ld * q_bytes(qp.bits));
  for (size_t b = 0; b < rows; ++b)
    for (size_t c = 0; c < ld; ++c) {
      const int val = c < (size_t)k ? xi[b * k + c] : qp.zero;
      if (qp.bits == 8)
        xq[b * ld + c] = (uint8_t)val;
      else {
        const int16_t s16 = (int16_t)val;
        std::memcpy(xq.data() + 2 * (b * ld + c), &s16, 2);
      }
    }
  std::vector<float> want(rows * n);
  for (size_t b = 0; b < rows; ++b)
    for (int64_t j = 0; j < n; ++j) {
      int64_t sum = 0;
      for (int64_t c = 0; c < k; ++c) sum += (int64_t)(xi[b * k + c] - qp.zero) * q[j * k + c];
      want[b * n + j] = (float)sum;
    }
  for (const WaveoptKernels* t : tables) {
    std::vector<float> y(rows * n, 7.0f);
    t->gemm_q(v, xq.data(), ld, rows, xs.data(), qp.zero, nullptr, 0, nullptr, nullptr, WAVEOPT_ACT_NONE, y.data(), n);
    size_t bad = 0;
    for (size_t i = 0; i < y.size(); ++i) bad += y[i] != want[i];
    check(bad == 0, std::string(t->isa) + " " + name + ": " + std::to_string(bad) + " sums differ from int64");
  }
}

void test_gemm_q_exact(const std::vector<const WaveoptKernels*>& tables, std::mt19937& rng) {
  // Random integers within the bounds, ragged shapes, both zero points.
  for (int64_t n : {1, 17, 40})
    for (int64_t k : {1, 2, 7, 64, 301})
      for (size_t rows : {1, 3, 8, 16, 17})
        for (const QParams& qp : {kQSigned8, kQUnsigned8, kQ16}) {
          std::vector<int16_t> q(n * k);
          const int r16 = (int)std::min<int64_t>(32767, WAVEOPT_Q16_L1_MAX / k);
          for (int64_t j = 0; j < n; ++j)
            for (int64_t c = 0; c < k; c += 2) {
              if (qp.bits == 8) {
                const int a = (int)(rng() % 255) - 127, room = 127 - std::abs(a);
                q[j * k + c] = (int16_t)a;
                if (c + 1 < k) q[j * k + c + 1] = (int16_t)((int)(rng() % (2 * room + 1)) - room);
              } else {
                for (int64_t t = c; t < c + 2 && t < k; ++t) q[j * k + t] = (int16_t)((int)(rng() % (2 * r16 + 1)) - r16);
              }
            }
          std::vector<int> xi(rows * k);
          for (auto& v : xi) v = qp.qmin + (int)(rng() % (qp.qmax - qp.qmin + 1));
          check_exact(tables, q, n, k, xi, rows, qp,
                      "exact random bits=" + std::to_string(qp.bits) + " zero=" + std::to_string(qp.zero) + " n=" +
                          std::to_string(n) + " k=" + std::to_string(k) + " rows=" + std::to_string(rows));
        }
  // int8: adjacent pairs summing to exactly ±127 against inputs at 255, 1 and 0.
  const int pairs[][2] = {{127, 0}, {0, 127}, {64, 63}, {63, 64}, {-64, -63}, {-127, 0}, {0, -127}, {-63, -64},
                          {127, -0}, {100, 27}, {-100, -27}, {126, 1}};
  const int64_t n8 = 12, k8 = 66;  // k8 not a multiple of 4
  std::vector<int16_t> q8(n8 * k8);
  for (int64_t j = 0; j < n8; ++j)
    for (int64_t c = 0; c < k8; ++c) q8[j * k8 + c] = (int16_t)pairs[j][c % 2];
  for (const QParams& qp : {kQSigned8, kQUnsigned8}) {
    std::vector<int> xi;
    for (int pattern = 0; pattern < 4; ++pattern)
      for (int64_t c = 0; c < k8; ++c) {
        const int hi = 255, lo = qp.zero ? 1 : 0;
        xi.push_back(pattern == 0 ? hi : pattern == 1 ? lo : pattern == 2 ? (c % 2 ? lo : hi) : (c % 4 < 2 ? hi : lo));
      }
    check_exact(tables, q8, n8, k8, xi, 4, qp, "int8 pair-sum 127 edge, zero=" + std::to_string(qp.zero));
  }
  // The same through quantize(): inputs ±1 with scale 1/127 become 255 and 1.
  for (const WaveoptKernels* t : tables) {
    std::vector<float> x(2 * k8);
    for (int64_t c = 0; c < k8; ++c) {
      x[c] = 1.0f;
      x[k8 + c] = c % 3 ? -1.0f : 1.0f;
    }
    const int64_t k_pad = round_up(k8, 4);
    std::vector<uint8_t> xq(2 * k_pad);
    const float inv[2] = {127.0f, 127.0f};
    t->quantize(x.data(), k8, 2, k8, k_pad, inv, 128, 1, 255, 8, xq.data(), k_pad);
    std::vector<int> xi;
    for (int b = 0; b < 2; ++b)
      for (int64_t c = 0; c < k8; ++c) xi.push_back(xq[b * k_pad + c]);
    check(xi[0] == 255 && xi[k8 + 1] == 1, std::string(t->isa) + " quantize(±1 · 127) is not 255 / 1");
    check_exact({t}, q8, n8, k8, xi, 2, kQSigned8, "int8 quantized ±1 edge");
  }
  // int16: rows at the L1 bound (Σ|w| = WAVEOPT_Q16_L1_MAX) against inputs at ±4095.
  const int64_t n16 = 4, k16 = 33;
  std::vector<int16_t> q16(n16 * k16, 0);
  for (int64_t j = 0; j < n16; ++j) {
    int64_t left = WAVEOPT_Q16_L1_MAX;
    for (int64_t c = 0; c < k16 && left > 0; ++c) {
      const int64_t mag = std::min<int64_t>(left, 32767);
      left -= mag;
      const bool neg = j == 1 || (j >= 2 && c % 2);
      q16[j * k16 + c] = (int16_t)(neg ? -mag : mag);
    }
  }
  std::vector<int> xi16;
  for (int pattern = 0; pattern < 3; ++pattern)
    for (int64_t c = 0; c < k16; ++c)
      xi16.push_back(pattern == 0 ? 4095 : pattern == 1 ? -4095 : (c % 2 ? -4095 : 4095));
  check_exact(tables, q16, n16, k16, xi16, 3, kQ16, "int16 L1-bound edge");
}

// QuantizedMatrix::pack: bounds after rounding, dequantization error, row mapping (gates,
// [k, n]), row sums, zero rows, refusals.
void test_pack_q(std::mt19937& rng) {
  for (int bits : {8, 16})
    for (int64_t k : {1, 2, 5, 64, 513, 4096})
      for (int gates : {1, 3})
        for (bool transposed : {false, true}) {
          const int64_t n = gates == 3 ? 3 * 11 : 21;
          auto w = random_vector(rng, n * k, 0.3f);
          auto at = [&](int64_t row, int64_t c) -> float& { return transposed ? w[c * n + row] : w[row * k + c]; };
          // Adversarial rows: two equal large neighbours, a row of zeros, one huge weight
          // among tiny ones, denormals, all equal (the int16 L1 bound binds), exact halves.
          for (int64_t c = 0; c < k; ++c) {
            at(0, c) = c < 2 ? 1.0f : 0.01f;
            at(1, c) = 0.0f;
            at(2, c) = c == k / 2 ? 50.0f : 1e-6f;
            at(3, c) = 1e-40f * (float)(c % 5);
            at(4, c) = 1.0f;
            at(5, c) = (float)(c % 7) + 0.5f;
            at(6, c) = c % 2 ? -1.0f : 1.0f;
          }
          QuantizedMatrix m;
          auto bias = random_vector(rng, n, 1.0f);
          const std::string name = "pack bits=" + std::to_string(bits) + " k=" + std::to_string(k) + " gates=" +
                                   std::to_string(gates) + " t=" + std::to_string(transposed);
          if (!m.pack(w.data(), n, k, transposed, gates, bias.data(), bits)) {
            check(false, name + ": failed");
            continue;
          }
          const WaveoptPackedQ* v = m.view();
          const int64_t per_gate = n / gates;
          bool bounds = true, deq = true, sums = true, mapping = true;
          std::vector<bool> used(v->n_pad, false);
          for (int64_t row = 0; row < n; ++row) {
            const int64_t dst = gates > 1 ? (row / per_gate) * v->gate_pad + row % per_gate : row;
            used[dst] = true;
            const float sc = v->scale[dst];
            mapping &= v->bias[dst] == bias[row] && std::isfinite(sc) && sc >= 0;
            int64_t l1 = 0, sum = 0;
            for (int64_t c = 0; c < v->k_pad; ++c) {
              const int qv = m.q_at(dst, c);
              if (c >= k) {
                bounds &= qv == 0;
                continue;
              }
              l1 += std::abs(qv);
              sum += qv;
              if (bits == 8 && c % 2 == 0) bounds &= std::abs(qv) + (c + 1 < k ? std::abs(m.q_at(dst, c + 1)) : 0) <= 127;
              if (bits == 16) bounds &= std::abs(qv) <= 32767;
              const double err = std::fabs((double)qv * sc - at(row, c));
              deq &= err <= sc / 2 * (1 + 1e-6) + std::fabs(at(row, c)) * 1e-7;
            }
            if (bits == 16) bounds &= l1 <= WAVEOPT_Q16_L1_MAX;
            if (bits == 8) sums &= v->row_sum[dst] == sum;
            if (row == 1) mapping &= sc == 0.0f && sum == 0;  // the zero row
          }
          for (int64_t r = 0; r < v->n_pad; ++r)
            if (!used[r]) mapping &= v->scale[r] == 0.0f && m.q_at(r, 0) == 0 && v->bias[r] == 0.0f;
          check(bounds, name + ": a pair/L1 bound fails after rounding");
          check(deq, name + ": dequantized weight not within scale/2");
          check(sums, name + ": row_sum wrong");
          check(mapping, name + ": row mapping, bias, or padding rows wrong");
          check(v->n == (gates > 1 ? 3 * v->gate_pad : n) && v->k == k && v->k_pad == round_up(k, bits == 8 ? 4 : 2) &&
                    (bits == 8) == (v->row_sum != nullptr) && ((uintptr_t)v->w % 64) == 0,
                name + ": view fields wrong");
        }
  // Refusals: non-finite weights; int8 with k past the s32 bound; k = 0 works.
  QuantizedMatrix m;
  float bad[4] = {1.0f, std::nanf(""), 0.0f, 0.0f};
  check(!m.pack(bad, 2, 2, false, 1, nullptr, 8), "pack accepted a NaN weight");
  bad[1] = INFINITY;
  check(!m.pack(bad, 2, 2, false, 1, nullptr, 16), "pack accepted an infinite weight");
  check(!m.pack(bad, 2, 2, false, 1, nullptr, 4), "pack accepted bits=4");
  std::vector<float> wide(WAVEOPT_Q8_MAX_K + 1, 0.5f);
  check(!m.pack(wide.data(), 1, WAVEOPT_Q8_MAX_K + 1, false, 1, nullptr, 8), "int8 pack accepted k > WAVEOPT_Q8_MAX_K");
  check(m.pack(wide.data(), 1, WAVEOPT_Q8_MAX_K + 1, false, 1, nullptr, 16), "int16 pack refused a wide row");
  check(m.pack(wide.data(), 3, 0, false, 1, nullptr, 8) && m.view()->k_pad == 0, "pack with k = 0 failed");
  float y[3] = {7, 7, 7}, xs = 1.0f;
  uint8_t xq[4] = {0};
  waveopt_kernels_scalar()->gemm_q(m.view(), xq, 4, 1, &xs, 128, nullptr, 0, nullptr, nullptr, 0, y, 3);
  check(y[0] == 0 && y[1] == 0 && y[2] == 0, "gemm_q with k = 0 is not zero");
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
        ref->gru_gates(H, H, G, rows, gi.data(), ld_gi, sp, u.data(), gxp, gh.data(), ld_g, h.data(), out_ref.data(),
                       ld_h, addp, sum_ref.data());
        simd->gru_gates(H, H, G, rows, gi.data(), ld_gi, sp, u.data(), gxp, gh.data(), ld_g, h.data(), out.data(), ld_h,
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

void make_case(LoopCase* c, std::mt19937& rng, int64_t T, int64_t B, int64_t H, int64_t F, int64_t N, SampleMode mode,
               int bits = 0) {
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
  LoopQuant quant;
  quant.bits = bits;
  quant.fc1_range = quant.fc2_range = 3.0f;
  const std::string err = c->w.pack(c->d, c->whh1.data(), c->bhh1.data(), c->wx2.data(), c->whh2.data(),
                                    c->bhh2.data(), c->wfc1.data(), c->wfc2.data(), c->wfc3.data(), c->bfc3.data(),
                                    quant);
  check(err.empty(), "pack: " + err);
}

std::vector<float> run_case(const LoopCase& c, const WaveoptKernels* k, bool teacher, ThreadTeam* team = nullptr) {
  LoopInputs in{c.gi1.data(), c.gi2.data(), c.f1.data(), c.f2.data(), c.u1.data(), c.u2.data(), c.u3.data(),
                teacher ? nullptr : c.noise.data(), teacher ? c.prev.data() : nullptr, nullptr};
  std::vector<float> out(teacher ? c.d.steps * c.d.batch * c.d.classes : c.d.steps * c.d.batch);
  const std::string err = run_wavernn_loop(k, c.d, c.w, in, c.mode, out.data(), nullptr, nullptr, team);
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

// --- thread teams ------------------------------------------------------------------------
// The loop on teams of 1-4 members must be bit-identical to the loop without a team, for
// float32, int16 and int8 weights, even shares, uneven ones and members with nothing to do;
// and two callers running one team at once must both get the serial results.
void test_threads(const WaveoptKernels* k, std::mt19937& rng) {
  struct Shape { int64_t T, B, H, F, N; SampleMode mode; };
  // H = 200: 13 panels (uneven for 2, 3, 4); H = 72, N = 30: 5 and 2 panels; H = 33, F = 17,
  // N = 2: 3, 2 and 1 panels (4 members: some own nothing).
  // T = 150 > 2 jobs of 64 steps (odd-length last job: the h1/h2 parity across jobs).
  const Shape shapes[] = {{150, 1, 200, 136, 512, SampleMode::kRaw}, {70, 16, 72, 40, 30, SampleMode::kMol},
                          {20, 3, 33, 17, 2, SampleMode::kRaw}};
  std::vector<std::unique_ptr<ThreadTeam>> teams;
  for (int n = 1; n <= 4; ++n) {
    teams.push_back(std::make_unique<ThreadTeam>(n));
    teams.back()->set_adaptive(false);  // every member works, however busy the machine
  }
  for (const Shape& s : shapes)
    for (int bits : {0, 16, 8}) {
      LoopCase c;
      make_case(&c, rng, s.T, s.B, s.H, s.F, s.N, s.mode, bits);
      const auto logits_ref = run_case(c, k, true), samples_ref = run_case(c, k, false);
      for (auto& team : teams) {
        char what[160];
        std::snprintf(what, sizeof what, "%s loop bits=%d H=%lld B=%lld %s on %d threads differs from 1 thread", k->isa,
                      bits, (long long)s.H, (long long)s.B, s.mode == SampleMode::kMol ? "mol" : "raw", team->size());
        check(run_case(c, k, true, team.get()) == logits_ref, std::string(what) + " (teacher-forced logits)");
        check(run_case(c, k, false, team.get()) == samples_ref, std::string(what) + " (free-run samples)");
      }
      if (bits == 8 || bits == 0) {  // two callers on one team: one runs on the team, one alone
        std::vector<float> got[2];
        std::thread other([&] { for (int r = 0; r < 3; ++r) got[1] = run_case(c, k, false, teams[1].get()); });
        for (int r = 0; r < 3; ++r) got[0] = run_case(c, k, false, teams[1].get());
        other.join();
        check(got[0] == samples_ref && got[1] == samples_ref,
              std::string(k->isa) + " two callers on one team differ from serial");
      }
    }
  // The adaptive team: a barrier that sleeps at once looks like a busy machine (every early
  // arrival asleep), so after the first job the team works alone, then probes both again.
  LoopCase c;
  make_case(&c, rng, 150, 2, 40, 24, 64, SampleMode::kRaw);
  const auto ref = run_case(c, k, false);
  ThreadTeam adaptive(2);
  adaptive.set_backoff(0, false);
  check(run_case(c, k, false, &adaptive) == ref && adaptive.active() == 1,
        "adaptive team: did not fall back to 1 member after sleeping waits (or results changed)");
  for (int i = 0; i < ThreadTeam::kProbeEvery / 3; ++i) run_case(c, k, false, &adaptive);  // 3 jobs per run
  check(adaptive.active() == 2, "adaptive team: did not probe the whole team again");
  // A probe that finds the machine still busy doubles the wait before the next one ...
  run_case(c, k, false, &adaptive);  // its first job is the probe: asleep again
  check(adaptive.active() == 1 && adaptive.probe_interval() == 2 * ThreadTeam::kProbeEvery,
        "adaptive team: a failed probe did not double the wait before the next");
  // ... and one that works (nobody asleep) keeps the whole team and resets the wait.
  adaptive.set_backoff(0, true);  // spin only: never asleep
  for (int i = 0; i < 2 * ThreadTeam::kProbeEvery / 3 + 1; ++i) run_case(c, k, false, &adaptive);
  check(adaptive.active() == 2 && adaptive.probe_interval() == ThreadTeam::kProbeEvery,
        "adaptive team: a working probe did not keep the whole team");
  std::printf("  %s loop on teams of 1-4 threads: bit-identical to 1 thread (fp32, int16, int8; 3 shapes)\n", k->isa);
}

// Free-running loop samples/s at rnn 512, fc 512, 512 classes with 1 and 2 threads.
int bench_threads(int64_t steps, int bits) {
  const WaveoptKernels* k = dispatch().kernels;
  std::mt19937 rng(3);
  ThreadTeam two(2);
  two.set_adaptive(false);
  for (int64_t B : {1, 16}) {
    LoopCase c;
    make_case(&c, rng, steps, B, 512, 512, 512, SampleMode::kRaw, bits);
    for (ThreadTeam* team : {static_cast<ThreadTeam*>(nullptr), &two}) {
      run_case(c, k, false, team);  // warm-up
      double best = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        run_case(c, k, false, team);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("%s %2d-bit B=%-2lld %d thread(s): %9.0f samples/s  %7.1f us/step (best of 5)\n", k->isa,
                  bits ? bits : 32, (long long)B, team ? team->size() : 1, (double)(B * steps) / best,
                  best / (double)steps * 1e6);
    }
  }
  return 0;
}

// ns per barrier round with 2 threads: pure spin, the default spin-then-sleep, sleep at once.
int bench_barrier(int64_t rounds) {
  struct Variant { const char* name; int64_t spin_ticks; bool spin_only; };
  const Variant variants[] = {{"spin only", 0, true},
                              {"spin ~20 us, then futex (default)", Barrier::kDefaultSpinTicks, false},
                              {"futex at once", 0, false}};
  for (const Variant& v : variants) {
    Barrier barrier(2);
    barrier.set_backoff(v.spin_ticks, v.spin_only);
    const auto t0 = std::chrono::steady_clock::now();
    std::thread other([&] { for (int64_t r = 0; r < rounds; ++r) barrier.wait(); });
    for (int64_t r = 0; r < rounds; ++r) barrier.wait();
    other.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("barrier, 2 threads, %-34s %8.0f ns/round (%lld rounds, %lld waits slept)\n", v.name,
                s / (double)rounds * 1e9, (long long)rounds, (long long)barrier.sleeps());
  }
  return 0;
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
  float out[16];  // not _mm512_reduce_add_ps: GCC 12's header warns (-Wuninitialized)
  _mm512_storeu_ps(out, a[0]);
  float sum = 0;
  for (float v : out) sum += v;
  return sum;
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
// can exceed the caches, as in the WaveRNN step). bits 32: the float GEMM; 16 or 8: the
// integer GEMM on pre-quantized inputs, with the cost of quantizing them printed apart.
int gemm_bench(int64_t n, int64_t k, size_t rows, int copies, bool transposed, int bits, const std::string& isa) {
  const WaveoptKernels* kt = isa.empty() ? dispatch().kernels : kernels_for(isa);
  if (!kt || (bits != 32 && bits != 16 && bits != 8)) {
    std::printf("ISA %s is not available on this CPU, or bits %d is not 32, 16 or 8\n", isa.c_str(), bits);
    return 2;
  }
  std::mt19937 rng(5);
  std::vector<PackedMatrix> mats(bits == 32 ? copies : 0);
  std::vector<QuantizedMatrix> qmats(bits == 32 ? 0 : copies);
  auto bias = random_vector(rng, n, 1.0f);
  for (int i = 0; i < copies; ++i) {
    auto w = random_vector(rng, n * k, 0.1f);
    if (bits == 32)
      mats[i].pack(w.data(), n, k, transposed, 1, bias.data());
    else
      qmats[i].pack(w.data(), n, k, transposed, 1, bias.data(), bits);
  }
  auto x = random_vector(rng, rows * k, 1.0f);
  const QParams qp = bits == 8 ? kQSigned8 : kQ16;
  const size_t k_pad = (size_t)round_up(k, bits == 8 ? 4 : 2);
  std::vector<uint8_t> xq(rows * k_pad * 2);
  std::vector<float> inv(rows, bits == 8 ? 127.0f : (float)WAVEOPT_Q16_MAX), xs(rows, 1.0f / inv[0]);
  std::vector<float> y(rows * n);
  double best = 1e30, best_q = 1e30;
  for (int rep = 0; rep < 20; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    if (bits == 32)
      for (auto& m : mats) kt->gemm(m.view(), x.data(), k, rows, nullptr, 0, nullptr, nullptr, 0, y.data(), n);
    else
      for (auto& m : qmats)
        kt->gemm_q(m.view(), xq.data(), k_pad, rows, xs.data(), qp.zero, nullptr, 0, nullptr, nullptr, 0, y.data(), n);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / copies);
    if (bits != 32) {
      const auto t1 = std::chrono::steady_clock::now();
      for (int i = 0; i < copies; ++i)
        kt->quantize(x.data(), k, rows, k, k_pad, inv.data(), qp.zero, qp.qmin, qp.qmax, bits, xq.data(), k_pad);
      best_q = std::min(best_q, std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() / copies);
    }
  }
  std::printf("%-10s %2d-bit gemm n=%-4lld k=%-4lld rows=%-2zu: %7.2f us, %6.1f GOP/s, %5.1f GB/s of weights", kt->isa,
              bits, (long long)n, (long long)k, rows, best * 1e6, 2.0 * rows * n * k / best / 1e9,
              bits / 8.0 * n * k / best / 1e9);
  if (bits != 32) std::printf("  (+ quantize %.2f us)", best_q * 1e6);
  std::printf("\n");
  return 0;
}

int qgemm_table(const std::string& isa) {
  for (int64_t n : {512, 1536})
    for (size_t rows : {1, 16})
      for (int bits : {32, 16, 8})
        if (int rc = gemm_bench(n, 512, rows, 8, false, bits, isa)) return rc;
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
                      argc > 5 ? std::atoi(argv[5]) : 8, argc > 6 && std::string(argv[6]) == "t",
                      argc > 7 ? std::atoi(argv[7]) : 32, argc > 8 ? argv[8] : "");
  if (cmd == "qgemm") return qgemm_table(argc > 2 ? argv[2] : "");
  if (cmd == "bandwidth") {
    std::vector<double> sizes;
    for (int i = 2; i < argc; ++i) sizes.push_back(std::atof(argv[i]));
    if (sizes.empty()) sizes = {1, 3, 12, 16};
    return bandwidth(sizes);
  }
  if (cmd == "bench") return bench(argc > 2 ? argv[2] : "", argc > 3 ? std::atoll(argv[3]) : 300);
  if (cmd == "bench-threads") return bench_threads(argc > 2 ? std::atoll(argv[2]) : 1000, argc > 3 ? std::atoi(argv[3]) : 0);
  if (cmd == "barrier") return bench_barrier(argc > 2 ? std::atoll(argv[2]) : 200000);
  if (cmd == "threads") {
    std::mt19937 rng(5);
    test_threads(dispatch().kernels, rng);
    std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "OK", g_failures);
    return g_failures ? 1 : 0;
  }
  const Dispatch& d = dispatch();
  std::printf("dispatch: %s (%s)\n", d.kernels ? d.kernels->isa : "none", d.reason.c_str());
  const auto simds = simd_tables();
  std::printf("SIMD tables on this CPU:");
  for (auto* k : simds) std::printf(" %s", k->isa);
  std::printf("%s\n", simds.empty() ? " none (only the scalar reference is tested)" : "");
  std::mt19937 rng(1);
  std::vector<std::vector<float>> gemm_out, gate_out, sample_out, gemm_q_out;
  std::vector<std::vector<uint8_t>> quantize_out;
  test_pack_q(rng);
  std::vector<const WaveoptKernels*> all_tables = {waveopt_kernels_scalar()};
  all_tables.insert(all_tables.end(), simds.begin(), simds.end());
  test_gemm_q_exact(all_tables, rng);
  for (const WaveoptKernels* k : simds) {
    std::mt19937 local(7);  // same inputs for every ISA, so their outputs can be compared
    gemm_out.emplace_back();
    gate_out.emplace_back();
    sample_out.emplace_back();
    quantize_out.emplace_back();
    gemm_q_out.emplace_back();
    test_quantize(k, local, &quantize_out.back());
    test_gemm_q(k, local, &gemm_q_out.back());
    test_gemm(k, local, &gemm_out.back());
    test_gates(k, local, &gate_out.back());
    test_sampling(k, local, &sample_out.back());
    test_activations(k, true);
  }
  for (size_t i = 1; i < simds.size(); ++i) {
    check(gemm_out[i] == gemm_out[0], std::string(simds[i]->isa) + " gemm differs bitwise from " + simds[0]->isa);
    check(gate_out[i] == gate_out[0], std::string(simds[i]->isa) + " gru_gates differ bitwise from " + simds[0]->isa);
    check(sample_out[i] == sample_out[0], std::string(simds[i]->isa) + " sampling differs from " + simds[0]->isa);
    check(quantize_out[i] == quantize_out[0], std::string(simds[i]->isa) + " quantize differs from " + simds[0]->isa);
    check(gemm_q_out[i] == gemm_q_out[0], std::string(simds[i]->isa) + " gemm_q differs bitwise from " + simds[0]->isa);
  }
  test_loop(simds, rng);
  test_threads(dispatch().kernels, rng);
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "OK", g_failures);
  return g_failures ? 1 : 0;
}
