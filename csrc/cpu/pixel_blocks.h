// Parallel sweep over blocks of pixels, shared by the CPU per-pixel kernels. Pixels are contiguous in NCHW,
// so a task takes a block of pixels of one sample and sweeps the channels over it.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace relkd {

// Runs fn(b, i0, len) over blocks of `block` pixels (len ≤ block) of every sample, in parallel.
template <typename Fn>
void for_pixel_blocks(int64_t B, int64_t N, int64_t block, Fn fn) {
  const int64_t nblocks = (N + block - 1) / block;
  at::parallel_for(0, B * nblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblocks, i0 = (task % nblocks) * block;
      fn(b, i0, std::min(block, N - i0));
    }
  });
}

}  // namespace relkd
