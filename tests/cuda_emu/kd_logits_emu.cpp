// Runs the CUDA kernels of kd_logits_loss (kd_logits.cu) on the CPU emulation of simt.h, with the launch
// geometry of the CUDA host code; inputs from tests/test_kd_logits_loss_cuda_emu.py.
//
//   kd_logits_emu <float|double> B K N temperature MASK DIR
//
// DIR holds zs, zt [B,K,N] and grad [1] (float64). Writes kl [B·N] (float64) and the gradients MASK asks
// for ("11", "10" student only, "01" teacher only): gs, gt [B,K,N]. A gradient not asked for gets a null
// pointer, as from the host code, so a stray write crashes the run.
#include <cstdio>
#include <stdexcept>
#include <string>

#include "io.h"
#include "simt.h"
// simt.h first: the kernels read its threadIdx and friends.
#include "../../csrc/cuda/grid.cuh"
#include "../../csrc/cuda/kd_logits_kernels.cuh"

namespace {

template <typename T>
void run(const std::string& dir, int64_t B, int64_t K, int64_t N, double temperature, bool want_s, bool want_t) {
  const auto zs = simt::load<T>(dir, "zs", B * K * N), zt = simt::load<T>(dir, "zt", B * K * N);
  const auto grad = simt::load<double>(dir, "grad", 1);
  std::vector<double> kl(B * N, -1.0);
  simt::launch(relkd::blocks_for(B * N), relkd::kThreads, relkd::kd_kernels::forward_kernel<T>, zs.data(),
               zt.data(), B, K, N, 1.0 / temperature, kl.data());
  std::vector<T> gs(B * K * N, T(-1)), gt(B * K * N, T(-1));
  simt::launch(relkd::blocks_for(B * N), relkd::kThreads, relkd::kd_kernels::backward_kernel<T>, grad.data(),
               zs.data(), zt.data(), B, K, N, 1.0 / temperature, temperature / static_cast<double>(B * N),
               want_s ? gs.data() : nullptr, want_t ? gt.data() : nullptr);
  simt::save(dir, "kl", kl);
  if (want_s) simt::save(dir, "gs", gs);
  if (want_t) simt::save(dir, "gt", gt);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s float|double B K N temperature MASK DIR\n", argv[0]);
    return 2;
  }
  const std::string dtype = argv[1], mask = argv[6], dir = argv[7];
  const int64_t B = std::stoll(argv[2]), K = std::stoll(argv[3]), N = std::stoll(argv[4]);
  const double temperature = std::stod(argv[5]);
  const bool want_s = mask.size() == 2 && mask[0] == '1', want_t = mask.size() == 2 && mask[1] == '1';
  try {
    if (dtype == "float") run<float>(dir, B, K, N, temperature, want_s, want_t);
    else if (dtype == "double") run<double>(dir, B, K, N, temperature, want_s, want_t);
    else throw std::runtime_error("unknown dtype " + dtype);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kd_logits_emu: %s\n", e.what());
    return 2;
  }
  return 0;
}
