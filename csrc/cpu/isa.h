// Run-time choice of the instruction set for the CPU kernels built three times: baseline, AVX2+FMA and
// AVX-512 (F, DQ, VL, BW; 512-bit vectors). Each op call picks one (cpu_isa) and passes it down, so a test
// can switch builds between calls with RELKD_CPU_ISA and every build is covered on a host that has it.
#pragma once

#include <c10/util/Exception.h>

#include <string>

#include "../relkd.h"

namespace relkd {

enum class CpuIsa { baseline, avx2, avx512 };

inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

inline bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw");
  return yes;
#else
  return false;
#endif
}

// The widest build this CPU runs: what RELKD_CPU_ISA=auto picks.
inline CpuIsa widest_cpu_isa() {
  return cpu_has_avx512() ? CpuIsa::avx512 : cpu_has_avx2_fma() ? CpuIsa::avx2 : CpuIsa::baseline;
}

// The name RELKD_CPU_ISA gives a build.
inline const char* cpu_isa_name(CpuIsa isa) {
  return isa == CpuIsa::avx512 ? "avx512" : isa == CpuIsa::avx2 ? "avx2" : "baseline";
}

// The build `op` runs: the widest this CPU has, or the one RELKD_CPU_ISA names (auto, avx512, avx2,
// baseline); naming one the CPU lacks is a ValueError, never a silent fallback.
inline CpuIsa cpu_isa(const char* op) {
  const std::string choice = env_choice(op, "RELKD_CPU_ISA", {"auto", "avx512", "avx2", "baseline"});
  if (choice == "baseline") return CpuIsa::baseline;
  if (choice == "auto") return widest_cpu_isa();
  const bool has = choice == "avx512" ? cpu_has_avx512() : cpu_has_avx2_fma();
  TORCH_CHECK_VALUE(has, op, ": RELKD_CPU_ISA=", choice, " but this CPU lacks ",
                    choice == "avx512" ? "AVX-512 (F, DQ, VL, BW)" : "AVX2+FMA");
  return choice == "avx512" ? CpuIsa::avx512 : CpuIsa::avx2;
}

}  // namespace relkd

// RELKD_ISA_CALL(isa, fn, args...): fn(args...) from the namespace (baseline, avx2, avx512) of that build.
#if defined(__x86_64__) && defined(__GNUC__)
#define RELKD_ISA_CALL(isa, fn, ...)                                                                      \
  ((isa) == ::relkd::CpuIsa::avx512 ? avx512::fn(__VA_ARGS__)                                             \
   : (isa) == ::relkd::CpuIsa::avx2 ? avx2::fn(__VA_ARGS__)                                               \
                                    : baseline::fn(__VA_ARGS__))
#else
#define RELKD_ISA_CALL(isa, fn, ...) baseline::fn(__VA_ARGS__)
#endif
