// Launch geometry shared by the CUDA kernels and their CPU emulation (tests/cuda_emu): no CUDA headers.
#pragma once

#include <algorithm>
#include <cstdint>

namespace relkd {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items.
inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8));
}

}  // namespace relkd
