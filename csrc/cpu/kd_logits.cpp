// kd_logits_loss on the CPU (DESIGN §3.3): one fused sweep per block of pixels computes both
// log-softmaxes, the KL and (in backward) both gradients, with no full-size temporaries. Per-pixel math
// runs in float64: the KL of nearly equal distributions is a difference of O(δ) terms, which float32
// would resolve to only ~1e-7/δ.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../relkd.h"

namespace relkd {
namespace {

constexpr int64_t kBlock = 64;

// exp(x) for x <= 0 (logits minus their row max). Cody–Waite reduction and the Cephes rational
// approximation (~1 ulp), branch-free so the pixel loops vectorize; NaN propagates.
inline double exp_nonpositive(double x) {
  constexpr double kRound = 6755399441055744.0;  // 1.5·2^52: adding it rounds to an integer in the low bits
  x = x < -700.0 ? -700.0 : x;
  const double t = x * 1.4426950408889634 + kRound;
  const double n = t - kRound;
  double r = x - n * 6.93145751953125e-1;
  r -= n * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 1.0);
  const double q =
      ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr + 2.0;
  uint64_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 1023) << 52;  // 2^n: the low bits of t hold n
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return (1.0 + 2.0 * p / (q - p)) * scale;
}

inline double nan_max(double m, double v) { return (v > m || v != v) ? v : m; }

// Per-pixel softmax statistics of a block; keeps the exponentials for the backward sweep.
struct BlockStats {
  std::vector<double> es, et;  // [K, len] exp((z - max) / T)
  double ms[kBlock], mt[kBlock], ss[kBlock], st[kBlock], kl[kBlock], log_ratio[kBlock];

  template <typename T>
  void compute(const T* zs, const T* zt, int64_t K, int64_t N, int64_t len, double inv_t) {
    es.resize(K * len);
    et.resize(K * len);
    for (int64_t i = 0; i < len; ++i) ms[i] = zs[i], mt[i] = zt[i], ss[i] = st[i] = kl[i] = 0.0;
    for (int64_t k = 1; k < K; ++k)
      for (int64_t i = 0; i < len; ++i) ms[i] = nan_max(ms[i], zs[k * N + i]), mt[i] = nan_max(mt[i], zt[k * N + i]);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < len; ++i) {
        const double us = (zs[k * N + i] - ms[i]) * inv_t, ut = (zt[k * N + i] - mt[i]) * inv_t;
        const double a = exp_nonpositive(us), b = exp_nonpositive(ut);
        es[k * len + i] = a, et[k * len + i] = b;
        ss[i] += a, st[i] += b, kl[i] += b * (ut - us);  // kl holds Σ e_t (u_t − u_s) for now
      }
    // KL = Σ p_t (u_t − u_s) + log(Σ e_s / Σ e_t)
    for (int64_t i = 0; i < len; ++i) log_ratio[i] = std::log(ss[i] / st[i]), kl[i] = kl[i] / st[i] + log_ratio[i];
  }
};

template <typename Fn>
void for_pixel_blocks(int64_t B, int64_t N, Fn fn) {
  const int64_t nblocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, B * nblocks, 16, [&](int64_t begin, int64_t end) {
    BlockStats stats;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblocks, i0 = (task % nblocks) * kBlock;
      fn(task, b, i0, std::min(kBlock, N - i0), stats);
    }
  });
}

template <typename T>
Tensor forward_impl(const Tensor& zs, const Tensor& zt, double temperature) {
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  const int64_t nblocks = (N + kBlock - 1) / kBlock;
  const T* ps = zs.data_ptr<T>();
  const T* pt = zt.data_ptr<T>();
  std::vector<double> partial(B * nblocks);  // per-block sums, added in a fixed order: deterministic
  for_pixel_blocks(B, N, [&](int64_t task, int64_t b, int64_t i0, int64_t len, BlockStats& s) {
    s.compute(ps + b * K * N + i0, pt + b * K * N + i0, K, N, len, 1.0 / temperature);
    double sum = 0.0;
    for (int64_t i = 0; i < len; ++i) sum += s.kl[i];
    partial[task] = sum;
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return at::scalar_tensor(total * temperature * temperature / static_cast<double>(B * N),
                           zs.options().dtype(at::kDouble))
      .to(zs.scalar_type());
}

template <typename T>
std::tuple<Tensor, Tensor> backward_impl(const Tensor& grad, const Tensor& zs, const Tensor& zt,
                                         double temperature) {
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  Tensor gs = at::empty_like(zs), gt = at::empty_like(zt);
  const T* ps = zs.data_ptr<T>();
  const T* pt = zt.data_ptr<T>();
  T* os = gs.data_ptr<T>();
  T* ot = gt.data_ptr<T>();
  // d/dzs = T/(BN) (p_s − p_t);  d/dzt = T/(BN) p_t ((log p_t − log p_s) − KL)
  const double scale = grad.item<double>() * temperature / static_cast<double>(B * N);
  const double inv_t = 1.0 / temperature;
  for_pixel_blocks(B, N, [&](int64_t, int64_t b, int64_t i0, int64_t len, BlockStats& s) {
    const int64_t off = b * K * N + i0;
    s.compute(ps + off, pt + off, K, N, len, inv_t);
    for (int64_t i = 0; i < len; ++i) s.ss[i] = 1.0 / s.ss[i], s.st[i] = 1.0 / s.st[i];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < len; ++i) {
        const int64_t at = off + k * N + i;
        const double p_s = s.es[k * len + i] * s.ss[i], p_t = s.et[k * len + i] * s.st[i];
        const double log_ratio =
            ((static_cast<double>(pt[at]) - s.mt[i]) - (static_cast<double>(ps[at]) - s.ms[i])) * inv_t +
            s.log_ratio[i];
        os[at] = static_cast<T>(scale * (p_s - p_t));
        ot[at] = static_cast<T>(scale * p_t * (log_ratio - s.kl[i]));
      }
  });
  return {gs, gt};
}

void check_cpu(const Tensor& zs) {
  TORCH_CHECK_TYPE(zs.scalar_type() == at::kFloat || zs.scalar_type() == at::kDouble,
                   "kd_logits_loss: the CPU kernel supports float32 and float64, got ", zs.scalar_type());
}

Tensor forward_cpu(const Tensor& zs_in, const Tensor& zt_in, double temperature, bool check_finite) {
  check_kd_inputs(zs_in, zt_in, temperature);
  check_cpu(zs_in);
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  Tensor loss;
  AT_DISPATCH_FLOATING_TYPES(zs.scalar_type(), "kd_logits_loss", [&] {
    loss = forward_impl<scalar_t>(zs, zt, temperature);
  });
  if (check_finite) check_finite_result("kd_logits_loss", loss, {{"zs", zs}, {"zt", zt}});
  return loss;
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& zs_in, const Tensor& zt_in,
                                        double temperature) {
  check_cpu(zs_in);
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(zs.scalar_type(), "kd_logits_loss_backward", [&] {
    out = backward_impl<scalar_t>(grad, zs, zt, temperature);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("kd_logits_loss", &forward_cpu);
  m.impl("kd_logits_loss_backward", &backward_cpu);
}

}  // namespace relkd
