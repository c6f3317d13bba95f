// Fused per-pixel kernels of affinity_loss on the CPU; the GEMM part is device generic
// (csrc/common/affinity.cpp). Pixels are contiguous in NCHW, so each task takes a block of pixels of
// one sample and sweeps the channels over it (unit-stride inner loops the compiler vectorizes).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "../relkd.h"
#include "pixel_blocks.h"

namespace relkd {
namespace {

constexpr int64_t kBlock = 256;

template <typename T>
void sum_squares(const T* x, int64_t C, int64_t N, int64_t len, double* acc) {
  std::fill(acc, acc + len, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    const T* row = x + c * N;
    for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(row[i]) * static_cast<double>(row[i]);
  }
}

template <typename T, typename W>
void normalize_impl(const Tensor& xs, const Tensor& xt, double eps, bool sum_diff, Tensor& out_a,
                    Tensor& out_b) {
  const int64_t B = xs.size(0), Cs = xs.size(1), Ct = xt.size(1), N = xs.size(2);
  const T* ps = xs.data_ptr<T>();
  const T* pt = xt.data_ptr<T>();
  W* pa = out_a.data_ptr<W>();
  W* pb = out_b.data_ptr<W>();
  for_pixel_blocks(B, N, kBlock, [&](int64_t b, int64_t i0, int64_t len) {
    double inv_s[kBlock], inv_t[kBlock];
    const T* s = ps + b * Cs * N + i0;
    const T* t = pt + b * Ct * N + i0;
    sum_squares(s, Cs, N, len, inv_s);
    sum_squares(t, Ct, N, len, inv_t);
    for (int64_t i = 0; i < len; ++i) {
      inv_s[i] = 1.0 / std::max(std::sqrt(inv_s[i]), eps);
      inv_t[i] = 1.0 / std::max(std::sqrt(inv_t[i]), eps);
    }
    W* a = pa + b * Cs * N + i0;
    W* o = pb + b * Ct * N + i0;
    if (sum_diff) {
      for (int64_t c = 0; c < Cs; ++c)
        for (int64_t i = 0; i < len; ++i) {
          const double u = s[c * N + i] * inv_s[i], v = t[c * N + i] * inv_t[i];
          a[c * N + i] = static_cast<W>(u + v);
          o[c * N + i] = static_cast<W>(u - v);
        }
    } else {
      for (int64_t c = 0; c < Cs; ++c)
        for (int64_t i = 0; i < len; ++i) a[c * N + i] = static_cast<W>(s[c * N + i] * inv_s[i]);
      for (int64_t c = 0; c < Ct; ++c)
        for (int64_t i = 0; i < len; ++i) o[c * N + i] = static_cast<W>(t[c * N + i] * inv_t[i]);
    }
  });
}

// gx = (g − x̂ (x̂·g)) / |x| for |x| > eps, g / eps otherwise; g = ga + sign·gb (sign 0: g = ga).
template <typename T, typename W>
void chain_rule(const T* x, const W* ga, const W* gb, double sign, int64_t C, int64_t N, int64_t len,
                double eps, T* out) {
  double norm[kBlock], dot[kBlock];
  sum_squares(x, C, N, len, norm);
  std::fill(dot, dot + len, 0.0);
  for (int64_t i = 0; i < len; ++i) norm[i] = std::sqrt(norm[i]);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) {
      const double g = static_cast<double>(ga[c * N + i]) + sign * static_cast<double>(gb[c * N + i]);
      dot[i] += static_cast<double>(x[c * N + i]) * g;
    }
  for (int64_t i = 0; i < len; ++i) {
    // dot holds x·g; the projection needs x̂·g / |x| = x·g / |x|².
    dot[i] = norm[i] > eps ? dot[i] / (norm[i] * norm[i]) : 0.0;
    norm[i] = 1.0 / std::max(norm[i], eps);
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) {
      const double g = static_cast<double>(ga[c * N + i]) + sign * static_cast<double>(gb[c * N + i]);
      out[c * N + i] = static_cast<T>((g - static_cast<double>(x[c * N + i]) * dot[i]) * norm[i]);
    }
}

template <typename T, typename W>
void normalize_backward_impl(const Tensor& xs, const Tensor& xt, const Tensor& ga, const Tensor& gb,
                             double eps, bool sum_diff, Tensor& gxs, Tensor& gxt) {
  const int64_t B = xs.size(0), Cs = xs.size(1), Ct = xt.size(1), N = xs.size(2);
  const T* ps = xs.data_ptr<T>();
  const T* pt = xt.data_ptr<T>();
  // An undefined output is a side not asked for (its chain rule is skipped; see AffinityKernels).
  const W* pa = ga.defined() ? ga.data_ptr<W>() : nullptr;
  const W* pb = gb.defined() ? gb.data_ptr<W>() : nullptr;
  T* os = gxs.defined() ? gxs.data_ptr<T>() : nullptr;
  T* ot = gxt.defined() ? gxt.data_ptr<T>() : nullptr;
  for_pixel_blocks(B, N, kBlock, [&](int64_t b, int64_t i0, int64_t len) {
    const int64_t s = b * Cs * N + i0, t = b * Ct * N + i0;
    if (sum_diff) {  // ∂/∂x̂s = g_P + g_E, ∂/∂x̂t = g_P − g_E
      if (os) chain_rule(ps + s, pa + s, pb + s, 1.0, Cs, N, len, eps, os + s);
      if (ot) chain_rule(pt + t, pa + t, pb + t, -1.0, Ct, N, len, eps, ot + t);
    } else {
      if (os) chain_rule(ps + s, pa + s, pa + s, 0.0, Cs, N, len, eps, os + s);
      if (ot) chain_rule(pt + t, pb + t, pb + t, 0.0, Ct, N, len, eps, ot + t);
    }
  });
}

void normalize_cpu(const Tensor& xs, const Tensor& xt, double eps, bool sum_diff, Tensor& a, Tensor& b) {
  AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "affinity_loss", [&] {
    if (a.scalar_type() == at::kDouble) {
      normalize_impl<scalar_t, double>(xs, xt, eps, sum_diff, a, b);
    } else {
      normalize_impl<scalar_t, float>(xs, xt, eps, sum_diff, a, b);
    }
  });
}

