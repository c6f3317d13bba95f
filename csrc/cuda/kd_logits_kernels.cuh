// The per-pixel kernels of kd_logits_loss (kd_logits.cu). Device code only, no CUDA headers, so
// tests/cuda_emu can run them on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

namespace relkd::kd_kernels {

struct PixelStats {
  double ms, mt, ss, st, kl, log_ratio;
};

// Without need_kl (the student gradient alone) kl and log_ratio are left 0.
template <typename T>
__device__ PixelStats pixel_stats(const T* zs, const T* zt, int64_t K, int64_t N, double inv_t,
                                  bool need_kl = true) {
  PixelStats p{static_cast<double>(zs[0]), static_cast<double>(zt[0]), 0.0, 0.0, 0.0, 0.0};
  for (int64_t k = 1; k < K; ++k) {
    const double a = static_cast<double>(zs[k * N]), b = static_cast<double>(zt[k * N]);
    p.ms = (a > p.ms || a != a) ? a : p.ms;
    p.mt = (b > p.mt || b != b) ? b : p.mt;
  }
  double acc = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double us = (static_cast<double>(zs[k * N]) - p.ms) * inv_t;
    const double ut = (static_cast<double>(zt[k * N]) - p.mt) * inv_t;
    const double et = exp(ut);
    p.ss += exp(us);
    p.st += et;
    acc += et * (ut - us);
  }
  if (!need_kl) return p;
  p.log_ratio = log(p.ss / p.st);
  p.kl = acc / p.st + p.log_ratio;  // Σ p_t (u_t − u_s) + log(Σ e_s / Σ e_t)
  return p;
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ zs, const T* __restrict__ zt, int64_t B, int64_t K, int64_t N,
                               double inv_t, double* __restrict__ kl) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < B * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t off = (idx / N) * K * N + idx % N;
    kl[idx] = pixel_stats(zs + off, zt + off, K, N, inv_t).kl;
  }
}

// gs or gt null: that gradient is not asked for and is neither computed nor written (the branch is uniform
// across the grid).
template <typename T>
__global__ void backward_kernel(const double* __restrict__ grad, const T* __restrict__ zs,
                                const T* __restrict__ zt, int64_t B, int64_t K, int64_t N, double inv_t,
                                double factor, T* __restrict__ gs, T* __restrict__ gt) {
  const double scale = grad[0] * factor;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < B * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t off = (idx / N) * K * N + idx % N;
    const PixelStats p = pixel_stats(zs + off, zt + off, K, N, inv_t, /*need_kl=*/gt != nullptr);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t at = off + k * N;
      const double us = (static_cast<double>(zs[at]) - p.ms) * inv_t;
      const double ut = (static_cast<double>(zt[at]) - p.mt) * inv_t;
      const double p_t = exp(ut) / p.st;
      if (gs != nullptr) gs[at] = static_cast<T>(scale * (exp(us) / p.ss - p_t));
      if (gt != nullptr) gt[at] = static_cast<T>(scale * p_t * ((ut - us) + p.log_ratio - p.kl));
    }
  }
}

}  // namespace relkd::kd_kernels
