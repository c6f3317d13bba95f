// Pixel-block kernels of kd_logits_loss on the CPU, compiled once per instruction set: kd_logits.cpp
// includes this file for the baseline ISA and kd_logits_avx2.cpp for AVX2+FMA, each inside its own
// namespace (RELKD_ISA), and kd_logits.cpp picks one at run time. Plain C++ on raw pointers only, so
// no inline function from another header is instantiated with the wider ISA.
//
// Per pixel, with u = (z − max z) / T: KL = Σ_k p_t,k (u_t,k − u_s,k) + log(Σ e^{u_s} / Σ e^{u_t}).
// The per-pixel math runs in float64: the KL of nearly equal distributions is a difference of O(δ)
// terms, which float32 would resolve only to ~1e-7/δ.
#include <cstdint>
#include <cstring>

#include "fast_math.h"
#include "kd_logits_scratch.h"

namespace relkd {
namespace kd_cpu {
namespace RELKD_ISA {

inline double nan_max(double m, double v) { return (v > m || v != v) ? v : m; }

// Fills s for one block of `len` pixels (pixel stride 1, class stride N); keeps the exponentials.
template <typename T>
void block_stats(const T* zs, const T* zt, int64_t K, int64_t N, int64_t len, double inv_t, KdScratch& s) {
  for (int64_t i = 0; i < len; ++i) s.ms[i] = zs[i], s.mt[i] = zt[i], s.ss[i] = s.st[i] = s.kl[i] = 0.0;
  for (int64_t k = 1; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) s.ms[i] = nan_max(s.ms[i], zs[k * N + i]), s.mt[i] = nan_max(s.mt[i], zt[k * N + i]);
  for (int64_t k = 0; k < K; ++k) {
    double* es = s.es + k * kKdBlock;
    double* et = s.et + k * kKdBlock;
    for (int64_t i = 0; i < len; ++i) {
      const double us = (zs[k * N + i] - s.ms[i]) * inv_t, ut = (zt[k * N + i] - s.mt[i]) * inv_t;
      const double a = exp_nonpositive(us), b = exp_nonpositive(ut);
      es[i] = a, et[i] = b;
      s.ss[i] += a, s.st[i] += b, s.kl[i] += b * (ut - us);  // kl holds Σ e_t (u_t − u_s) for now
    }
  }
  for (int64_t i = 0; i < len; ++i) {
    s.log_ratio[i] = log_positive(s.ss[i] / s.st[i]);
    s.kl[i] = s.kl[i] / s.st[i] + s.log_ratio[i];
  }
}

// Σ_i KL_i over one block.
template <typename T>
double forward_block(const T* zs, const T* zt, int64_t K, int64_t N, int64_t len, double inv_t, KdScratch& s) {
  block_stats(zs, zt, K, N, len, inv_t, s);
  double sum = 0.0;
  for (int64_t i = 0; i < len; ++i) sum += s.kl[i];
  return sum;
}

// d/dzs = scale (p_s − p_t);  d/dzt = scale p_t ((log p_t − log p_s) − KL), scale = grad·T/(B·H·W).
template <typename T>
void backward_block(const T* zs, const T* zt, int64_t K, int64_t N, int64_t len, double inv_t, double scale,
                    KdScratch& s, T* gs, T* gt) {
  block_stats(zs, zt, K, N, len, inv_t, s);
  for (int64_t i = 0; i < len; ++i) s.ss[i] = 1.0 / s.ss[i], s.st[i] = 1.0 / s.st[i];
  for (int64_t k = 0; k < K; ++k) {
    const double* es = s.es + k * kKdBlock;
    const double* et = s.et + k * kKdBlock;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t at = k * N + i;
      const double p_s = es[i] * s.ss[i], p_t = et[i] * s.st[i];
      const double log_ratio = ((static_cast<double>(zt[at]) - s.mt[i]) - (static_cast<double>(zs[at]) - s.ms[i])) *
                                   inv_t + s.log_ratio[i];
      gs[at] = static_cast<T>(scale * (p_s - p_t));
      gt[at] = static_cast<T>(scale * p_t * (log_ratio - s.kl[i]));
    }
  }
}

// Non-template entry points, one set per ISA namespace (each TU that includes this file defines its own).
double forward_f32(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                          KdScratch& s) {
  return forward_block(zs, zt, K, N, len, inv_t, s);
}
double forward_f64(const double* zs, const double* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                          KdScratch& s) {
  return forward_block(zs, zt, K, N, len, inv_t, s);
}
void backward_f32(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                         double scale, KdScratch& s, float* gs, float* gt) {
  backward_block(zs, zt, K, N, len, inv_t, scale, s, gs, gt);
}
void backward_f64(const double* zs, const double* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                         double scale, KdScratch& s, double* gs, double* gt) {
  backward_block(zs, zt, K, N, len, inv_t, scale, s, gs, gt);
}

}  // namespace RELKD_ISA
}  // namespace kd_cpu
}  // namespace relkd
