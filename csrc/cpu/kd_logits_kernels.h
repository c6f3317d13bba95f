// Pixel-block kernels of kd_logits_loss on the CPU, compiled once per instruction set: kd_logits.cpp
// includes this file for the baseline ISA and kernels_avx2.cpp / kernels_avx512.cpp for the wider
// builds, each inside its own namespace (RELKD_ISA); kd_logits.cpp picks one per call (isa.h) and declares
// the entry points of kd_logits_entry.h. Plain C++ on raw pointers only, so no inline function from another
// header is instantiated with the wider ISA.
//
// Per pixel, with u = (z − max z) / T: KL = Σ_k p_t,k (u_t,k − u_s,k) + log(Σ e^{u_s} / Σ e^{u_t}).
// Written so, the KL of nearly equal distributions is a difference of O(δ) terms, which float32 would
// resolve only to ~1e-7/δ: float64 input takes that form in float64 (block_stats), float32 input the
// centred form below, which has no such difference and runs in float32 (twice the SIMD lanes).
#include <cstdint>
#include <cstring>

#include "fast_math.h"
#include "kd_logits_scratch.h"

namespace relkd {
namespace kd_cpu {
namespace RELKD_ISA {

inline double nan_max(double m, double v) { return (v > m || v != v) ? v : m; }

// Fills s for one block of `len` pixels (pixel stride 1, class stride N); keeps the exponentials.
// Without need_kl (the student gradient alone) s.kl and s.log_ratio are left unset.
template <typename T>
void block_stats(const T* zs, const T* zt, int64_t K, int64_t N, int64_t len, double inv_t, KdScratch& s,
                 bool need_kl = true) {
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
      s.ss[i] += a, s.st[i] += b;
      if (need_kl) s.kl[i] += b * (ut - us);  // kl holds Σ e_t (u_t − u_s) for now
    }
  }
  if (!need_kl) return;
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
// gs or gt null: that gradient is not asked for and is neither computed nor written.
template <typename T>
void backward_block(const T* zs, const T* zt, int64_t K, int64_t N, int64_t len, double inv_t, double scale,
                    KdScratch& s, T* gs, T* gt) {
  block_stats(zs, zt, K, N, len, inv_t, s, /*need_kl=*/gt != nullptr);
  for (int64_t i = 0; i < len; ++i) s.ss[i] = 1.0 / s.ss[i], s.st[i] = 1.0 / s.st[i];
  for (int64_t k = 0; k < K; ++k) {
    const double* es = s.es + k * kKdBlock;
    const double* et = s.et + k * kKdBlock;
    if (gs != nullptr)
      for (int64_t i = 0; i < len; ++i) gs[k * N + i] = static_cast<T>(scale * (es[i] * s.ss[i] - et[i] * s.st[i]));
    if (gt == nullptr) continue;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t at = k * N + i;
      const double log_ratio = ((static_cast<double>(zt[at]) - s.mt[i]) - (static_cast<double>(zs[at]) - s.ms[i])) *
                                   inv_t + s.log_ratio[i];
      gt[at] = static_cast<T>(scale * et[i] * s.st[i] * (log_ratio - s.kl[i]));
    }
  }
}

// float32 input: the centred form. With v_k = u_t,k − u_s,k, v̄ = Σ p_t v and w_k = v_k − v̄ (Σ p_t w = 0):
//   KL = log Σ_k p_t,k e^{−w_k} = log1p(Q),  Q = Σ_k p_t,k φ(w_k),  φ(w) = e^{−w} − 1 + w ≥ 0,
//   p_s,k − p_t,k = (p_t,k (e^{−w_k} − 1) − p_t,k Q) / (1 + Q),  ∂KL/∂u_t,k = p_t,k w_k.
// The v_k enter only through w, so they are taken relative to the teacher's top class r (D_r = 0):
// D_k = ((z_t,k − z_s,k) − (z_t,r − z_s,r)) / T keeps its digits (offsets between the two maxima would cost
// 1e-7 of the offset in every w), φ is a series for |w| < 2 and every other sum has terms of one sign, so
// each quantity is accurate to a few float32 ulps of itself. Far from the teacher (a_k = log p_t,k − w_k > 20
// for some k, i.e. KL > ~20) e^{a_k} is taken relative to sh = max_k a_k − 20 and KL = sh + log Σ e^{a_k − sh},
// so nothing overflows.
constexpr float kFar = 20.0f;

// φ(w)/w² for |w| < 2: Σ_{n≥0} (−w)^n / (n + 2)!, to w^13 (truncation < 3e-9 relative at |w| = 2). The
// wide range lets most blocks skip e^{−w} altogether.
constexpr float kSeries = 2.0f;
inline float phi_over_w2(float w) {
  const float x = -w;
  float p = 1.0f / 1307674368000.0f;      // 1/15!
  p = p * x + 1.0f / 87178291200.0f;      // 1/14!
  p = p * x + 1.0f / 6227020800.0f;       // 1/13!
  p = p * x + 1.0f / 479001600.0f;        // 1/12!
  p = p * x + 1.0f / 39916800.0f;
  p = p * x + 1.0f / 3628800.0f;
  p = p * x + 1.0f / 362880.0f;
  p = p * x + 1.0f / 40320.0f;
  p = p * x + 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  return p;
}

inline float nan_maxf(float m, float v) { return (v > m || v != v) ? v : m; }

// Per-pixel results of one block; the per-class terms go to s.f32: pt, w, f = e^{a − sh}, term = p_t φ(w).
// far: some pixel of the block has a_k > kFar (then sh, sum_f are set; otherwise sh = 0).
struct CentredBlock {
  float q[kKdBlock], sh[kKdBlock], sum_f[kKdBlock], kl[kKdBlock];
  bool far;
};

// Largest value of v[0..len) (NaN entries are skipped), in 8 lanes so it vectorizes.
inline float block_max(const float* v, int64_t len) {
  const int64_t full = len & ~int64_t{7};
  float lane[8] = {-3.4e38f, -3.4e38f, -3.4e38f, -3.4e38f, -3.4e38f, -3.4e38f, -3.4e38f, -3.4e38f};
  for (int64_t i = 0; i < full; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] = v[i + l] > lane[l] ? v[i + l] : lane[l];
  float m = -3.4e38f;
  for (int64_t i = full; i < len; ++i) m = v[i] > m ? v[i] : m;
  for (int l = 0; l < 8; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}

// K = 2 (binary segmentation, this benchmark's case): the same quantities in closed form, one exponential
// per pixel. With r the teacher's top class and o the other, a = (z_t,r − z_t,o)/T ≥ 0,
// p_t,o = e^{−a}/(1 + e^{−a}), Δ = D_o, w_r = −p_t,o Δ, w_o = p_t,r Δ. Returns false, having written nothing
// the caller reads, when some |w| ≥ kSeries (the general path then takes the block).
bool binary_stats(const float* __restrict__ zs, const float* __restrict__ zt, int64_t N, int64_t len, float inv_t,
                  float* __restrict__ pt, float* __restrict__ w, float* __restrict__ term, CentredBlock& c,
                  bool need_kl) {
  if (len > kKdBlock) __builtin_unreachable();
  float absw[kKdBlock];
  for (int64_t i = 0; i < len; ++i) {
    const float t0 = zt[i], t1 = zt[N + i], s0 = zs[i], s1 = zs[N + i];
    const bool one = t1 > t0;
    const float margin = (one ? t1 - t0 : t0 - t1) * inv_t;
    const float e = exp_f32(-margin), inv = 1.0f / (1.0f + e);
    const float p_top = inv, p_other = e * inv;
    const float delta = (one ? (t0 - s0) - (t1 - s1) : (t1 - s1) - (t0 - s0)) * inv_t;
    const float w_top = -p_other * delta, w_other = p_top * delta;
    pt[i] = one ? p_other : p_top, pt[kKdBlock + i] = one ? p_top : p_other;
    w[i] = one ? w_other : w_top, w[kKdBlock + i] = one ? w_top : w_other;
    absw[i] = w_other < 0.0f ? -w_other : w_other;  // |w_other| ≥ |w_top| since p_top ≥ ½
  }
  if (!(block_max(absw, len) < kSeries)) return false;
  for (int64_t i = 0; i < len; ++i) {
    const float p0 = pt[i], p1 = pt[kKdBlock + i], w0 = w[i], w1 = w[kKdBlock + i];
    const float a0 = p0 * (w0 * w0) * phi_over_w2(w0), a1 = p1 * (w1 * w1) * phi_over_w2(w1);
    term[i] = a0, term[kKdBlock + i] = a1;
    const float q = a0 + a1;
    c.q[i] = q < 0.0f ? 0.0f : q;
    c.sh[i] = 0.0f, c.sum_f[i] = 1.0f;
  }
  if (need_kl)
    for (int64_t i = 0; i < len; ++i) c.kl[i] = log1p_f32(c.q[i]);
  c.far = false;
  return true;
}

void centred_stats(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, float inv_t,
                   KdScratch& s, CentredBlock& c, bool need_kl) {
  if (len > kKdBlock) __builtin_unreachable();  // lets GCC bound the loops over the kKdBlock arrays
  float* pt = s.f32;
  float* w = pt + K * kKdBlock;
  float* f = w + K * kKdBlock;
  float* term = f + K * kKdBlock;
  if (K == 2 && binary_stats(zs, zt, N, len, inv_t, pt, w, term, c, need_kl)) return;
  // mt: the teacher's max logit; off: z_t,r − z_s,r at its class r (NaN propagates through both).
  float mt[kKdBlock], off[kKdBlock], st[kKdBlock], inv_st[kKdBlock], vbar[kKdBlock], negw[kKdBlock], absw[kKdBlock];
  for (int64_t i = 0; i < len; ++i) mt[i] = zt[i], off[i] = zt[i] - zs[i], st[i] = 0.0f, vbar[i] = 0.0f;
  for (int64_t k = 1; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const float v = zt[k * N + i];
      const bool top = v > mt[i] || v != v;
      mt[i] = top ? v : mt[i];
      off[i] = top ? v - zs[k * N + i] : off[i];
    }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const float e = exp_f32((zt[k * N + i] - mt[i]) * inv_t);
      pt[k * kKdBlock + i] = e;
      st[i] += e;
    }
  for (int64_t i = 0; i < len; ++i) inv_st[i] = 1.0f / st[i], negw[i] = -3.4e38f, absw[i] = 0.0f;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const float p = pt[k * kKdBlock + i] * inv_st[i];
      const float v = ((zt[k * N + i] - zs[k * N + i]) - off[i]) * inv_t;  // D_k
      pt[k * kKdBlock + i] = p, w[k * kKdBlock + i] = v;
      vbar[i] += p * v;
    }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const float wk = w[k * kKdBlock + i] - vbar[i];
      w[k * kKdBlock + i] = wk;
      // plain max (vectorizes to vmaxps): a NaN w skips the far path below and then propagates by itself
      negw[i] = -wk > negw[i] ? -wk : negw[i];
      const float aw = wk < 0.0f ? -wk : wk;
      absw[i] = aw > absw[i] ? aw : absw[i];
    }
  // a_k = log p_t,k − w_k ≤ −w_k: a block whose −w stay ≤ kFar has no far pixel, needs no log p_t, and
  // e^{a_k} = p_t,k e^{−w_k} cannot overflow. Only terms with |w| ≥ kSeries need that exponential at all.
  c.far = block_max(negw, len) > kFar;
  for (int64_t i = 0; i < len; ++i) c.q[i] = 0.0f, c.sh[i] = 0.0f, c.sum_f[i] = 1.0f;
  if (!c.far) {
    if (block_max(absw, len) < kSeries) {  // every term by its series (two loops: GCC would if-convert one)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < len; ++i) {
          const int64_t at = k * kKdBlock + i;
          const float p = pt[at], wk = w[at];
          const float t = p * (wk * wk) * phi_over_w2(wk);
          term[at] = t;
          c.q[i] += t;
        }
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < len; ++i) {
          const int64_t at = k * kKdBlock + i;
          const float p = pt[at], wk = w[at];
          const float e = p * exp_f32(-wk);
          const float near = p * (wk * wk) * phi_over_w2(wk), far = (e - p) + p * wk;
          const float t = (wk < kSeries && wk > -kSeries) ? near : far;
          f[at] = e, term[at] = t;
          c.q[i] += t;
        }
    }
    for (int64_t i = 0; i < len; ++i) c.q[i] = c.q[i] < 0.0f ? 0.0f : c.q[i];  // a rounding below 0 is ~1e-41
    if (need_kl)
      for (int64_t i = 0; i < len; ++i) c.kl[i] = log1p_f32(c.q[i]);
    return;
  }
  float amax[kKdBlock];
  for (int64_t i = 0; i < len; ++i) st[i] = log_f32(st[i]), amax[i] = -3.4e38f;  // st now holds log Σ e^{u_t}
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const float a = ((zt[k * N + i] - mt[i]) * inv_t - st[i]) - w[k * kKdBlock + i];  // log(p_t,k e^{−w_k})
      f[k * kKdBlock + i] = a;
      amax[i] = nan_maxf(amax[i], a);
    }
  for (int64_t i = 0; i < len; ++i) {
    const float excess = amax[i] - kFar;
    c.sh[i] = excess > 0.0f ? excess : 0.0f;
    c.sum_f[i] = 0.0f;
  }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const int64_t at = k * kKdBlock + i;
      const float e = exp_f32(f[at] - c.sh[i]), p = pt[at], wk = w[at];
      const float near = p * (wk * wk) * phi_over_w2(wk), far = (e - p) + p * wk;  // far: exact when sh = 0
      const float t = (wk < kSeries && wk > -kSeries) ? near : far;
      f[at] = e, term[at] = t;
      c.sum_f[i] += e, c.q[i] += t;
    }
  for (int64_t i = 0; i < len; ++i) {
    c.q[i] = c.q[i] < 0.0f ? 0.0f : c.q[i];
    c.kl[i] = c.sh[i] > 0.0f ? c.sh[i] + log_f32(c.sum_f[i]) : log1p_f32(c.q[i]);
  }
}

