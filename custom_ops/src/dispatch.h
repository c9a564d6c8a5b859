// The one dispatch point: which kernel table this process uses, chosen once.
#ifndef WAVEOPT_DISPATCH_H
#define WAVEOPT_DISPATCH_H

#include <string>

#include "kernels.h"

namespace waveopt {

struct Dispatch {
  const WaveoptKernels* kernels = nullptr;  // nullptr when `error` is set
  std::string requested;                   // WAVEOPT_ISA, or "auto"
  std::string reason;                      // why this table (or the error)
  std::string error;                       // non-empty: WAVEOPT_ISA asks for what cannot run
  bool cpu_avx2 = false, cpu_fma = false, cpu_avx512f = false, cpu_avx512bw = false, cpu_avx512vl = false,
       cpu_avx512vnni = false;
};

// Decided on the first call (reads WAVEOPT_ISA and the CPU's features), then fixed for the
// life of the process. Auto picks avx512vnni, else avx512, else avx2, else scalar;
// WAVEOPT_ISA=scalar|avx2|avx512|avx512vnni forces one ("avx512" is the table without VNNI,
// also on a CPU that has it).
const Dispatch& dispatch();

// The table for a named ISA if this CPU can run it, else nullptr (tests, benchmarks).
const WaveoptKernels* kernels_for(const std::string& isa);

}  // namespace waveopt

#endif
