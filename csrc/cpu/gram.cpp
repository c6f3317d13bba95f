// gram_loss on the CPU: the device-generic GEMM formulation (csrc/common/gram.cpp) on MKL/OpenBLAS.
#include "../relkd.h"

namespace relkd {
namespace {

void check_cpu(const Tensor& fs) {
  TORCH_CHECK_TYPE(fs.scalar_type() == at::kFloat || fs.scalar_type() == at::kDouble,
                   "gram_loss: the CPU kernel supports float32 and float64, got ", fs.scalar_type());
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& fs, const Tensor& ft, bool check_finite) {
  check_feature_pair("gram_loss", fs, ft, "fs", "ft");
  check_cpu(fs);
  return gram_loss_forward(fs, ft, check_finite);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("gram_loss", &forward_cpu);
  m.impl("gram_loss_backward", &gram_loss_backward);
}

}  // namespace relkd
