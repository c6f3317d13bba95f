// cwd_loss on CUDA (kernels in cwd_kernels.cuh): chunk_kernel folds each chunk of each row into a Part (one
// read of ys and yt), finalize_kernel merges a row's Parts in chunk order into the float64 stats [B, C, 3]
// (lse_s, lse_t, KL), and the loss is their KL column's sum. The backward is one elementwise kernel.
#include <ATen/Dispatch.h>

#include "../relkd.h"
#include "common.cuh"
#include "cwd_kernels.cuh"

namespace relkd {
namespace {

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& ys_in, const Tensor& yt_in, double temperature,
                                        bool check_finite) {
  check_cwd_args(ys_in, yt_in, temperature);
  check_cuda_dtype("cwd_loss", ys_in);
  const c10::cuda::CUDAGuard guard(ys_in.device());
  const Tensor ys = ys_in.contiguous(), yt = yt_in.contiguous();
  const int64_t B = ys.size(0), C = ys.size(1), N = ys.size(2) * ys.size(3), rows = B * C;
  const int64_t nchunks = (N + cwd_kernels::kChunk - 1) / cwd_kernels::kChunk;
  static_assert(sizeof(cwd_kernels::Part) == 5 * sizeof(double));
  Tensor parts = at::empty({rows * nchunks, 5}, ys.options().dtype(at::kDouble));
  Tensor stats = at::empty({B, C, 3}, ys.options().dtype(at::kDouble));
  auto* part_ptr = reinterpret_cast<cwd_kernels::Part*>(parts.data_ptr<double>());
  const double inv_t = 1.0 / temperature;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int grid = static_cast<int>(std::min<int64_t>(rows * nchunks, 65535 * 8));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "cwd_loss", [&] {
    cwd_kernels::chunk_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        ys.data_ptr<scalar_t>(), yt.data_ptr<scalar_t>(), rows, N, nchunks, inv_t, part_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  cwd_kernels::finalize_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(part_ptr, rows, nchunks, inv_t,
                                                                           stats.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const Tensor loss = stats.select(2, 2).sum().mul_(temperature * temperature / static_cast<double>(rows))
                          .to(ys.scalar_type());
  if (check_finite) check_finite_result("cwd_loss", loss, {{"ys", ys}, {"yt", yt}});
  return {loss, stats};
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& ys_in, const Tensor& yt_in,
                                         const Tensor& stats_in, double temperature,
                                         std::array<bool, 2> output_mask) {
  check_cwd_backward_args(grad, ys_in, yt_in, stats_in, temperature);
  check_cuda_dtype("cwd_loss_backward", ys_in);
  const c10::cuda::CUDAGuard guard(ys_in.device());
  const Tensor ys = ys_in.contiguous(), yt = yt_in.contiguous(), stats = stats_in.contiguous();
  const int64_t B = ys.size(0), C = ys.size(1), N = ys.size(2) * ys.size(3), rows = B * C;
  // A gradient output_mask does not ask for is neither allocated nor written (the kernel gets nullptr).
  Tensor gs = output_mask[0] ? at::empty_like(ys) : Tensor();
  Tensor gt = output_mask[1] ? at::empty_like(yt) : Tensor();
  if (!gs.defined() && !gt.defined()) return {gs, gt};
  const Tensor g = grad.to(at::kDouble).contiguous();  // stays on the device: no host sync
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "cwd_loss_backward", [&] {
    cwd_kernels::backward_kernel<scalar_t><<<blocks_for(rows * N), kThreads, 0, stream>>>(
        g.data_ptr<double>(), ys.data_ptr<scalar_t>(), yt.data_ptr<scalar_t>(), stats.data_ptr<double>(), rows, N,
        1.0 / temperature, temperature / static_cast<double>(rows), gs.defined() ? gs.data_ptr<scalar_t>() : nullptr,
        gt.defined() ? gt.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gs, gt};
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CUDA, m) {
  m.impl("cwd_loss", &forward_cuda);
  m.impl("cwd_loss_backward", &backward_cuda);
}

}  // namespace relkd
