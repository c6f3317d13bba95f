// The kd_logits_loss block kernels built for AVX2+FMA; kd_logits.cpp picks them (isa.h) when the CPU has
// both and no wider build applies. Nothing but the kernels is compiled with the wider ISA.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RELKD_ISA avx2
#include "kd_logits_kernels.h"
#undef RELKD_ISA
#pragma GCC pop_options
#endif
