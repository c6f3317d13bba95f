// Runs the CUDA kernels of cwd_loss (cwd.cu) on the CPU emulation of simt.h, with the launch geometry of the
// CUDA host code; inputs from tests/test_cwd_loss_cuda_emu.py.
//
//   cwd_emu <float|double> B C N temperature MASK DIR
//
// DIR holds ys, yt [B,C,N] and grad [1] (float64). Writes stats [B·C, 3] (float64: lse_s, lse_t, KL) and the
// gradients MASK asks for ("11", "10" student only, "01" teacher only): gs, gt [B,C,N]. A gradient not asked
// for gets a null pointer, as from the host code, so a stray write crashes the run.
#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "io.h"
#include "simt.h"
// simt.h first: the kernels read its threadIdx and friends.
#include "../../csrc/cuda/cwd_kernels.cuh"
#include "../../csrc/cuda/grid.cuh"

namespace {

namespace k = relkd::cwd_kernels;

template <typename T>
void run(const std::string& dir, int64_t B, int64_t C, int64_t N, double temperature, bool want_s, bool want_t) {
  const int64_t rows = B * C, nchunks = (N + k::kChunk - 1) / k::kChunk;
  const auto ys = simt::load<T>(dir, "ys", rows * N), yt = simt::load<T>(dir, "yt", rows * N);
  const auto grad = simt::load<double>(dir, "grad", 1);
  const double inv_t = 1.0 / temperature;
  std::vector<k::Part> parts(rows * nchunks, k::Part{-1, -1, -1, -1, -1});
  const int grid = static_cast<int>(std::min<int64_t>(rows * nchunks, 65535 * 8));
  simt::launch(grid, relkd::kThreads, k::chunk_kernel<T>, ys.data(), yt.data(), rows, N, nchunks, inv_t,
               parts.data());
  std::vector<double> stats(rows * 3, -1.0);
  simt::launch(relkd::blocks_for(rows), relkd::kThreads, k::finalize_kernel, parts.data(), rows, nchunks, inv_t,
               stats.data());
  std::vector<T> gs(rows * N, T(-1)), gt(rows * N, T(-1));
  simt::launch(relkd::blocks_for(rows * N), relkd::kThreads, k::backward_kernel<T>, grad.data(), ys.data(),
               yt.data(), stats.data(), rows, N, inv_t, temperature / static_cast<double>(rows),
               want_s ? gs.data() : nullptr, want_t ? gt.data() : nullptr);
  simt::save(dir, "stats", stats);
  if (want_s) simt::save(dir, "gs", gs);
  if (want_t) simt::save(dir, "gt", gt);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s float|double B C N temperature MASK DIR\n", argv[0]);
    return 2;
  }
  const std::string dtype = argv[1], mask = argv[6], dir = argv[7];
  const int64_t B = std::stoll(argv[2]), C = std::stoll(argv[3]), N = std::stoll(argv[4]);
  const double temperature = std::stod(argv[5]);
  const bool want_s = mask.size() == 2 && mask[0] == '1', want_t = mask.size() == 2 && mask[1] == '1';
  try {
    if (dtype == "float") run<float>(dir, B, C, N, temperature, want_s, want_t);
    else if (dtype == "double") run<double>(dir, B, C, N, temperature, want_s, want_t);
    else throw std::runtime_error("unknown dtype " + dtype);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cwd_emu: %s\n", e.what());
    return 2;
  }
  return 0;
}
