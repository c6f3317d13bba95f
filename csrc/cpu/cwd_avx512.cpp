// The cwd_loss chunk kernels built for AVX-512 (512-bit vectors: 16 float32 / 8 float64 lanes);
// cwd.cpp picks them (isa.h) when the CPU has AVX-512 F, DQ, VL and BW.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512dq,avx512vl,avx512bw,prefer-vector-width=512")
#define RELKD_ISA avx512
#include "cwd_kernels.h"
#undef RELKD_ISA
#pragma GCC pop_options
#endif
