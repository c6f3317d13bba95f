// kd_logits_loss on CUDA: one thread per pixel runs the whole softmax/KL (and in backward both
// gradients) over the K classes in float64 registers; only a per-pixel KL buffer touches memory
// besides the inputs and gradients.
#include <ATen/Dispatch.h>

#include "../relkd.h"
#include "common.cuh"

namespace relkd {
namespace {

struct PixelStats {
  double ms, mt, ss, st, kl, log_ratio;
};

template <typename T>
__device__ PixelStats pixel_stats(const T* zs, const T* zt, int64_t K, int64_t N, double inv_t) {
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

template <typename T>
__global__ void backward_kernel(const double* __restrict__ grad, const T* __restrict__ zs,
                                const T* __restrict__ zt, int64_t B, int64_t K, int64_t N, double inv_t,
                                double factor, T* __restrict__ gs, T* __restrict__ gt) {
  const double scale = grad[0] * factor;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < B * N;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t off = (idx / N) * K * N + idx % N;
    const PixelStats p = pixel_stats(zs + off, zt + off, K, N, inv_t);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t at = off + k * N;
      const double us = (static_cast<double>(zs[at]) - p.ms) * inv_t;
      const double ut = (static_cast<double>(zt[at]) - p.mt) * inv_t;
      const double p_s = exp(us) / p.ss, p_t = exp(ut) / p.st;
      gs[at] = static_cast<T>(scale * (p_s - p_t));
      gt[at] = static_cast<T>(scale * p_t * ((ut - us) + p.log_ratio - p.kl));
    }
  }
}

Tensor forward_cuda(const Tensor& zs_in, const Tensor& zt_in, double temperature, bool check_finite) {
  check_kd_inputs(zs_in, zt_in, temperature);
  check_cuda_dtype("kd_logits_loss", zs_in);
  const c10::cuda::CUDAGuard guard(zs_in.device());
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  Tensor kl = at::empty({B * N}, zs.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zs.scalar_type(), "kd_logits_loss", [&] {
    forward_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        zs.data_ptr<scalar_t>(), zt.data_ptr<scalar_t>(), B, K, N, 1.0 / temperature, kl.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const Tensor loss = kl.sum().mul_(temperature * temperature / static_cast<double>(B * N)).to(zs.scalar_type());
  if (check_finite) check_finite_result("kd_logits_loss", loss, {{"zs", zs}, {"zt", zt}});
  return loss;
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& zs_in, const Tensor& zt_in,
                                         double temperature) {
  const c10::cuda::CUDAGuard guard(zs_in.device());
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  Tensor gs = at::empty_like(zs), gt = at::empty_like(zt);
  const Tensor g = grad.to(at::kDouble).contiguous();  // stays on the device: no host sync
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zs.scalar_type(), "kd_logits_loss_backward", [&] {
    backward_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        g.data_ptr<double>(), zs.data_ptr<scalar_t>(), zt.data_ptr<scalar_t>(), B, K, N, 1.0 / temperature,
        temperature / static_cast<double>(B * N), gs.data_ptr<scalar_t>(), gt.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gs, gt};
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CUDA, m) {
  m.impl("kd_logits_loss", &forward_cuda);
  m.impl("kd_logits_loss_backward", &backward_cuda);
}

}  // namespace relkd