void normalize_backward_cpu(const Tensor& xs, const Tensor& xt, const Tensor& ga, const Tensor& gb, double eps,
                            bool sum_diff, Tensor& gxs, Tensor& gxt) {
  const at::ScalarType work = (ga.defined() ? ga : gb).scalar_type();
  AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "affinity_loss_backward", [&] {
    if (work == at::kDouble) {
      normalize_backward_impl<scalar_t, double>(xs, xt, ga, gb, eps, sum_diff, gxs, gxt);
    } else {
      normalize_backward_impl<scalar_t, float>(xs, xt, ga, gb, eps, sum_diff, gxs, gxt);
    }
  });
}

constexpr AffinityKernels kCpuKernels{&normalize_cpu, &normalize_backward_cpu, /*chunk_elements=*/1 << 17,
                                        /*parallel_samples=*/true};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_cpu(const Tensor& fs, const Tensor& ft,
                                                               const std::optional<Tensor>& labels,
                                                               int64_t num_classes, double intra_weight,
                                                               double inter_weight, double eps,
                                                               bool check_finite) {
  check_affinity_args(fs, ft, labels, num_classes, intra_weight, inter_weight, eps);
  check_cpu_dtype("affinity_loss", fs);
  return affinity_loss_forward(kCpuKernels, fs, ft, labels, num_classes, intra_weight, inter_weight, eps,
                               check_finite);
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                        const std::optional<Tensor>& labels, const Tensor& s1,
                                        const Tensor& s2, const Tensor& s3, const Tensor& counts,
                                        double intra_weight, double inter_weight, double eps,
                                        std::array<bool, 2> output_mask) {
  check_affinity_backward_args(grad, fs, ft, labels, s1, s2, s3, counts, intra_weight, inter_weight, eps);
  check_cpu_dtype("affinity_loss_backward", fs);
  return affinity_loss_backward(kCpuKernels, grad, fs, ft, labels, s1, s2, s3, counts, intra_weight,
                                inter_weight, eps, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("affinity_loss", &forward_cpu);
  m.impl("affinity_loss_backward", &backward_cpu);
}

}  // namespace relkd
