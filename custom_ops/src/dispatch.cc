// Compiled without ISA flags: it only asks the CPU what it has and hands out a table.
#include "dispatch.h"

#include <cstdlib>

namespace waveopt {
namespace {

// Every table, best first: what the CPU needs for it, in words and as a test. The automatic
// choice and WAVEOPT_ISA both walk this one list.
struct IsaEntry {
  const char* name;
  const char* needs;  // "" for none
  bool (*runs_on)(const Dispatch&);
  const WaveoptKernels* (*table)();
};

bool has_avx2(const Dispatch& d) { return d.cpu_avx2 && d.cpu_fma; }
bool has_avx512(const Dispatch& d) {
  return d.cpu_avx512f && d.cpu_avx512bw && d.cpu_avx512vl && d.cpu_fma;
}
bool has_avx512vnni(const Dispatch& d) { return has_avx512(d) && d.cpu_avx512vnni; }
bool always(const Dispatch&) { return true; }

const IsaEntry kIsas[] = {
    {"avx512vnni", "avx512f+avx512bw+avx512vl+avx512vnni+fma", has_avx512vnni, waveopt_kernels_avx512vnni},
    {"avx512", "avx512f+avx512bw+avx512vl+fma", has_avx512, waveopt_kernels_avx512},
    {"avx2", "avx2+fma", has_avx2, waveopt_kernels_avx2},
    {"scalar", "", always, waveopt_kernels_scalar},
};

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
  std::string lacking;  // auto: what the better tables needed
  std::string names;
  for (const IsaEntry& isa : kIsas) {
    names += std::string(names.empty() ? "" : ", ") + isa.name;
    if (want == "auto") {
      if (isa.runs_on(d)) {
        d.kernels = isa.table();
        d.reason = *isa.needs ? std::string("best the CPU has: ") + isa.needs : "the CPU has no SIMD table's features";
        if (!lacking.empty()) d.reason += " (no " + lacking + ")";
        return d;
      }
      if (lacking.empty()) lacking = isa.needs;
    } else if (want == isa.name) {
      if (isa.runs_on(d)) {
        d.kernels = isa.table();
        d.reason = "forced by WAVEOPT_ISA=" + want;
      } else {
        d.error = d.reason = "WAVEOPT_ISA=" + want + " but this CPU lacks " + isa.needs;
      }
      return d;
    }
  }
  d.error = d.reason = "WAVEOPT_ISA=" + want + " is not one of " + names + " (or unset for auto)";
  return d;
}

}  // namespace

const Dispatch& dispatch() {
  static const Dispatch d = decide();
  return d;
}

const WaveoptKernels* kernels_for(const std::string& isa) {
  const Dispatch& d = dispatch();
  for (const IsaEntry& entry : kIsas)
    if (isa == entry.name) return entry.runs_on(d) ? entry.table() : nullptr;
  return nullptr;
}

}  // namespace waveopt