double forward_centred(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                       KdScratch& s) {
  CentredBlock c;
  centred_stats(zs, zt, K, N, len, static_cast<float>(inv_t), s, c, /*need_kl=*/true);
  double lane[8] = {};  // 8 partial sums: one chain of dependent adds would cost ~4 cycles a pixel
  int64_t i = 0;
  for (; i + 8 <= len; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] += c.kl[i + l];
  double sum = 0.0;
  for (; i < len; ++i) sum += c.kl[i];
  for (int l = 0; l < 8; ++l) sum += lane[l];
  return sum;
}

void backward_centred(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                      double scale, KdScratch& s, float* gs, float* gt) {
  CentredBlock c;
  centred_stats(zs, zt, K, N, len, static_cast<float>(inv_t), s, c, /*need_kl=*/false);
  const float* pt = s.f32;
  const float* w = pt + K * kKdBlock;
  const float* f = w + K * kKdBlock;
  const float* term = f + K * kKdBlock;
  const float sc = static_cast<float>(scale);
  if (gt != nullptr)  // ∂KL/∂u_t = p_t w
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < len; ++i) gt[k * N + i] = sc * (pt[k * kKdBlock + i] * w[k * kKdBlock + i]);
  if (gs == nullptr) return;
  float inv_s[kKdBlock], inv_f[kKdBlock];
  for (int64_t i = 0; i < len; ++i) inv_s[i] = 1.0f / (1.0f + c.q[i]);
  if (!c.far) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < len; ++i) {
        const int64_t at = k * kKdBlock + i;
        const float p = pt[at], wk = w[at];
        gs[k * N + i] = sc * (((term[at] - p * wk) - p * c.q[i]) * inv_s[i]);  // (p_t (e^{−w} − 1) − p_t Q) / (1 + Q)
      }
    return;
  }
  for (int64_t i = 0; i < len; ++i) inv_f[i] = 1.0f / c.sum_f[i];
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const int64_t at = k * kKdBlock + i;
      const float p = pt[at], wk = w[at];
      const float near = ((term[at] - p * wk) - p * c.q[i]) * inv_s[i];
      const float far = f[at] * inv_f[i] - p;
      gs[k * N + i] = sc * (c.sh[i] > 0.0f ? far : near);
    }
}

// Non-template entry points, one set per ISA namespace (each TU that includes this file defines its own).
double forward_f32(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                          KdScratch& s) {
  return forward_centred(zs, zt, K, N, len, inv_t, s);
}
double forward_f64(const double* zs, const double* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                          KdScratch& s) {
  return forward_block(zs, zt, K, N, len, inv_t, s);
}
void backward_f32(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                         double scale, KdScratch& s, float* gs, float* gt) {
  backward_centred(zs, zt, K, N, len, inv_t, scale, s, gs, gt);
}
void backward_f64(const double* zs, const double* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                         double scale, KdScratch& s, double* gs, double* gt) {
  backward_block(zs, zt, K, N, len, inv_t, scale, s, gs, gt);
}

}  // namespace RELKD_ISA
}  // namespace kd_cpu
}  // namespace relkd
