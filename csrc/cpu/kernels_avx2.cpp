// The per-ISA kernels of cwd, kd_logits and relation_kl built for AVX2+FMA (isa.h: CpuIsa::avx2); each op's
// .cpp picks them per call when the CPU has both and no wider build applies. This translation unit holds
// nothing but the kernels, so no other code is compiled with the wider ISA.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RELKD_ISA avx2
#include "cwd_kernels.h"
#include "kd_logits_kernels.h"
#include "relation_kl_kernels.h"
#undef RELKD_ISA
#pragma GCC pop_options
#endif
