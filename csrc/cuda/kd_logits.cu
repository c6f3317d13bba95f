// kd_logits_loss on CUDA: one thread per pixel runs the whole softmax/KL (and in backward both
// gradients) over the K classes in float64 registers; only a per-pixel KL buffer touches memory
// besides the inputs and gradients.
#include <ATen/Dispatch.h>

#include "../relkd.h"
#include "common.cuh"
#include "kd_logits_kernels.cuh"

namespace relkd {
namespace {

Tensor forward_cuda(const Tensor& zs_in, const Tensor& zt_in, double temperature, bool check_finite) {
  check_kd_args(zs_in, zt_in, temperature);
  check_cuda_dtype("kd_logits_loss", zs_in);
  const c10::cuda::CUDAGuard guard(zs_in.device());
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  Tensor kl = at::empty({B * N}, zs.options().dtype(at::kDouble));
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zs.scalar_type(), "kd_logits_loss", [&] {
    kd_kernels::forward_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, stream>>>(
        zs.data_ptr<scalar_t>(), zt.data_ptr<scalar_t>(), B, K, N, 1.0 / temperature, kl.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // A KL divergence: ≥ 0 up to rounding, clamped at 0 (NaN passes through to the finite check).
  const Tensor loss =
      kl.sum().clamp_min_(0.0).mul_(temperature * temperature / static_cast<double>(B * N)).to(zs.scalar_type());
  if (check_finite) check_finite_result("kd_logits_loss", loss, {{"zs", zs}, {"zt", zt}});
  return loss;
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& zs_in, const Tensor& zt_in,
                                         double temperature, std::array<bool, 2> output_mask) {
  check_kd_backward_args(grad, zs_in, zt_in, temperature);
  check_cuda_dtype("kd_logits_loss_backward", zs_in);
  const c10::cuda::CUDAGuard guard(zs_in.device());
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  // A gradient output_mask does not ask for is neither allocated nor written (the kernel gets nullptr).
  Tensor gs = output_mask[0] ? at::empty_like(zs) : Tensor();
  Tensor gt = output_mask[1] ? at::empty_like(zt) : Tensor();
  if (!gs.defined() && !gt.defined()) return {gs, gt};
  const Tensor g = grad.to(at::kDouble).contiguous();  // stays on the device: no host sync
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zs.scalar_type(), "kd_logits_loss_backward", [&] {
    kd_kernels::backward_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, stream>>>(
        g.data_ptr<double>(), zs.data_ptr<scalar_t>(), zt.data_ptr<scalar_t>(), B, K, N, 1.0 / temperature,
        temperature / static_cast<double>(B * N), gs.defined() ? gs.data_ptr<scalar_t>() : nullptr,
        gt.defined() ? gt.data_ptr<scalar_t>() : nullptr);
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
