// A CPU stand-in for the CUDA execution model, enough to run the relkd kernels (csrc/cuda/*_kernels.cuh)
// on a machine without a GPU and check their indexing, tiling and synchronization.
//
// Every thread of a block runs on an OS thread of its own; blocks run one after another, so `__shared__` (a function-local
// `static`) is shared by the threads of the running block only. The emulator is stricter than hardware:
//   - a __syncthreads() must be reached by every thread of the block at the same source line, and never after
//     a thread of the block has returned;
//   - a full-mask __shfl_down_sync must be reached by all 32 lanes of the warp at the same source line;
// anything else aborts with a message naming the line. Threads interleave freely between barriers, so a build
// with -fsanitize=thread reports shared-memory races that a missing barrier would cause, and one with
// -fsanitize=address reports reads and writes outside the buffers.
//
// Not caught: races between blocks (blocks run one at a time) and reads of shared memory before any write in
// the block (a `static` keeps the previous block's values). Not emulated (the kernels do not use them):
// atomics, dynamic shared memory, cooperative groups, half types.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

namespace simt {

[[noreturn]] inline void fail(const char* what, int line) {
  std::fprintf(stderr, "simt: %s (kernel source line %d)\n", what, line);
  std::fflush(stderr);
  std::_Exit(3);
}

// A barrier over a fixed set of threads that checks every arrival comes from the same source line.
class Barrier {
 public:
  explicit Barrier(int threads) : threads_(threads) {}

  void arrive(int line, const char* after_exit) {
    if (exited_.load() > 0) fail(after_exit, line);
    int none = 0;
    if (!line_.compare_exchange_strong(none, line) && none != line) fail("threads wait at different barriers", line);
    const uint64_t gen = generation_.load();
    if (waiting_.fetch_add(1) + 1 == threads_) {
      waiting_.store(0);
      line_.store(0);
      generation_.fetch_add(1);
      generation_.notify_all();
      return;
    }
    generation_.wait(gen);
  }

  void exit(const char* why) {
    exited_.fetch_add(1);
    if (waiting_.load() > 0) fail(why, line_.load());
  }

 private:
  const int threads_;
  std::atomic<int> waiting_{0}, exited_{0}, line_{0};
  std::atomic<uint64_t> generation_{0};
};

struct Warp {
  explicit Warp(int lanes) : barrier(lanes) {}
  Barrier barrier;
  unsigned char slot[32][8];
};

struct Block {
  explicit Block(int threads) : barrier(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(std::make_unique<Warp>(std::min(32, threads - 32 * w)));
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* current_block = nullptr;

inline int linear_thread() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

inline void syncthreads(int line) {
  current_block->barrier.arrive(line, "__syncthreads() reached after a thread of the block returned");
}

template <typename T>
T shfl_down_sync(int line, unsigned mask, T value, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  if (mask != 0xffffffffu) fail("only full-mask shuffles are emulated", line);
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) fail("shuffle width must be a power of two <= 32", line);
  const int tid = linear_thread(), lane = tid % 32;
  Warp& warp = *current_block->warps[tid / 32];
  const char* exited = "__shfl_down_sync with a full mask reached after a lane of the warp returned";
  std::memcpy(warp.slot[lane], &value, sizeof(T));
  warp.barrier.arrive(line, exited);
  T out = value;
  if (lane % width + static_cast<int>(delta) < width) std::memcpy(&out, warp.slot[lane + delta], sizeof(T));
  warp.barrier.arrive(line, exited);  // nobody overwrites a slot before every lane has read it
  return out;
}

// Worker threads kept across blocks and launches (creating 256 threads per block dominated the run time).
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }

  // Runs task(t) for t < threads on threads workers and waits for all of them.
  void run(int threads, const std::function<void(int)>& task) {
    while (static_cast<int>(workers_.size()) < threads) {
      const int t = static_cast<int>(workers_.size());
      workers_.emplace_back([this, t, seen = round_.load()] { work(t, seen); });
    }
    task_.store(&task);
    active_.store(threads);
    remaining_.store(threads);
    round_.fetch_add(1);
    round_.notify_all();
    for (int left = remaining_.load(); left != 0; left = remaining_.load()) remaining_.wait(left);
  }

  ~Pool() {
    stop_.store(true);
    round_.fetch_add(1);
    round_.notify_all();
    for (auto& w : workers_) w.join();
  }

 private:
  void work(int t, uint64_t seen) {
    while (true) {
      round_.wait(seen);
      seen = round_.load();
      if (stop_.load()) return;
      if (t >= active_) continue;
      (*task_.load())(t);
      if (remaining_.fetch_sub(1) == 1) remaining_.notify_all();
    }
  }

  std::vector<std::thread> workers_;
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> active_{0}, remaining_{0};
  std::atomic<uint64_t> round_{0};
  std::atomic<bool> stop_{false};
};

// Runs kernel<<<grid, block>>>(args...): the blocks one after another, the threads of a block concurrently.
template <typename... KernelArgs, typename... Args>
void launch(dim3 grid, dim3 block, void (*kernel)(KernelArgs...), Args&&... args) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024) fail("block size must be 1..1024 threads", 0);
  gridDim = grid;
  blockDim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block ctx(threads);
        Pool::get().run(threads, [&](int t) {
          threadIdx = uint3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          blockIdx = uint3(bx, by, bz);
          current_block = &ctx;
          kernel(args...);
          const char* why = "a thread returned while others wait at a barrier";
          ctx.warps[t / 32]->barrier.exit(why);
          ctx.barrier.exit(why);
        });
      }
}

}  // namespace simt

#define __syncthreads() ::simt::syncthreads(__LINE__)
#define __shfl_down_sync(...) ::simt::shfl_down_sync(__LINE__, __VA_ARGS__)
