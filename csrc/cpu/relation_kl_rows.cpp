// The per-pixel passes of relation_kl_loss on the CPU: NCHW features → RelationRows (relkd.h) and the
// chain rule of x̂ = x / max(|x|, eps) back to NCHW, each one sweep over a block of pixels with the norms in
// float64. They replace six ATen composites (float64 copies, transposes, a strided norm), which cost more
// than the pair sweep itself at small N (B = 4, C = 64, 16×16: pool = 4 on 64×64 maps).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "../relkd.h"
#include "pixel_blocks.h"

namespace relkd {
namespace {

constexpr int64_t kBlock = 64;  // pixels per task: a block's rows ([kBlock, C]) stay in L1/L2

// denom_i = max(|x_i|, eps) and n_i = |x_i| / denom_i for the len pixels at x (channel stride N).
template <typename T>
void norms(const T* x, int64_t C, int64_t N, int64_t len, double eps, double* denom, double* n) {
  std::fill(denom, denom + len, 0.0);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) denom[i] += static_cast<double>(x[c * N + i]) * static_cast<double>(x[c * N + i]);
  for (int64_t i = 0; i < len; ++i) {
    const double norm = std::sqrt(denom[i]);
    denom[i] = std::max(norm, eps);
    n[i] = norm / denom[i];
  }
}

// Rows x̂ [len, C] (work dtype) of the len pixels at x.
template <typename T, typename W>
void unit_rows(const T* x, int64_t C, int64_t N, int64_t len, const double* denom, W* rows) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) rows[i * C + c] = static_cast<W>(static_cast<double>(x[c * N + i]) / denom[i]);
}

// offsets [B, 2, N] hold n_i; turn them into m_i = n_i · max_j n_j / τ (relkd.h).
void offsets_from_norms(Tensor& offsets, double inv_tau) {
  const int64_t rows = offsets.size(0) * 2, N = offsets.size(2);
  double* m = offsets.data_ptr<double>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      double* row = m + r * N;
      const double scale = *std::max_element(row, row + N) * inv_tau;
      for (int64_t i = 0; i < N; ++i) row[i] *= scale;
    }
  });
}

template <typename T, typename W>
RelationRows rows_impl(const Tensor& fs_in, const Tensor& ft_in, double eps, double inv_tau) {
  const Tensor fs = fs_in.contiguous(), ft = ft_in.contiguous();
  const int64_t B = fs.size(0), Cs = fs.size(1), Ct = ft.size(1), N = fs.size(2) * fs.size(3);
  const bool pair_form = Cs == Ct;
  const auto work = fs.options().dtype(c10::CppTypeToScalarType<W>::value);
  RelationRows r{at::empty({B, N, Cs}, work), at::empty({B, N, Ct}, work), {}, {},
                 at::empty({B, 2, N}, fs.options().dtype(at::kDouble))};
  if (pair_form) r.dl = at::empty({B, N, 2 * Cs}, work), r.dr = at::empty_like(r.dl);
  const T *ps = fs.data_ptr<T>(), *pt = ft.data_ptr<T>();
  W *xs = r.xs.data_ptr<W>(), *xt = r.xt.data_ptr<W>();
  double* m = r.offsets.data_ptr<double>();
  for_pixel_blocks(B, N, kBlock, [&](int64_t b, int64_t i0, int64_t len) {
    double den_s[kBlock], den_t[kBlock];
    const T* s = ps + b * Cs * N + i0;
    const T* t = pt + b * Ct * N + i0;
    norms(s, Cs, N, len, eps, den_s, m + 2 * b * N + i0);
    norms(t, Ct, N, len, eps, den_t, m + (2 * b + 1) * N + i0);
    W* rs = xs + (b * N + i0) * Cs;
    W* rt = xt + (b * N + i0) * Ct;
    if (!pair_form) {
      unit_rows(s, Cs, N, len, den_s, rs);
      unit_rows(t, Ct, N, len, den_t, rt);
      return;
    }
    // dl = [x̂t | e], dr = [e | x̂s] with e = x̂t − x̂s in float64 before rounding (relkd.h).
    const int64_t C = Cs;
    W* dl = r.dl.data_ptr<W>() + (b * N + i0) * 2 * C;
    W* dr = r.dr.data_ptr<W>() + (b * N + i0) * 2 * C;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const double us = static_cast<double>(s[c * N + i]) / den_s[i];
        const double ut = static_cast<double>(t[c * N + i]) / den_t[i];
        const W e = static_cast<W>(ut - us);
        rs[i * C + c] = static_cast<W>(us);
        rt[i * C + c] = static_cast<W>(ut);
        dl[i * 2 * C + c] = static_cast<W>(ut);
        dl[i * 2 * C + C + c] = e;
        dr[i * 2 * C + c] = e;
        dr[i * 2 * C + C + c] = static_cast<W>(us);
      }
  });
  offsets_from_norms(r.offsets, inv_tau);
  return r;
}

// gx = (g − x̂ (x̂·g)) / |x| for |x| > eps, g / eps otherwise, with g = scale · g_rows[i, c].
template <typename T, typename W>
Tensor rows_backward_impl(const Tensor& f_in, const Tensor& g_rows_in, double scale, double eps) {
  const Tensor f = f_in.contiguous(), g_rows = g_rows_in.contiguous();
  const int64_t B = f.size(0), C = f.size(1), N = f.size(2) * f.size(3);
  Tensor out = at::empty(f.sizes(), f.options());
  const T* px = f.data_ptr<T>();
  const W* pg = g_rows.data_ptr<W>();
  T* po = out.data_ptr<T>();
  for_pixel_blocks(B, N, kBlock, [&](int64_t b, int64_t i0, int64_t len) {
    double sq[kBlock] = {}, dot[kBlock] = {};
    const T* x = px + b * C * N + i0;
    const W* g = pg + (b * N + i0) * C;
    T* o = po + b * C * N + i0;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const double v = static_cast<double>(x[c * N + i]);
        sq[i] += v * v;
        dot[i] += v * static_cast<double>(g[i * C + c]);
      }
    for (int64_t i = 0; i < len; ++i) {
      const double norm = std::sqrt(sq[i]);
      dot[i] = norm > eps ? dot[i] / sq[i] : 0.0;  // the projection coefficient x̂·g / |x|
      sq[i] = scale / std::max(norm, eps);
    }
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const double v = static_cast<double>(x[c * N + i]);
        o[c * N + i] = static_cast<T>((static_cast<double>(g[i * C + c]) - v * dot[i]) * sq[i]);
      }
  });
  return out;
}

}  // namespace

RelationRows relation_rows_cpu(const Tensor& fs, const Tensor& ft, double eps, double inv_tau, at::ScalarType work) {
  if (fs.scalar_type() == at::kDouble) return rows_impl<double, double>(fs, ft, eps, inv_tau);
  return work == at::kDouble ? rows_impl<float, double>(fs, ft, eps, inv_tau)
                             : rows_impl<float, float>(fs, ft, eps, inv_tau);
}

Tensor relation_rows_backward_cpu(const Tensor& f, const Tensor& g_rows, const Tensor& scale, double eps) {
  const double s = scale.item<double>();
  if (f.scalar_type() == at::kDouble) return rows_backward_impl<double, double>(f, g_rows, s, eps);
  return g_rows.scalar_type() == at::kDouble ? rows_backward_impl<float, double>(f, g_rows, s, eps)
                                             : rows_backward_impl<float, float>(f, g_rows, s, eps);
}

}  // namespace relkd
