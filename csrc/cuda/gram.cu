// gram_loss on CUDA: the device-generic GEMM formulation (csrc/common/gram.cpp) on cuBLAS; float16 and
// bfloat16 inputs are promoted to float32 there, so the Grams accumulate in float32.
#include "../relkd.h"
#include "common.cuh"

namespace relkd {
namespace {

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& fs, const Tensor& ft, bool check_finite) {
  check_gram_args(fs, ft);
  check_cuda_dtype("gram_loss", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return gram_loss_forward(fs, ft, check_finite, &gram_sum_diff_product);
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                         const Tensor& diff, std::array<bool, 2> output_mask) {
  check_gram_backward_args(grad, fs, ft, diff);
  check_cuda_dtype("gram_loss_backward", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return gram_loss_backward(grad, fs, ft, diff, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CUDA, m) {
  m.impl("gram_loss", &forward_cuda);
  m.impl("gram_loss_backward", &backward_cuda);
}

}  // namespace relkd
