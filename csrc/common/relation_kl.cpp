// relation_kl_loss (DESIGN §3.4), the device-generic part: checks, the normalization and its chain rule as
// ATen composites (used where a device has no fused per-pixel passes: CUDA; the CPU has its own,
// csrc/cpu/relation_kl_rows.cpp), and the per-row statistics → loss / backward terms. The O(N²) pair sweep is
// a per-device hook (RelationKLKernels); everything here is O(B·N·C).
//
// Per sample, x̂_i = x_i / max(|x_i|, eps), s_ij = ⟨x̂_i, x̂_j⟩ / τ (t_ij likewise for the teacher) and
//   lse_s(i) = m_s,i + log Σ_j e^{s_ij − m_s,i},   KL_i = Σ_j p_t,ij (t_ij − s_ij) − lse_t(i) + lse_s(i).
// The offsets m_i = |x̂_i|·max_j |x̂_j| / τ bound row i from above, and the diagonal term keeps the sum
// ≥ e^{−1/(4τ)}, so nothing overflows and (for τ > 1e-3) nothing underflows without a running max.
#include <cmath>

#include "../relkd.h"

namespace relkd {
namespace {

Tensor flat64(const Tensor& f) { return f.reshape({f.size(0), f.size(1), f.size(2) * f.size(3)}).to(at::kDouble); }

// Unit rows x̂ [B, N, C] in float64 and the row offsets m_i [B, N].
std::pair<Tensor, Tensor> unit_rows64(const Tensor& f, double eps, double inv_tau) {
  const Tensor x = flat64(f);
  const Tensor norm = at::linalg_vector_norm(x, 2, {1}, /*keepdim=*/true);  // [B, 1, N]
  const Tensor denom = norm.clamp_min(eps);
  const Tensor n = (norm / denom).squeeze(1);  // |x̂_i| = min(1, |x_i| / eps): exactly 1 for most pixels
  return {(x / denom).transpose(1, 2), n * n.amax(1, true) * inv_tau};
}

// [a | b] along the channels, rounded once to `dtype`.
Tensor concat_channels(const Tensor& a, const Tensor& b, at::ScalarType dtype) {
  Tensor out = at::empty({a.size(0), a.size(1), a.size(2) + b.size(2)}, a.options().dtype(dtype));
  out.narrow(2, 0, a.size(2)).copy_(a);
  out.narrow(2, a.size(2), b.size(2)).copy_(b);
  return out;
}

RelationRows relation_rows(const RelationKLKernels& k, const Tensor& fs, const Tensor& ft, double eps,
                           double inv_tau) {
  const bool same = fs.size(1) == ft.size(1);
  const auto work = same || !k.float64_when_channels_differ ? acc_type(fs) : at::kDouble;
  if (k.rows != nullptr) return k.rows(fs, ft, eps, inv_tau, work);
  const auto [us, ms] = unit_rows64(fs, eps, inv_tau);
  const auto [ut, mt] = unit_rows64(ft, eps, inv_tau);
  RelationRows rows{us.to(work).contiguous(), ut.to(work).contiguous(), {}, {}, at::stack({ms, mt}, 1)};
  if (same) {
    const Tensor e = ut - us;  // float64: keeps its digits when the student nears the teacher
    rows.dl = concat_channels(ut, e, work);
    rows.dr = concat_channels(e, us, work);
  }
  return rows;
}

// Chain rule of x̂ = x / max(|x|, eps): gx = (g − x̂ (x̂·g)) / |x| for |x| > eps, g / eps otherwise.
Tensor unit_rows_backward(const Tensor& f, const Tensor& g_rows, const Tensor& scale, double eps) {
  const Tensor x = flat64(f);
  // [B, C, N] contiguous, so the gradient comes back in the input's NCHW layout (avg_pool2d's backward, run
  // on it when pool > 1, takes a slow path for a channels-last gradient).
  const Tensor g = g_rows.transpose(1, 2).contiguous().to(at::kDouble).mul_(scale);
  const Tensor norm = at::linalg_vector_norm(x, 2, {1}, /*keepdim=*/true);
  const Tensor proj = at::where(norm > eps, (x * g).sum(1, true) / norm.square(), 0.0);
  return (g - x * proj).div_(norm.clamp_min(eps)).to(f.scalar_type()).reshape(f.sizes());
}

}  // namespace

Tensor relation_kl_terms(const Tensor& sums, const Tensor& offsets) {
  const Tensor sum_s = sums.select(1, 0), sum_t = sums.select(1, 1), acc = sums.select(1, 2);
  return at::stack(
      {offsets.select(1, 0), offsets.select(1, 1), sum_s.reciprocal(), sum_t.reciprocal(), acc / sum_t}, 1);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> relation_kl_forward(const RelationKLKernels& k, const Tensor& fs,
                                                               const Tensor& ft, double temperature, double eps,
                                                               bool check_finite, GradMask grad_mask) {
  const double inv_tau = 1.0 / temperature;
  const RelationRows rows = relation_rows(k, fs, ft, eps, inv_tau);
  const int64_t B = fs.size(0), N = rows.xs.size(1);
  const bool grads = grad_mask[0] || grad_mask[1];
  Tensor sums, gs, gt;  // sums [B, 3, N]; gs, gt: Σ_j G_ij x̂_j per row, when asked for
  if (!grads || k.sums_and_grads == nullptr || !k.sums_and_grads(rows, inv_tau, grad_mask, sums, gs, gt)) {
    sums = k.row_sums(rows, inv_tau);
    if (grads) {
      const Tensor terms = relation_kl_terms(sums, rows.offsets).contiguous();
      std::tie(gs, gt) = k.row_grads(rows, terms, inv_tau, grad_mask);
    }
  }
  const Tensor sum_s = sums.select(1, 0), sum_t = sums.select(1, 1), acc = sums.select(1, 2);
  const Tensor ms = rows.offsets.select(1, 0), mt = rows.offsets.select(1, 1);
  // KL_i = acc / Σ e_t + (m_s − m_t) + log(Σ e_s / Σ e_t): no difference of two large lse values.
  const Tensor kl = acc / sum_t + (ms - mt) + (sum_s / sum_t).log();
  const Tensor stats = at::stack({ms + sum_s.log(), mt + sum_t.log(), kl}, 1);  // lse_s, lse_t, KL
  // A KL divergence is ≥ 0; rounding can leave a near-zero sum a little below, so it is clamped at 0 (the
  // gradients are the unclamped formula's).
  const Tensor loss =
      (kl.sum() * (temperature * temperature / static_cast<double>(B * N))).clamp_min(0.0).to(fs.scalar_type());
  if (check_finite) check_finite_result("relation_kl_loss", loss, {{"fs", fs}, {"ft", ft}});
  // The backward op's scale (below) for an upstream gradient of 1.
  const Tensor scale = at::scalar_tensor(temperature / static_cast<double>(B * N), rows.offsets.options());
  const auto chain = k.rows_backward != nullptr ? k.rows_backward : &unit_rows_backward;
  return {loss, stats, grad_mask[0] ? chain(fs, gs, scale, eps) : at::empty({0}, fs.options()),
          grad_mask[1] ? chain(ft, gt, scale, eps) : at::empty({0}, ft.options())};
}

std::tuple<Tensor, Tensor> relation_kl_backward(const RelationKLKernels& k, const Tensor& grad, const Tensor& fs,
                                                const Tensor& ft, const Tensor& stats, double temperature,
                                                double eps, GradMask output_mask) {
  if (!output_mask[0] && !output_mask[1]) return {Tensor(), Tensor()};
  const double inv_tau = 1.0 / temperature;
  const RelationRows rows = relation_rows(k, fs, ft, eps, inv_tau);
  const int64_t B = fs.size(0), N = rows.xs.size(1);
  const Tensor lse_s = stats.select(1, 0), lse_t = stats.select(1, 1), kl = stats.select(1, 2);
  const Tensor ms = rows.offsets.select(1, 0), mt = rows.offsets.select(1, 1);
  // relation_kl_terms from the saved statistics: e^{m − lse} = 1/Σ e and lse_t − lse_s + KL = Σ p_t (t − s).
  const Tensor terms = at::stack({ms, mt, (ms - lse_s).exp(), (mt - lse_t).exp(), lse_t - lse_s + kl}, 1);
  const auto [gs, gt] = k.row_grads(rows, terms.contiguous(), inv_tau, output_mask);
  // dL/ds_ij carries τ²/(B·N) from the loss and 1/τ from s_ij = ⟨x̂_i, x̂_j⟩ / τ.
  const Tensor scale = grad.to(at::kDouble) * (temperature / static_cast<double>(B * N));  // no host sync
  const auto chain = k.rows_backward != nullptr ? k.rows_backward : &unit_rows_backward;
  return {output_mask[0] ? chain(fs, gs, scale, eps) : Tensor(),
          output_mask[1] ? chain(ft, gt, scale, eps) : Tensor()};
}

}  // namespace relkd
