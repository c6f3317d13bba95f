// The kernels of cwd_loss (cwd.cu). Device code only, no CUDA headers, so tests/cuda_emu can run them on the
// CPU.
//
// A row is one (sample, channel) map of N contiguous pixels; with z = y/τ the forward needs per row
// lse(z_s), lse(z_t) and Σ_i p_t,i (z_t,i − z_s,i). Rows are few and long, so each row is cut into chunks of
// kChunk pixels, one block per chunk: every thread folds its pixels (stride kThreads, coalesced) into a
// running Part with the online log-sum-exp (2 exps per pixel), the block combines its threads' Parts in a fixed
// tree (warp shuffles, then the warps in order), and finalize_kernel combines a row's chunks in order. Float64
// throughout; the result does not depend on scheduling.
#pragma once

#include <cmath>
#include <cstdint>

#include "grid.cuh"

namespace relkd::cwd_kernels {

constexpr int kItemsPerThread = 16;
constexpr int64_t kChunk = static_cast<int64_t>(kThreads) * kItemsPerThread;

// Over some pixels i of a row: ms, mt the maxima of ys, yt (not divided by τ); ss = Σ e^{(ys_i − ms)/τ},
// st = Σ e^{(yt_i − mt)/τ}, a = Σ e^{(yt_i − mt)/τ} ((yt_i − ys_i) − (mt − ms))/τ. ss = 0: no pixel yet (a real
// Part has ss ≥ 1 or NaN).
struct Part {
  double ms, mt, ss, st, a;
};

__device__ inline Part empty_part() { return Part{-INFINITY, -INFINITY, 0.0, 0.0, 0.0}; }

__device__ inline double nan_max(double m, double v) { return (v > m || v != v) ? v : m; }

// p and q as one Part: both rescaled to the larger maxima (NaN propagates). The cross sum's offset moves with
// both maxima: a' = e^{(mt−Mt)/τ} (a + st ((mt − ms) − (Mt − Ms))/τ).
__device__ inline Part merge(const Part& p, const Part& q, double inv_t) {
  if (q.ss == 0.0) return p;
  if (p.ss == 0.0) return q;
  const double Ms = nan_max(p.ms, q.ms), Mt = nan_max(p.mt, q.mt), dM = Mt - Ms;
  const double fps = exp((p.ms - Ms) * inv_t), fqs = exp((q.ms - Ms) * inv_t);
  const double fpt = exp((p.mt - Mt) * inv_t), fqt = exp((q.mt - Mt) * inv_t);
  return Part{Ms, Mt, p.ss * fps + q.ss * fqs, p.st * fpt + q.st * fqt,
              fpt * (p.a + p.st * (((p.mt - p.ms) - dM) * inv_t)) +
                  fqt * (q.a + q.st * (((q.mt - q.ms) - dM) * inv_t))};
}

// One pixel (s, t) into p: merge with Part{s, t, 1, 1, 0}, with one exp per side (the other factor is 1).
__device__ inline void push(Part& p, double s, double t, double inv_t) {
  if (p.ss == 0.0) {
    p = Part{s, t, 1.0, 1.0, 0.0};
    return;
  }
  const bool new_s = s > p.ms, new_t = t > p.mt;
  const double Ms = nan_max(p.ms, s), Mt = nan_max(p.mt, t), dM = Mt - Ms;
  const double es = exp(-fabs(p.ms - s) * inv_t), et = exp(-fabs(p.mt - t) * inv_t);
  const double fps = new_s ? es : 1.0, fqs = new_s ? 1.0 : es;
  const double fpt = new_t ? et : 1.0, fqt = new_t ? 1.0 : et;
  const double a = fpt * (p.a + p.st * (((p.mt - p.ms) - dM) * inv_t)) + fqt * (((t - s) - dM) * inv_t);
  p = Part{Ms, Mt, p.ss * fps + fqs, p.st * fpt + fqt, a};
}

// Block-wide fold of one Part per thread (kThreads threads); thread 0 gets the block's Part.
__device__ inline Part block_merge(Part p, double inv_t) {
  for (int offset = 16; offset > 0; offset /= 2) {
    Part q;
    q.ms = __shfl_down_sync(0xffffffffu, p.ms, offset);
    q.mt = __shfl_down_sync(0xffffffffu, p.mt, offset);
    q.ss = __shfl_down_sync(0xffffffffu, p.ss, offset);
    q.st = __shfl_down_sync(0xffffffffu, p.st, offset);
    q.a = __shfl_down_sync(0xffffffffu, p.a, offset);
    if ((threadIdx.x % 32) + offset < 32) p = merge(p, q, inv_t);
  }
  __shared__ Part warps[kThreads / 32];
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = p;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kThreads / 32; ++w) p = merge(p, warps[w], inv_t);
  __syncthreads();  // warps[] is rewritten by the next task of a grid-stride loop
  return p;
}

