// Small kernels with known defects (and one without), so tests/test_cuda_emu_selftest.py can check that the
// emulation and its sanitized builds report each defect: a check that never fires would pass every kernel.
//
//   selftest_emu <case>
#include <cstdio>
#include <string>
#include <vector>

#include "simt.h"

namespace {

constexpr int kThreads = 64;

// Correct: a block-wide sum through shared memory and warp shuffles.
__global__ void block_sum(const float* x, float* out) {
  __shared__ float partial[kThreads / 32];
  float v = x[blockIdx.x * kThreads + threadIdx.x];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0] + partial[1];
}

// Race: thread 0 reads what the others write, with no barrier between.
__global__ void missing_barrier(const float* x, float* out) {
  __shared__ float stage[kThreads];
  stage[threadIdx.x] = x[threadIdx.x];
  if (threadIdx.x == 0) {
    float acc = 0;
    for (int i = 0; i < kThreads; ++i) acc += stage[i];
    out[0] = acc;
  }
}

// Half the block returns before the barrier.
__global__ void barrier_after_return(const float*, float* out) {
  if (threadIdx.x >= kThreads / 2) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Two halves of the block wait at different barriers.
__global__ void divergent_barrier(const float*, float* out) {
  if (threadIdx.x < kThreads / 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Reads one element past the end of the input.
__global__ void out_of_bounds(const float* x, float* out) { out[threadIdx.x] = x[threadIdx.x + 1]; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s ok|race|return|divergent|bounds\n", argv[0]);
    return 2;
  }
  const std::string which = argv[1];
  std::vector<float> x(2 * kThreads), out(2 * kThreads, 0.0f);
  for (int i = 0; i < 2 * kThreads; ++i) x[i] = static_cast<float>(i);
  if (which == "ok") {
    simt::launch(2, kThreads, block_sum, x.data(), out.data());
    const float want0 = kThreads * (kThreads - 1) / 2.0f, want1 = want0 + kThreads * kThreads;
    if (out[0] != want0 || out[1] != want1) {
      std::fprintf(stderr, "block_sum: got %g %g, want %g %g\n", out[0], out[1], want0, want1);
      return 1;
    }
    return 0;
  }
  std::vector<float> small(kThreads);
  if (which == "race") simt::launch(1, kThreads, missing_barrier, x.data(), out.data());
  else if (which == "return") simt::launch(1, kThreads, barrier_after_return, x.data(), out.data());
  else if (which == "divergent") simt::launch(1, kThreads, divergent_barrier, x.data(), out.data());
  else if (which == "bounds") simt::launch(1, kThreads, out_of_bounds, small.data(), out.data());
  else return 2;
  return 0;
}
