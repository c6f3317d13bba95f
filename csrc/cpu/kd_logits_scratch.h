// Per-thread scratch of the kd_logits_loss CPU kernels (shared by every ISA build of them).
#pragma once

#include <cstdint>

namespace relkd {
namespace kd_cpu {

constexpr int64_t kKdBlock = 64;  // pixels per block

struct KdScratch {
  double ms[kKdBlock], mt[kKdBlock], ss[kKdBlock], st[kKdBlock], kl[kKdBlock], log_ratio[kKdBlock];
  double* es;  // [K, kKdBlock] exp(u_s), owned by the caller
  double* et;  // [K, kKdBlock] exp(u_t)
  float* f32;  // [4, K, kKdBlock] the float32 path's per-class terms, owned by the caller
};

}  // namespace kd_cpu
}  // namespace relkd
