// Runs the CUDA normalization kernels of affinity_loss (affinity.cu) on the CPU emulation of simt.h, with
// the launch geometry of the CUDA host code; inputs from tests/test_affinity_loss_cuda_emu.py.
//
//   affinity_emu <float|double> <float|double> B Cs Ct N eps sum_diff MASK DIR
//
// The input dtype T, then the work dtype W. DIR holds xs [B,Cs,N], xt [B,Ct,N] (T) and the incoming
// gradients ga [B,Cs,N], gb [B,Ct,N] (W). Writes a [B,Cs,N], o [B,Ct,N] (W) and the gradients MASK asks for
// ("11", "10" student only, "01" teacher only): gxs, gxt (T). As from the host code, a side not asked for
// gets a null output and, in the dual form (sum_diff 0), a null incoming gradient, so touching it crashes.
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
void run(const std::string& dir, int64_t B, int64_t Cs, int64_t Ct, int64_t N, double eps, bool sum_diff,
         bool want_s, bool want_t) {
  const auto xs = simt::load<T>(dir, "xs", B * Cs * N), xt = simt::load<T>(dir, "xt", B * Ct * N);
  const auto ga = simt::load<W>(dir, "ga", B * Cs * N), gb = simt::load<W>(dir, "gb", B * Ct * N);
  std::vector<W> a(B * Cs * N, W(-1)), o(B * Ct * N, W(-1));
  simt::launch(relkd::blocks_for(B * N), relkd::kThreads, relkd::affinity_kernels::normalize_kernel<T, W>,
               xs.data(), xt.data(), B, Cs, Ct, N, eps, sum_diff, a.data(), o.data());
  std::vector<T> gxs(B * Cs * N, T(-1)), gxt(B * Ct * N, T(-1));
  const W* pa = sum_diff || want_s ? ga.data() : nullptr;
  const W* pb = sum_diff || want_t ? gb.data() : nullptr;
  simt::launch(relkd::blocks_for(B * N), relkd::kThreads, relkd::affinity_kernels::normalize_backward_kernel<T, W>,
               xs.data(), xt.data(), pa, pb, B, Cs, Ct, N, eps, sum_diff, want_s ? gxs.data() : nullptr,
               want_t ? gxt.data() : nullptr);
  simt::save(dir, "a", a);
  simt::save(dir, "o", o);
  if (want_s) simt::save(dir, "gxs", gxs);
  if (want_t) simt::save(dir, "gxt", gxt);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 11) {
    std::fprintf(stderr, "usage: %s float|double float|double B Cs Ct N eps sum_diff MASK DIR\n", argv[0]);
    return 2;
  }
  const std::string t = argv[1], w = argv[2], mask = argv[9], dir = argv[10];
  const bool want_s = mask.size() == 2 && mask[0] == '1', want_t = mask.size() == 2 && mask[1] == '1';
  const int64_t B = std::stoll(argv[3]), Cs = std::stoll(argv[4]), Ct = std::stoll(argv[5]), N = std::stoll(argv[6]);
  const double eps = std::stod(argv[7]);
  const bool sum_diff = std::string(argv[8]) == "1";
  try {
    if (sum_diff && Cs != Ct) throw std::runtime_error("sum_diff needs Cs == Ct");
    if (t == "float" && w == "float") run<float, float>(dir, B, Cs, Ct, N, eps, sum_diff, want_s, want_t);
    else if (t == "float" && w == "double") run<float, double>(dir, B, Cs, Ct, N, eps, sum_diff, want_s, want_t);
    else if (t == "double" && w == "double") run<double, double>(dir, B, Cs, Ct, N, eps, sum_diff, want_s, want_t);
    else throw std::runtime_error("unsupported dtypes " + t + " " + w);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "affinity_emu: %s\n", e.what());
    return 2;
  }
  return 0;
}
