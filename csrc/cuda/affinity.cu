// Fused per-pixel kernels of affinity_loss on CUDA (one thread per pixel, channels looped, reads
// coalesced across pixels); the GEMM part is device generic (csrc/common/affinity.cpp) on cuBLAS.
// Norms and the chain rule run in float64; float16/bfloat16 inputs give float32 work tensors.
#include <ATen/Dispatch.h>

#include "../relkd.h"
#include "common.cuh"
#include "affinity_kernels.cuh"

namespace relkd {
namespace {

namespace kernels = affinity_kernels;

template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

void normalize_cuda(const Tensor& xs, const Tensor& xt, double eps, bool sum_diff, Tensor& a, Tensor& b) {
  const int64_t B = xs.size(0), Cs = xs.size(1), Ct = xt.size(1), N = xs.size(2);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "affinity_loss", [&] {
    if (a.scalar_type() == at::kDouble) {
      kernels::normalize_kernel<scalar_t, double><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), B, Cs, Ct, N, eps, sum_diff, a.data_ptr<double>(),
          b.data_ptr<double>());
    } else {
      kernels::normalize_kernel<scalar_t, float><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), B, Cs, Ct, N, eps, sum_diff, a.data_ptr<float>(),
          b.data_ptr<float>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void normalize_backward_cuda(const Tensor& xs, const Tensor& xt, const Tensor& ga, const Tensor& gb, double eps,
                             bool sum_diff, Tensor& gxs, Tensor& gxt) {
  const int64_t B = xs.size(0), Cs = xs.size(1), Ct = xt.size(1), N = xs.size(2);
  const auto stream = at::cuda::getCurrentCUDAStream();
  // An undefined tensor is a side not asked for: the kernel gets nullptr and skips it (see AffinityKernels).
  const at::ScalarType work = (ga.defined() ? ga : gb).scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "affinity_loss_backward", [&] {
    if (work == at::kDouble) {
      kernels::normalize_backward_kernel<scalar_t, double><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), data_or_null<double>(ga), data_or_null<double>(gb), B,
          Cs, Ct, N, eps, sum_diff, data_or_null<scalar_t>(gxs), data_or_null<scalar_t>(gxt));
    } else {
      kernels::normalize_backward_kernel<scalar_t, float><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), data_or_null<float>(ga), data_or_null<float>(gb), B,
          Cs, Ct, N, eps, sum_diff, data_or_null<scalar_t>(gxs), data_or_null<scalar_t>(gxt));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

const AffinityKernels kCudaKernels{&normalize_cuda, &normalize_backward_cuda,
                                   /*chunk_elements=*/int64_t{1} << 62, /*parallel_samples=*/false};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_cuda(const Tensor& fs, const Tensor& ft,
                                                                const std::optional<Tensor>& labels,
                                                                int64_t num_classes, double intra_weight,
                                                                double inter_weight, double eps,
                                                                bool check_finite) {
  check_affinity_args(fs, ft, labels, num_classes, intra_weight, inter_weight, eps);
  check_cuda_dtype("affinity_loss", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return affinity_loss_forward(kCudaKernels, fs, ft, labels, num_classes, intra_weight, inter_weight, eps,
                               check_finite);
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                         const std::optional<Tensor>& labels, const Tensor& s1,
                                         const Tensor& s2, const Tensor& s3, const Tensor& counts,
                                         double intra_weight, double inter_weight, double eps,
                                         std::array<bool, 2> output_mask) {
  check_affinity_backward_args(grad, fs, ft, labels, s1, s2, s3, counts, intra_weight, inter_weight, eps);
  check_cuda_dtype("affinity_loss_backward", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return affinity_loss_backward(kCudaKernels, grad, fs, ft, labels, s1, s2, s3, counts, intra_weight,
                                inter_weight, eps, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CUDA, m) {
  m.impl("affinity_loss", &forward_cuda);
  m.impl("affinity_loss_backward", &backward_cuda);
}

}  // namespace relkd
