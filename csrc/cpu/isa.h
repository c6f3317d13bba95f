// Run-time choice of the instruction set for the CPU kernels built twice (baseline and AVX2+FMA).
#pragma once

namespace relkd {

inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

}  // namespace relkd
