// Fused per-pixel kernels of affinity_loss on CUDA (one thread per pixel, channels looped, reads
// coalesced across pixels); the GEMM part is device generic (csrc/common/affinity.cpp) on cuBLAS.
// Norms and the chain rule run in float64; float16/bfloat16 inputs give float32 work tensors.
#include <ATen/Dispatch.h>

#include "../relkd.h"
#include "common.cuh"

namespace relkd {
namespace {

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
      chain_rule(xs + s, ga + s, gb + s, 1.0, Cs, N, eps, gxs + s);
      chain_rule(xt + t, ga + t, gb + t, -1.0, Ct, N, eps, gxt + t);
    } else {
      chain_rule(xs + s, ga + s, ga + s, 0.0, Cs, N, eps, gxs + s);
      chain_rule(xt + t, gb + t, gb + t, 0.0, Ct, N, eps, gxt + t);
    }
  }
}

void normalize_cuda(const Tensor& xs, const Tensor& xt, double eps, bool sum_diff, Tensor& a, Tensor& b) {
  const int64_t B = xs.size(0), Cs = xs.size(1), Ct = xt.size(1), N = xs.size(2);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "affinity_loss", [&] {
    if (a.scalar_type() == at::kDouble) {
      normalize_kernel<scalar_t, double><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), B, Cs, Ct, N, eps, sum_diff, a.data_ptr<double>(),
          b.data_ptr<double>());
    } else {
      normalize_kernel<scalar_t, float><<<blocks_for(B * N), kThreads, 0, stream>>>(
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xs.scalar_type(), "affinity_loss_backward", [&] {
    if (ga.scalar_type() == at::kDouble) {
      normalize_backward_kernel<scalar_t, double><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), ga.data_ptr<double>(), gb.data_ptr<double>(), B, Cs,
          Ct, N, eps, sum_diff, gxs.data_ptr<scalar_t>(), gxt.data_ptr<scalar_t>());
    } else {
      normalize_backward_kernel<scalar_t, float><<<blocks_for(B * N), kThreads, 0, stream>>>(
          xs.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), ga.data_ptr<float>(), gb.data_ptr<float>(), B, Cs,
          Ct, N, eps, sum_diff, gxs.data_ptr<scalar_t>(), gxt.data_ptr<scalar_t>());
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
  check_feature_pair("affinity_loss", fs, ft, "fs", "ft");
  check_cuda_dtype("affinity_loss", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return affinity_loss_forward(kCudaKernels, fs, ft, labels, num_classes, intra_weight, inter_weight, eps,
                               check_finite);
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                         const std::optional<Tensor>& labels, const Tensor& s1,
                                         const Tensor& s2, const Tensor& s3, const Tensor& counts,
                                         double intra_weight, double inter_weight, double eps) {
  const c10::cuda::CUDAGuard guard(fs.device());
  return affinity_loss_backward(kCudaKernels, grad, fs, ft, labels, s1, s2, s3, counts, intra_weight,
                                inter_weight, eps);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CUDA, m) {
  m.impl("affinity_loss", &forward_cuda);
  m.impl("affinity_loss_backward", &backward_cuda);
}

}  // namespace relkd
