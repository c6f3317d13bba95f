// The per-pixel normalization kernels of affinity_loss (affinity.cu). Device code only, no CUDA headers, so
// tests/cuda_emu can run them on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

namespace relkd::affinity_kernels {

template <typename T>
__device__ double norm_of(const T* x, int64_t C, int64_t N) {
  double acc = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(x[c * N]);
    acc += v * v;
  }
  return sqrt(acc);
}

template <typename T, typename W>
__global__ void normalize_kernel(const T* __restrict__ xs, const T* __restrict__ xt, int64_t B, int64_t Cs,
                                 int64_t Ct, int64_t N, double eps, bool sum_diff, W* __restrict__ a,
                                 W* __restrict__ o) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < B * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / N, i = idx % N;
    const T* s = xs + b * Cs * N + i;
    const T* t = xt + b * Ct * N + i;
    W* pa = a + b * Cs * N + i;
    W* po = o + b * Ct * N + i;
    const double inv_s = 1.0 / fmax(norm_of(s, Cs, N), eps), inv_t = 1.0 / fmax(norm_of(t, Ct, N), eps);
    if (sum_diff) {
      for (int64_t c = 0; c < Cs; ++c) {
        const double u = static_cast<double>(s[c * N]) * inv_s, v = static_cast<double>(t[c * N]) * inv_t;
        pa[c * N] = static_cast<W>(u + v);
        po[c * N] = static_cast<W>(u - v);
      }
    } else {
      for (int64_t c = 0; c < Cs; ++c) pa[c * N] = static_cast<W>(static_cast<double>(s[c * N]) * inv_s);
      for (int64_t c = 0; c < Ct; ++c) po[c * N] = static_cast<W>(static_cast<double>(t[c * N]) * inv_t);
    }
  }
}

// gx = (g − x̂ (x̂·g)) / |x| (or g / eps when |x| <= eps), with g = ga + sign·gb.
template <typename T, typename W>
__device__ void chain_rule(const T* x, const W* ga, const W* gb, double sign, int64_t C, int64_t N, double eps,
                           T* out) {
  const double norm = norm_of(x, C, N);
  double dot = 0.0;
  for (int64_t c = 0; c < C; ++c)
    dot += static_cast<double>(x[c * N]) * (static_cast<double>(ga[c * N]) + sign * static_cast<double>(gb[c * N]));
  const double proj = norm > eps ? dot / (norm * norm) : 0.0, inv = 1.0 / fmax(norm, eps);
  for (int64_t c = 0; c < C; ++c) {
    const double g = static_cast<double>(ga[c * N]) + sign * static_cast<double>(gb[c * N]);
    out[c * N] = static_cast<T>((g - static_cast<double>(x[c * N]) * proj) * inv);
  }
}

// gxs or gxt null: that side is not asked for and is skipped (uniform across the grid); in the dual form
// (not sum_diff) its incoming gradient (ga or gb) is then never read and may be null too.
template <typename T, typename W>
__global__ void normalize_backward_kernel(const T* __restrict__ xs, const T* __restrict__ xt,
                                          const W* __restrict__ ga, const W* __restrict__ gb, int64_t B,
                                          int64_t Cs, int64_t Ct, int64_t N, double eps, bool sum_diff,
                                          T* __restrict__ gxs, T* __restrict__ gxt) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < B * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / N, i = idx % N;
    const int64_t s = b * Cs * N + i, t = b * Ct * N + i;
    if (sum_diff) {  // ∂/∂x̂s = g_P + g_E, ∂/∂x̂t = g_P − g_E
      if (gxs != nullptr) chain_rule(xs + s, ga + s, gb + s, 1.0, Cs, N, eps, gxs + s);
      if (gxt != nullptr) chain_rule(xt + t, ga + t, gb + t, -1.0, Ct, N, eps, gxt + t);
    } else {
      if (gxs != nullptr) chain_rule(xs + s, ga + s, ga + s, 0.0, Cs, N, eps, gxs + s);
      if (gxt != nullptr) chain_rule(xt + t, gb + t, gb + t, 0.0, Ct, N, eps, gxt + t);
    }
  }
}

}  // namespace relkd::affinity_kernels
