// The per-ISA kernels of cwd, kd_logits and relation_kl built for AVX-512 F, DQ, VL and BW with 512-bit
// vectors (16 float32 / 8 float64 lanes; isa.h: CpuIsa::avx512); each op's .cpp picks them per call when the
// CPU has them. This translation unit holds nothing but the kernels, so no other code is compiled with the
// wider ISA.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512dq,avx512vl,avx512bw,prefer-vector-width=512")
#define RELKD_ISA avx512
#include "cwd_kernels.h"
#include "kd_logits_kernels.h"
#include "relation_kl_kernels.h"
#undef RELKD_ISA
#pragma GCC pop_options
#endif
