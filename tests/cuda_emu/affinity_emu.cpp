// Runs the CUDA normalization kernels of affinity_loss (affinity.cu) on the CPU emulation of simt.h, with
// the launch geometry of the CUDA host code; inputs from tests/test_affinity_loss_cuda_emu.py.
//
//   affinity_emu <float|double> <float|double> B Cs Ct N eps sum_diff DIR
//
// The input dtype T, then the work dtype W. DIR holds xs [B,Cs,N], xt [B,Ct,N] (T) and the incoming
// gradients ga [B,Cs,N], gb [B,Ct,N] (W). Writes a [B,Cs,N], o [B,Ct,N] (W) and gxs, gxt (T).
#include <cstdio>
#include <stdexcept>
#include <string>

#include "io.h"
#include "simt.h"
// simt.h first: the kernels read its threadIdx and friends.
#include "../../csrc/cuda/grid.cuh"
#include "../../csrc/cuda/affinity_kernels.cuh"

namespace {

template <typename T, typename W>
void run(const std::string& dir, int64_t B, int64_t Cs, int64_t Ct, int64_t N, double eps, bool sum_diff) {
  const auto xs = simt::load<T>(dir, "xs", B * Cs * N), xt = simt::load<T>(dir, "xt", B * Ct * N);
  const auto ga = simt::load<W>(dir, "ga", B * Cs * N), gb = simt::load<W>(dir, "gb", B * Ct * N);
  std::vector<W> a(B * Cs * N, W(-1)), o(B * Ct * N, W(-1));
  simt::launch(relkd::blocks_for(B * N), relkd::kThreads, relkd::affinity_kernels::normalize_kernel<T, W>,
               xs.data(), xt.data(), B, Cs, Ct, N, eps, sum_diff, a.data(), o.data());
  std::vector<T> gxs(B * Cs * N, T(-1)), gxt(B * Ct * N, T(-1));
  simt::launch(relkd::blocks_for(B * N), relkd::kThreads, relkd::affinity_kernels::normalize_backward_kernel<T, W>,
               xs.data(), xt.data(), ga.data(), gb.data(), B, Cs, Ct, N, eps, sum_diff, gxs.data(), gxt.data());
  simt::save(dir, "a", a);
  simt::save(dir, "o", o);
  simt::save(dir, "gxs", gxs);
  simt::save(dir, "gxt", gxt);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: %s float|double float|double B Cs Ct N eps sum_diff DIR\n", argv[0]);
    return 2;
  }
  const std::string t = argv[1], w = argv[2], dir = argv[9];
  const int64_t B = std::stoll(argv[3]), Cs = std::stoll(argv[4]), Ct = std::stoll(argv[5]), N = std::stoll(argv[6]);
  const double eps = std::stod(argv[7]);
  const bool sum_diff = std::string(argv[8]) == "1";
  try {
    if (sum_diff && Cs != Ct) throw std::runtime_error("sum_diff needs Cs == Ct");
    if (t == "float" && w == "float") run<float, float>(dir, B, Cs, Ct, N, eps, sum_diff);
    else if (t == "float" && w == "double") run<float, double>(dir, B, Cs, Ct, N, eps, sum_diff);
    else if (t == "double" && w == "double") run<double, double>(dir, B, Cs, Ct, N, eps, sum_diff);
    else throw std::runtime_error("unsupported dtypes " + t + " " + w);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "affinity_emu: %s\n", e.what());
    return 2;
  }
  return 0;
}
