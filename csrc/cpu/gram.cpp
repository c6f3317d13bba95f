// gram_loss on the CPU: the device-generic GEMM formulation (csrc/common/gram.cpp) on MKL/OpenBLAS.
#include "../relkd.h"

namespace relkd {
namespace {

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& fs, const Tensor& ft, bool check_finite) {
  check_gram_args(fs, ft);
  check_cpu_dtype("gram_loss", fs);
  return gram_loss_forward(fs, ft, check_finite);
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& diff,
                                        std::array<bool, 2> output_mask) {
  check_gram_backward_args(grad, fs, ft, diff);
  check_cpu_dtype("gram_loss_backward", fs);
  return gram_loss_backward(grad, fs, ft, diff, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("gram_loss", &forward_cpu);
  m.impl("gram_loss_backward", &backward_cpu);
}

}  // namespace relkd
