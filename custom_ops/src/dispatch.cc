// Compiled without ISA flags: it only asks the CPU what it has and hands out a table.
#include "dispatch.h"

#include <cstdlib>

namespace waveopt {
namespace {

bool has_avx2(const Dispatch& d) { return d.cpu_avx2 && d.cpu_fma; }
bool has_avx512(const Dispatch& d) {
  return d.cpu_avx512f && d.cpu_avx512bw && d.cpu_avx512vl && d.cpu_fma;
}
bool has_avx512vnni(const Dispatch& d) { return has_avx512(d) && d.cpu_avx512vnni; }

Dispatch decide() {
  Dispatch d;
  __builtin_cpu_init();
  d.cpu_avx2 = __builtin_cpu_supports("avx2");
  d.cpu_fma = __builtin_cpu_supports("fma");
  d.cpu_avx512f = __builtin_cpu_supports("avx512f");
  d.cpu_avx512bw = __builtin_cpu_supports("avx512bw");
  d.cpu_avx512vl = __builtin_cpu_supports("avx512vl");
  d.cpu_avx512vnni = __builtin_cpu_supports("avx512vnni");
  const char* env = std::getenv("WAVEOPT_ISA");
  d.requested = env && *env ? env : "auto";
  const std::string& want = d.requested;
  if (want == "auto") {
    if (has_avx512vnni(d)) {
      d.kernels = waveopt_kernels_avx512vnni();
      d.reason = "best the CPU has: avx512f+avx512bw+avx512vl+avx512vnni+fma";
    } else if (has_avx512(d)) {
      d.kernels = waveopt_kernels_avx512();
      d.reason = "best the CPU has: avx512f+avx512bw+avx512vl+fma (no avx512vnni)";
    } else if (has_avx2(d)) {
      d.kernels = waveopt_kernels_avx2();
      d.reason = "best the CPU has: avx2+fma (no avx512f/bw/vl)";
    } else {
      d.kernels = waveopt_kernels_scalar();
      d.reason = "the CPU has neither avx2+fma nor avx512";
    }
  } else if (want == "scalar") {
    d.kernels = waveopt_kernels_scalar();
    d.reason = "forced by WAVEOPT_ISA=scalar";
  } else if (want == "avx2") {
    if (has_avx2(d)) {
      d.kernels = waveopt_kernels_avx2();
      d.reason = "forced by WAVEOPT_ISA=avx2";
    } else {
      d.error = "WAVEOPT_ISA=avx2 but this CPU lacks avx2+fma";
    }
  } else if (want == "avx512") {
    if (has_avx512(d)) {
      d.kernels = waveopt_kernels_avx512();
      d.reason = "forced by WAVEOPT_ISA=avx512";
    } else {
      d.error = "WAVEOPT_ISA=avx512 but this CPU lacks avx512f+avx512bw+avx512vl+fma";
    }
  } else if (want == "avx512vnni") {
    if (has_avx512vnni(d)) {
      d.kernels = waveopt_kernels_avx512vnni();
      d.reason = "forced by WAVEOPT_ISA=avx512vnni";
    } else {
      d.error = "WAVEOPT_ISA=avx512vnni but this CPU lacks avx512f+avx512bw+avx512vl+avx512vnni+fma";
    }
  } else {
    d.error = "WAVEOPT_ISA=" + want + " is not one of scalar, avx2, avx512, avx512vnni (or unset for auto)";
  }
  if (!d.error.empty()) d.reason = d.error;
  return d;
}

}  // namespace

const Dispatch& dispatch() {
  static const Dispatch d = decide();
  return d;
}

const WaveoptKernels* kernels_for(const std::string& isa) {
  const Dispatch& d = dispatch();
  if (isa == "scalar") return waveopt_kernels_scalar();
  if (isa == "avx2") return has_avx2(d) ? waveopt_kernels_avx2() : nullptr;
  if (isa == "avx512") return has_avx512(d) ? waveopt_kernels_avx512() : nullptr;
  if (isa == "avx512vnni") return has_avx512vnni(d) ? waveopt_kernels_avx512vnni() : nullptr;
  return nullptr;
}

}  // namespace waveopt
