// The kernels of the fused relation_kl_loss sweep (relation_kl_fused.cu) and their launch geometry. Device code
// only, no CUDA headers, so tests/cuda_emu can run them on the CPU.
//
// One block = 256 threads = 16×16 owns kRows = 64 rows of one sample; thread (tx, ty) owns rows ty + 16r and,
// within each 64-column tile, columns tx + 16c (r, c < 4). The tile products s = X̂s_I X̂s_Jᵀ and
// d = t − s (= dl_I dr_Jᵀ when Cs = Ct, see relkd.h) are accumulated in the work dtype (float32 for
// float32/float16/bfloat16 input, float64 for float64) from shared-memory stages of kDepth channels; the
// per-pair exponentials and sums run in float64, as on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/relation_kl_pair.h"

namespace relkd::fused {

using rkl_pair::MathExp;

constexpr int kRows = 64;           // rows per block = columns per tile
constexpr int kFusedThreads = 256;  // 16 × 16

// Shared-memory sizes per work dtype: float64 halves the stage depth and the output chunk so the backward
// block stays within the 48 KiB of static shared memory.
template <typename W>
struct Shape {
  static constexpr int kDepth = 16;   // channels per shared-memory stage
  static constexpr int kOutCh = 32;   // output channels per backward block
};
template <>
struct Shape<double> {
  static constexpr int kDepth = 8;
  static constexpr int kOutCh = 16;
};

template <typename W>
struct RowsView {
  const W* xs;  // [B, N, Cs]
  const W* xt;  // [B, N, Ct]
  const W* dl;  // [B, N, K2] or nullptr
  const W* dr;
  int64_t N, Cs, Ct, K2;
};

template <typename W>
struct Stage {
  W a[Shape<W>::kDepth][kRows + 1];  // +1: rows read by different threads fall in different banks
  W b[Shape<W>::kDepth][kRows + 1];
};

// acc[r][c] += Σ_k A[i0 + ty + 16r][k] · Bm[j0 + tx + 16c][k] for k < K (rows of A and Bm: K-long, row-major;
// rows ≥ N count as zero). Every thread of the block must call it (it synchronizes).
template <typename W>
__device__ void tile_products(const W* __restrict__ A, const W* __restrict__ Bm, int64_t K, int64_t N, int64_t i0,
                              int64_t j0, Stage<W>& st, W (&acc)[4][4]) {
  constexpr int kDepth = Shape<W>::kDepth;
  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    for (int e = t; e < kRows * kDepth; e += kFusedThreads) {
      const int r = e / kDepth, k = e % kDepth;
      const int64_t kk = k0 + k, i = i0 + r, j = j0 + r;
      st.a[k][r] = (i < N && kk < K) ? A[i * K + kk] : W(0);
      st.b[k][r] = (j < N && kk < K) ? Bm[j * K + kk] : W(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kDepth; ++k) {
      W a[4], b[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) a[q] = st.a[k][ty + 16 * q], b[q] = st.b[k][tx + 16 * q];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += a[r] * b[c];
    }
    __syncthreads();
  }
}

// s and d = t − s of the thread's 4×4 pairs of tile (I, J) of sample b.
template <typename W>
__device__ void pair_tiles(const RowsView<W>& v, int64_t b, int64_t i0, int64_t j0, Stage<W>& st, W (&s)[4][4],
                           W (&d)[4][4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) s[r][c] = W(0), d[r][c] = W(0);
  const int64_t N = v.N;
  tile_products(v.xs + b * N * v.Cs, v.xs + b * N * v.Cs, v.Cs, N, i0, j0, st, s);
  if (v.dl != nullptr) {
    tile_products(v.dl + b * N * v.K2, v.dr + b * N * v.K2, v.K2, N, i0, j0, st, d);
  } else {
    tile_products(v.xt + b * N * v.Ct, v.xt + b * N * v.Ct, v.Ct, N, i0, j0, st, d);
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) d[r][c] -= s[r][c];
  }
}

// Forward: sums[b][0..2][i] = Σ_j e^{s_ij − m_s,i}, Σ_j e^{t_ij − m_t,i}, Σ_j e^{t_ij − m_t,i}(t_ij − s_ij).
template <typename W>
__global__ void __launch_bounds__(kFusedThreads)
    sums_kernel(RowsView<W> v, double inv_tau, const double* __restrict__ offsets, double* __restrict__ sums) {
  __shared__ Stage<W> st;
  const int64_t N = v.N, b = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  double ms[4], mt[4], acc[4][3];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t i = i0 + ty + 16 * r;
    ms[r] = i < N ? offsets[2 * b * N + i] : 0.0;
    mt[r] = i < N ? offsets[(2 * b + 1) * N + i] : 0.0;
    acc[r][0] = acc[r][1] = acc[r][2] = 0.0;
  }
  for (int64_t j0 = 0; j0 < N; j0 += kRows) {
    W s[4][4], d[4][4];
    pair_tiles(v, b, i0, j0, st, s, d);
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        if (i0 + ty + 16 * r >= N || j0 + tx + 16 * c >= N) continue;
        const double sv = static_cast<double>(s[r][c]) * inv_tau, dv = static_cast<double>(d[r][c]) * inv_tau;
        const rkl_pair::SumTerms e = rkl_pair::sum_terms(sv, dv, ms[r], mt[r], MathExp{});
        acc[r][0] += e.es;
        acc[r][1] += e.et;
        acc[r][2] += e.ed;
      }
  }
  // The 16 threads of one ty are 16 consecutive lanes of a warp: reduce over tx within those lanes.
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int q = 0; q < 3; ++q)
#pragma unroll
      for (int offset = 8; offset > 0; offset /= 2) acc[r][q] += __shfl_down_sync(0xffffffffu, acc[r][q], offset, 16);
  if (tx != 0) return;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t i = i0 + ty + 16 * r;
    if (i >= N) continue;
