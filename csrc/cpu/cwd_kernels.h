// Chunk kernels of cwd_loss on the CPU, compiled once per instruction set: cwd.cpp includes this file for
// the baseline ISA and kernels_avx2.cpp / kernels_avx512.cpp for the wider builds, each inside its own namespace
// (RELKD_ISA); cwd.cpp picks one per call (isa.h) and declares the entry points of cwd_entry.h. Plain C++
// on raw pointers only (fast_math.h's helpers are `static`, so each ISA gets its own copy).
//
// A row is one (sample, channel) map of N pixels, contiguous. The forward splits it into chunks of kCwdChunk
// pixels; a chunk gives a CwdPart (its own maxima, rescaled exp sums and the cross sum, below) in two sweeps
// over the chunk (max, then sums) that stay in cache, so ys and yt are read from memory once. Partials are
// combined in chunk order (merge in cwd.cpp): the result does not depend on the thread count.
// Float64 throughout: the KL of nearly equal maps is a difference of O(δ) terms (docs/accuracy.md).
#include <cstdint>

#include "cwd_part.h"
#include "fast_math.h"

namespace relkd {
namespace cwd_cpu {
namespace RELKD_ISA {

// SIMD-friendly lanes: every reduction keeps kLanes independent accumulators (no reassociation needed, so
// GCC vectorizes without -ffast-math), added in a fixed order at the end.
constexpr int kLanes = 8;

inline double nan_max(double m, double v) { return (v > m || v != v) ? v : m; }

// The partial of one chunk of len ≥ 1 pixels: ms, mt its maxima, ss = Σ e^{(ys−ms)/τ}, st = Σ e^{(yt−mt)/τ},
// a = Σ e^{(yt−mt)/τ} ((yt − ys) − (mt − ms))/τ.
template <typename T>
CwdPart chunk_part(const T* ys, const T* yt, int64_t len, double inv_t) {
  double ms_l[kLanes], mt_l[kLanes];
  for (int l = 0; l < kLanes; ++l) ms_l[l] = ys[0], mt_l[l] = yt[0];
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes)
    for (int l = 0; l < kLanes; ++l) ms_l[l] = nan_max(ms_l[l], ys[i + l]), mt_l[l] = nan_max(mt_l[l], yt[i + l]);
  for (; i < len; ++i) ms_l[0] = nan_max(ms_l[0], ys[i]), mt_l[0] = nan_max(mt_l[0], yt[i]);
  double ms = ms_l[0], mt = mt_l[0];
  for (int l = 1; l < kLanes; ++l) ms = nan_max(ms, ms_l[l]), mt = nan_max(mt, mt_l[l]);

  const double dm = mt - ms;
  double ss_l[kLanes] = {}, st_l[kLanes] = {}, a_l[kLanes] = {};
  i = 0;
  for (; i + kLanes <= len; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double s = ys[i + l], t = yt[i + l];
      const double es = exp_nonpositive((s - ms) * inv_t), et = exp_nonpositive((t - mt) * inv_t);
      ss_l[l] += es, st_l[l] += et, a_l[l] += et * (((t - s) - dm) * inv_t);
    }
  for (; i < len; ++i) {
    const double s = ys[i], t = yt[i];
    const double es = exp_nonpositive((s - ms) * inv_t), et = exp_nonpositive((t - mt) * inv_t);
    ss_l[0] += es, st_l[0] += et, a_l[0] += et * (((t - s) - dm) * inv_t);
  }
  CwdPart p{ms, mt, 0.0, 0.0, 0.0};
  for (int l = 0; l < kLanes; ++l) p.ss += ss_l[l], p.st += st_l[l], p.a += a_l[l];
  return p;
}

// One chunk of the backward, with the row's float64 stats (lse_s, lse_t, kl) and scale = grad·τ/(B·C):
//   gs = scale (p_s − p_t),  gt = scale p_t ((yt − ys)/τ − lse_t + lse_s − kl),  p = e^{y/τ − lse}.
// gs or gt null: that gradient is not asked for and is neither computed nor written.
template <typename T>
void chunk_backward(const T* ys, const T* yt, int64_t len, double inv_t, const double* stats, double scale, T* gs,
                    T* gt) {
  const double lse_s = stats[0], lse_t = stats[1], c = stats[0] - stats[1] - stats[2];
  if (gs != nullptr && gt != nullptr) {
    for (int64_t i = 0; i < len; ++i) {
      const double s = ys[i], t = yt[i];
      const double pt = exp_nonpositive(t * inv_t - lse_t);
      gs[i] = static_cast<T>(scale * (exp_nonpositive(s * inv_t - lse_s) - pt));
      gt[i] = static_cast<T>(scale * pt * ((t - s) * inv_t + c));
    }
  } else if (gs != nullptr) {
    for (int64_t i = 0; i < len; ++i) {
      const double s = ys[i], t = yt[i];
      gs[i] = static_cast<T>(scale * (exp_nonpositive(s * inv_t - lse_s) - exp_nonpositive(t * inv_t - lse_t)));
    }
  } else if (gt != nullptr) {
    for (int64_t i = 0; i < len; ++i) {
      const double s = ys[i], t = yt[i];
      gt[i] = static_cast<T>(scale * exp_nonpositive(t * inv_t - lse_t) * ((t - s) * inv_t + c));
    }
  }
}

CwdPart forward_f32(const float* ys, const float* yt, int64_t len, double inv_t) {
  return chunk_part(ys, yt, len, inv_t);
}
CwdPart forward_f64(const double* ys, const double* yt, int64_t len, double inv_t) {
  return chunk_part(ys, yt, len, inv_t);
}
void backward_f32(const float* ys, const float* yt, int64_t len, double inv_t, const double* stats, double scale,
                  float* gs, float* gt) {
  chunk_backward(ys, yt, len, inv_t, stats, scale, gs, gt);
}
void backward_f64(const double* ys, const double* yt, int64_t len, double inv_t, const double* stats, double scale,
                  double* gs, double* gt) {
  chunk_backward(ys, yt, len, inv_t, stats, scale, gs, gt);
}

}  // namespace RELKD_ISA
}  // namespace cwd_cpu
}  // namespace relkd
