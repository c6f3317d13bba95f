// The cwd_loss chunk kernels built for AVX2+FMA; cwd.cpp picks them (isa.h) when the CPU has
// both and no wider build applies. Nothing but the kernels is compiled with the wider ISA.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RELKD_ISA avx2
#include "cwd_kernels.h"
#undef RELKD_ISA
#pragma GCC pop_options
#endif