#pragma unroll
    for (int q = 0; q < 3; ++q) sums[(3 * b + q) * N + i] = acc[r][q];
  }
}

// Backward: block (I, chunk, b) writes Σ_j G_ij x̂_j for rows I and the chunk's output channels, where the
// chunks 0..chunks_s−1 cover the student's Cs channels (G = G_s) and the rest the teacher's Ct (G = G_t);
// G_s, G_t as in relation_kl_pair.h. The grid holds chunks of the wanted sides only (grad_chunks): with
// chunks_s = 0 every block is the teacher's, and gs is not touched (it may be null); likewise gt.
template <typename W>
__global__ void __launch_bounds__(kFusedThreads)
    grads_kernel(RowsView<W> v, double inv_tau, const double* __restrict__ terms, int64_t chunks_s,
                       W* __restrict__ gs, W* __restrict__ gt) {
  constexpr int kOutCh = Shape<W>::kOutCh, kQ = kOutCh / 16;
  __shared__ union {
    Stage<W> st;
    W x[kRows][kOutCh + 1];  // rows j of the tile, the chunk's channels
  } sh;
  __shared__ W g[kRows][kRows + 1];
  const int64_t N = v.N, b = blockIdx.z, i0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const bool student = blockIdx.y < chunks_s;
  const int64_t C = student ? v.Cs : v.Ct;
  const int64_t c0 = (student ? blockIdx.y : blockIdx.y - chunks_s) * int64_t{kOutCh};
  const W* X = student ? v.xs + b * N * v.Cs : v.xt + b * N * v.Ct;
  W* out = student ? gs + b * N * v.Cs : gt + b * N * v.Ct;
  const double* ms = terms + 5 * b * N;
  const double *mt = ms + N, *rs = ms + 2 * N, *rt = ms + 3 * N, *a = ms + 4 * N;
  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  W o[4][kQ];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int q = 0; q < kQ; ++q) o[r][q] = W(0);
  for (int64_t j0 = 0; j0 < N; j0 += kRows) {
    W s[4][4], d[4][4];
    pair_tiles(v, b, i0, j0, sh.st, s, d);
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t i = i0 + ty + 16 * r, j = j0 + tx + 16 * c;
        double w = 0.0;
        if (i < N && j < N) {
          const double sv = static_cast<double>(s[r][c]) * inv_tau, dv = static_cast<double>(d[r][c]) * inv_tau;
          // Each branch forms its own p: in the teacher's, p_s is dead code and its exponentials vanish.
          if (student) {
            const rkl_pair::Probs p_i = rkl_pair::probs(sv, dv, ms[i], mt[i], rs[i], rt[i], MathExp{});
            const rkl_pair::Probs p_j = rkl_pair::probs(sv, dv, ms[j], mt[j], rs[j], rt[j], MathExp{});
            w = rkl_pair::student_weight(p_i.ps, p_i.pt, p_j.ps, p_j.pt);
          } else {
            const rkl_pair::Probs p_i = rkl_pair::probs(sv, dv, ms[i], mt[i], rs[i], rt[i], MathExp{});
            const rkl_pair::Probs p_j = rkl_pair::probs(sv, dv, ms[j], mt[j], rs[j], rt[j], MathExp{});
            w = rkl_pair::teacher_weight(p_i.pt, p_j.pt, dv, a[i], a[j]);
          }
        }
        g[ty + 16 * r][tx + 16 * c] = static_cast<W>(w);
      }
    // pair_tiles ended on a barrier, so the stage can be overwritten by the chunk of X̂_J.
    for (int e = t; e < kRows * kOutCh; e += kFusedThreads) {
      const int jj = e / kOutCh, q = e % kOutCh;
      const int64_t j = j0 + jj, ch = c0 + q;
      sh.x[jj][q] = (j < N && ch < C) ? X[j * C + ch] : W(0);
    }
    __syncthreads();
    for (int jj = 0; jj < kRows; ++jj)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const W gv = g[ty + 16 * r][jj];
#pragma unroll
        for (int q = 0; q < kQ; ++q) o[r][q] += gv * sh.x[jj][tx + 16 * q];
      }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
      const int64_t i = i0 + ty + 16 * r, ch = c0 + tx + 16 * q;
      if (i < N && ch < C) out[i * C + ch] = o[r][q];
    }
}

// Forward: one block per (64 rows, sample).
inline dim3 sums_grid(int64_t B, int64_t N) {
  return dim3(static_cast<unsigned>((N + kRows - 1) / kRows), static_cast<unsigned>(B));
}

// Backward: one block per (64 rows, output-channel chunk, sample). The chunks cover the channels of the sides
// asked for: first the student's (`student` chunks, 0 when its gradient is not wanted), then the teacher's.
struct GradChunks {
  int64_t student, teacher;
};
template <typename W>
GradChunks grad_chunks(int64_t Cs, int64_t Ct, bool student, bool teacher) {
  const auto chunks = [](int64_t C) { return (C + Shape<W>::kOutCh - 1) / Shape<W>::kOutCh; };
  return {student ? chunks(Cs) : 0, teacher ? chunks(Ct) : 0};
}
inline dim3 grads_grid(int64_t B, int64_t N, GradChunks chunks) {
  return dim3(static_cast<unsigned>((N + kRows - 1) / kRows), static_cast<unsigned>(chunks.student + chunks.teacher),
              static_cast<unsigned>(B));
}

}  // namespace relkd::fused
