// What relation_kl.cpp hands the per-ISA tile kernels (relation_kl_kernels.h): plain data only.
#pragma once

#include <cstdint>

namespace relkd {
namespace rkl_cpu {

constexpr int64_t kTile = 256;  // two 256×256 float32 tiles (s, d) = 512 KiB: L2-sized
constexpr int64_t kLanes = 8;   // independent partial sums per row, so the row reductions vectorize

struct TileSpan {
  int64_t i0, ni;    // rows I
  int64_t j0, nj;    // columns J (I ≤ J: tiles below the diagonal are never formed)
  bool diagonal;     // I = J: the column sums would count the pairs twice
  bool uniform;      // every offset of rows I ∪ J is equal: one exponential serves p_ij and p_ji
  double inv_tau;
};

}  // namespace rkl_cpu
}  // namespace relkd