// parts[row · nchunks + chunk]: the Part of each chunk of kChunk pixels. Launch with kThreads threads.
template <typename T>
__global__ void __launch_bounds__(kThreads) chunk_kernel(const T* __restrict__ ys, const T* __restrict__ yt,
                                                         int64_t rows, int64_t N, int64_t nchunks, double inv_t,
                                                         Part* __restrict__ parts) {
  for (int64_t task = blockIdx.x; task < rows * nchunks; task += gridDim.x) {
    const int64_t row = task / nchunks, i0 = (task % nchunks) * kChunk;
    const int64_t end = i0 + kChunk < N ? i0 + kChunk : N;
    const T* s = ys + row * N;
    const T* t = yt + row * N;
    Part p = empty_part();
    for (int64_t i = i0 + threadIdx.x; i < end; i += kThreads)
      push(p, static_cast<double>(s[i]), static_cast<double>(t[i]), inv_t);
    p = block_merge(p, inv_t);
    if (threadIdx.x == 0) parts[task] = p;
  }
}

// stats[row] = (lse_s, lse_t, KL) from the row's chunk Parts, merged in chunk order. The KL is clamped at 0
// (a KL divergence: ≥ 0 up to rounding; NaN and −Inf pass through to the finite check).
__global__ void finalize_kernel(const Part* __restrict__ parts, int64_t rows, int64_t nchunks, double inv_t,
                                double* __restrict__ stats) {
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Part p = parts[row * nchunks];
    for (int64_t c = 1; c < nchunks; ++c) p = merge(p, parts[row * nchunks + c], inv_t);
    const double log_ss = log(p.ss), log_st = log(p.st);
    const double kl = p.a / p.st + log(p.ss / p.st);  // log of the ratio: no ulp(log N) of log_ss − log_st
    stats[3 * row] = p.ms * inv_t + log_ss;
    stats[3 * row + 1] = p.mt * inv_t + log_st;
    stats[3 * row + 2] = kl < 0.0 && kl > -INFINITY ? 0.0 : kl;
  }
}

// gs = scale (p_s − p_t), gt = scale p_t ((yt − ys)/τ − lse_t + lse_s − KL), p = e^{y/τ − lse},
// scale = grad[0] · factor (factor = τ/(B·C)). gs or gt null: that gradient is not asked for and is neither
// computed nor written (the branch is uniform across the grid).
template <typename T>
__global__ void backward_kernel(const double* __restrict__ grad, const T* __restrict__ ys,
                                const T* __restrict__ yt, const double* __restrict__ stats, int64_t rows,
                                int64_t N, double inv_t, double factor, T* __restrict__ gs, T* __restrict__ gt) {
  const double scale = grad[0] * factor;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < rows * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double* st = stats + 3 * (idx / N);
    const double s = static_cast<double>(ys[idx]), t = static_cast<double>(yt[idx]);
    const double pt = exp(t * inv_t - st[1]);
    if (gs != nullptr) gs[idx] = static_cast<T>(scale * (exp(s * inv_t - st[0]) - pt));
    if (gt != nullptr) gt[idx] = static_cast<T>(scale * pt * ((t - s) * inv_t + (st[0] - st[1] - st[2])));
  }
}

}  // namespace relkd::cwd_kernels
