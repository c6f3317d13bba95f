// The per-pair math of relation_kl_loss (DESIGN §3.4), defined once for the CPU tile kernels
// (csrc/cpu/relation_kl_kernels.h) and both CUDA sweeps (csrc/cuda/relation_kl_kernels.cuh,
// relation_kl_fused_kernels.cuh). No CUDA includes, so the CPU emulation harnesses (tests/cuda_emu) compile
// it as well.
//
// Arguments are the pair's s_ij and d_ij = t_ij − s_ij already divided by τ, and the statistics of one row
// r ∈ {i, j} (RelationKLKernels in relkd.h): offsets m_s, m_t, and in backward r_s = e^{m_s − lse_s},
// r_t = e^{m_t − lse_t}, a = lse_t − lse_s + KL. The exponential is a parameter: the CPU passes its
// branch-free exp_nonpositive (the tile loops vectorize), CUDA the device exp.
//
// `static`: every translation unit keeps its own copy, compiled for that unit's instruction set (the AVX2
// build of the CPU kernels, kernels_avx2.cpp), so the linker can never hand a wider-ISA copy to a
// baseline caller (as in csrc/cpu/fast_math.h).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define RELKD_HOST_DEVICE __host__ __device__
#else
#define RELKD_HOST_DEVICE
#endif

namespace relkd {
namespace rkl_pair {

// The exponential of the CUDA sweeps: the CUDA math library's on the device, the C library's in the CPU
// emulation of tests/cuda_emu.
struct MathExp {
  RELKD_HOST_DEVICE double operator()(double x) const { return exp(x); }
};

// e^{s_ij − m_s,r} and e^{t_ij − m_t,r}: the unnormalized softmax terms of the pair in row r.
struct Exps {
  double es, et;
};

template <typename Exp>
RELKD_HOST_DEVICE static inline Exps exps(double sv, double dv, double ms, double mt, Exp exp_fn) {
  return {exp_fn(sv - ms), exp_fn(sv + dv - mt)};
}

// Forward: the pair's terms of row r's three sums Σ_j e^{s − m_s}, Σ_j e^{t − m_t}, Σ_j e^{t − m_t}(t − s).
struct SumTerms {
  double es, et, ed;
};

RELKD_HOST_DEVICE static inline SumTerms sum_terms(Exps e, double dv) { return {e.es, e.et, e.et * dv}; }

template <typename Exp>
RELKD_HOST_DEVICE static inline SumTerms sum_terms(double sv, double dv, double ms, double mt, Exp exp_fn) {
  return sum_terms(exps(sv, dv, ms, mt, exp_fn), dv);
}

// Backward: p_s and p_t of the pair in row r, from the exponentials and the row's r_s, r_t. (A caller that
// needs only one side's weights leaves the other's exponential unused; inlined, the compiler drops it.)
struct Probs {
  double ps, pt;
};

RELKD_HOST_DEVICE static inline Probs probs(Exps e, double rs, double rt) { return {e.es * rs, e.et * rt}; }

template <typename Exp>
RELKD_HOST_DEVICE static inline Probs probs(double sv, double dv, double ms, double mt, double rs, double rt,
                                            Exp exp_fn) {
  return probs(exps(sv, dv, ms, mt, exp_fn), rs, rt);
}

// The weights of G = W + Wᵀ from the pair in row i (p_i) and in row j (p_j):
//   G_s,ij = Ws_ij + Ws_ji,  Ws_ij = p_s,ij − p_t,ij;
//   G_t,ij = Wt_ij + Wt_ji,  Wt_ij = p_t,ij (d_ij − a_i)   (d_ij = d_ji).
RELKD_HOST_DEVICE static inline double student_weight(double ps_i, double pt_i, double ps_j, double pt_j) {
  return (ps_i - pt_i) + (ps_j - pt_j);
}

RELKD_HOST_DEVICE static inline double teacher_weight(double pt_i, double pt_j, double dv, double a_i, double a_j) {
  return pt_i * (dv - a_i) + pt_j * (dv - a_j);
}

}  // namespace rkl_pair
}  // namespace relkd
