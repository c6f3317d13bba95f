// The kernels of the panel sweep of relation_kl_loss (relation_kl.cu). Device code only, no CUDA headers, so
// tests/cuda_emu can run them on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/relation_kl_pair.h"

namespace relkd::panel {

using rkl_pair::MathExp;

// One warp per row (b, i): adds Σ_j e^{s_ij − m_s,i}, Σ_j e^{t_ij − m_t,i} and
// Σ_j e^{t_ij − m_t,i}(t_ij − s_ij) over the panel's w columns. Panels run one after another on the stream,
// so each row has one writer.
template <typename W>
__global__ void row_sums_kernel(const W* __restrict__ s, const W* __restrict__ d, int64_t rows, int64_t N,
                                int64_t w, double inv_tau, const double* __restrict__ offsets,
                                double* __restrict__ sums) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    const int64_t b = row / N, i = row % N;
    const double ms = offsets[2 * b * N + i], mt = offsets[(2 * b + 1) * N + i];
    double es = 0.0, et = 0.0, ea = 0.0;
    for (int64_t c = lane; c < w; c += 32) {
      const double sv = static_cast<double>(s[row * w + c]) * inv_tau;
      const double dv = static_cast<double>(d[row * w + c]) * inv_tau;
      const rkl_pair::SumTerms e = rkl_pair::sum_terms(sv, dv, ms, mt, MathExp{});
      es += e.es;
      et += e.et;
      ea += e.ed;
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      es += __shfl_down_sync(0xffffffffu, es, offset);
      et += __shfl_down_sync(0xffffffffu, et, offset);
      ea += __shfl_down_sync(0xffffffffu, ea, offset);
    }
    if (lane == 0) {
      double* o = sums + 3 * b * N + i;
      o[0] += es;
      o[N] += et;
      o[2 * N] += ea;
    }
  }
}

// In place: s_ij → G_s,ij when `student`, d_ij → G_t,ij when `teacher` (relation_kl_pair.h), with p from each
// row's own statistics. A side not asked for is neither computed nor written.
template <typename W>
__global__ void weights_kernel(W* __restrict__ s, W* __restrict__ dd, int64_t B, int64_t N, int64_t j0, int64_t w,
                               double inv_tau, const double* __restrict__ terms, bool student, bool teacher) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < B * N * w;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / w, b = row / N, i = row % N, j = j0 + idx % w;
    const double* ms = terms + 5 * b * N;
    const double *mt = ms + N, *rs = ms + 2 * N, *rt = ms + 3 * N, *a = ms + 4 * N;
    const double sv = static_cast<double>(s[idx]) * inv_tau, d = static_cast<double>(dd[idx]) * inv_tau;
    if (!student) {  // p_s is dead code here: its exponentials are compiled away
      const rkl_pair::Probs p_i = rkl_pair::probs(sv, d, ms[i], mt[i], rs[i], rt[i], MathExp{});
      const rkl_pair::Probs p_j = rkl_pair::probs(sv, d, ms[j], mt[j], rs[j], rt[j], MathExp{});
      dd[idx] = static_cast<W>(rkl_pair::teacher_weight(p_i.pt, p_j.pt, d, a[i], a[j]));
      continue;
    }
    const rkl_pair::Probs p_i = rkl_pair::probs(sv, d, ms[i], mt[i], rs[i], rt[i], MathExp{});
    const rkl_pair::Probs p_j = rkl_pair::probs(sv, d, ms[j], mt[j], rs[j], rt[j], MathExp{});
    s[idx] = static_cast<W>(rkl_pair::student_weight(p_i.ps, p_i.pt, p_j.ps, p_j.pt));
    if (teacher) dd[idx] = static_cast<W>(rkl_pair::teacher_weight(p_i.pt, p_j.pt, d, a[i], a[j]));
  }
}

}  // namespace relkd::panel
