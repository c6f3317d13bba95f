// Tile kernels of relation_kl_loss on the CPU, compiled once per instruction set: relation_kl.cpp includes
// this file for the baseline ISA and kernels_avx2.cpp / kernels_avx512.cpp for the wider builds,
// each inside its own namespace (RELKD_ISA); relation_kl.cpp picks one per call (isa.h) and declares the
// entry points of relation_kl_entry.h. Plain C++ on raw pointers; the helpers it calls
// (fast_math.h, the per-pair math of relation_kl_pair.h) are `static`, so no wider-ISA copy of an inline
// function can reach a baseline caller.
//
// A tile holds the unscaled inner products s = X̂s_I X̂s_Jᵀ and d = X̂t_I X̂t_Jᵀ − s for rows I, columns J
// (row-major, I.len × J.len). The exponentials, sums and weights run in float64: the KL of nearly equal rows
// is a difference of O(δ) terms.
#include <cstdint>

#include "../common/relation_kl_pair.h"
#include "fast_math.h"
#include "relation_kl_tile.h"

namespace relkd {
namespace rkl_cpu {
namespace RELKD_ISA {

// The exponential of the per-pair math: branch-free, so the column loops vectorize.
struct FastExp {
  double operator()(double x) const { return exp_nonpositive(x); }
};

// Sum of a row buffer in kLanes independent partial sums (a strict-order reduction does not vectorize).
inline double lane_sum(const double* __restrict__ v, int64_t len) {
  double part[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= len; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += v[c + l];
  double total = 0.0;
  for (; c < len; ++c) total += v[c];
  for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  return total;
}

// Forward: adds row i's three sums over j ∈ J and (off the diagonal) row j's sums over i ∈ I. Every loop
// is a branch-free map over the columns, so it vectorizes.
template <typename W, bool kUniform>
void sums_tile(const W* __restrict__ s, const W* __restrict__ d, const TileSpan& span, const double* __restrict__ ms,
               const double* __restrict__ mt, double* sum_s, double* sum_t, double* acc) {
  const int64_t i0 = span.i0, ni = span.ni, j0 = span.j0, nj = span.nj;
  const double inv_tau = span.inv_tau;
  double cs[kTile] = {}, ct[kTile] = {}, ca[kTile] = {};  // column sums (rows j ∈ J)
  double es[kTile], et[kTile], ed[kTile];                 // this row's terms
  const double* __restrict__ ms_j = ms + j0;
  const double* __restrict__ mt_j = mt + j0;
  for (int64_t r = 0; r < ni; ++r) {
    const int64_t i = i0 + r;
    const W* __restrict__ srow = s + r * nj;
    const W* __restrict__ drow = d + r * nj;
    const double ms_i = ms[i], mt_i = mt[i];
    for (int64_t c = 0; c < nj; ++c) {
      const double sv = static_cast<double>(srow[c]) * inv_tau, dv = static_cast<double>(drow[c]) * inv_tau;
      const rkl_pair::SumTerms e = rkl_pair::sum_terms(sv, dv, ms_i, mt_i, FastExp{});
      es[c] = e.es, et[c] = e.et, ed[c] = e.ed;
    }
    sum_s[i] += lane_sum(es, nj), sum_t[i] += lane_sum(et, nj), acc[i] += lane_sum(ed, nj);
    if (span.diagonal) continue;
    if (kUniform) {
      for (int64_t c = 0; c < nj; ++c) cs[c] += es[c], ct[c] += et[c], ca[c] += ed[c];
    } else {
      for (int64_t c = 0; c < nj; ++c) {
        const double sv = static_cast<double>(srow[c]) * inv_tau, dv = static_cast<double>(drow[c]) * inv_tau;
        const rkl_pair::SumTerms e = rkl_pair::sum_terms(sv, dv, ms_j[c], mt_j[c], FastExp{});
        cs[c] += e.es, ct[c] += e.et, ca[c] += e.ed;
      }
    }
  }
  if (span.diagonal) return;
  for (int64_t c = 0; c < nj; ++c) sum_s[j0 + c] += cs[c], sum_t[j0 + c] += ct[c], acc[j0 + c] += ca[c];
}

// Backward: overwrites s with G_s when kStudent and d with G_t when kTeacher (G_ij = W_ij + W_ji, W from
// the statistics of each row). A side not asked for is neither computed nor written.
template <typename W, bool kUniform, bool kStudent, bool kTeacher>
void weights_tile(W* __restrict__ s, W* __restrict__ d, const TileSpan& span, const double* terms, int64_t N) {
  const int64_t i0 = span.i0, ni = span.ni, j0 = span.j0, nj = span.nj;
  const double inv_tau = span.inv_tau;
  const double *ms = terms, *mt = terms + N, *rs = terms + 2 * N, *rt = terms + 3 * N, *a = terms + 4 * N;
  const double* __restrict__ ms_j = ms + j0;
  const double* __restrict__ mt_j = mt + j0;
  const double* __restrict__ rs_j = rs + j0;
  const double* __restrict__ rt_j = rt + j0;
  const double* __restrict__ a_j = a + j0;
  double gs[kTile], gt[kTile];
  for (int64_t r = 0; r < ni; ++r) {
    const int64_t i = i0 + r;
    W* __restrict__ srow = s + r * nj;
    W* __restrict__ drow = d + r * nj;
    const double ms_i = ms[i], mt_i = mt[i], rs_i = rs[i], rt_i = rt[i], a_i = a[i];
    for (int64_t c = 0; c < nj; ++c) {
      const double sv = static_cast<double>(srow[c]) * inv_tau, dv = static_cast<double>(drow[c]) * inv_tau;
      const rkl_pair::Exps e_i = rkl_pair::exps(sv, dv, ms_i, mt_i, FastExp{});
      const rkl_pair::Exps e_j = kUniform ? e_i : rkl_pair::exps(sv, dv, ms_j[c], mt_j[c], FastExp{});
      const rkl_pair::Probs p_i = rkl_pair::probs(e_i, rs_i, rt_i), p_j = rkl_pair::probs(e_j, rs_j[c], rt_j[c]);
      if (kStudent) gs[c] = rkl_pair::student_weight(p_i.ps, p_i.pt, p_j.ps, p_j.pt);
      if (kTeacher) gt[c] = rkl_pair::teacher_weight(p_i.pt, p_j.pt, dv, a_i, a_j[c]);
    }
    if (kStudent && kTeacher) {
      for (int64_t c = 0; c < nj; ++c) srow[c] = static_cast<W>(gs[c]), drow[c] = static_cast<W>(gt[c]);
    } else if (kStudent) {
      for (int64_t c = 0; c < nj; ++c) srow[c] = static_cast<W>(gs[c]);
    } else {
      for (int64_t c = 0; c < nj; ++c) drow[c] = static_cast<W>(gt[c]);
    }
  }
}

// weights_tile for the sides asked for (at least one).
template <typename W, bool kUniform>
void weights_sides(W* s, W* d, const TileSpan& span, const double* terms, int64_t N, bool student, bool teacher) {
  if (student && teacher) return weights_tile<W, kUniform, true, true>(s, d, span, terms, N);
  if (student) return weights_tile<W, kUniform, true, false>(s, d, span, terms, N);
  weights_tile<W, kUniform, false, true>(s, d, span, terms, N);
}

// The entry points relation_kl.cpp calls (one set per ISA namespace).
void sums(const float* s, const float* d, const TileSpan& span, const double* ms, const double* mt, double* sum_s,
          double* sum_t, double* acc) {
  span.uniform ? sums_tile<float, true>(s, d, span, ms, mt, sum_s, sum_t, acc)
               : sums_tile<float, false>(s, d, span, ms, mt, sum_s, sum_t, acc);
}

void sums(const double* s, const double* d, const TileSpan& span, const double* ms, const double* mt,
          double* sum_s, double* sum_t, double* acc) {
  span.uniform ? sums_tile<double, true>(s, d, span, ms, mt, sum_s, sum_t, acc)
               : sums_tile<double, false>(s, d, span, ms, mt, sum_s, sum_t, acc);
}

// student, teacher: which of G_s, G_t to form (at least one).
void weights(float* s, float* d, const TileSpan& span, const double* terms, int64_t N, bool student, bool teacher) {
  span.uniform ? weights_sides<float, true>(s, d, span, terms, N, student, teacher)
               : weights_sides<float, false>(s, d, span, terms, N, student, teacher);
}

void weights(double* s, double* d, const TileSpan& span, const double* terms, int64_t N, bool student,
             bool teacher) {
  span.uniform ? weights_sides<double, true>(s, d, span, terms, N, student, teacher)
               : weights_sides<double, false>(s, d, span, terms, N, student, teacher);
}

}  // namespace RELKD_ISA
}  // namespace rkl_cpu
}  // namespace relkd
