// affinity_loss (DESIGN §3.2) without any N×N matrix. Per sample, with unit pixel vectors as columns
// (Ŝ: Cs×N, T̂: Ct×N) and A = X̂ᵀX̂:
//   ‖A_s − A_t‖²_F = ‖ŜŜᵀ‖² − 2‖ŜT̂ᵀ‖² + ‖T̂T̂ᵀ‖²                        ("dual" form, any Cs, Ct)
//                  = ½(⟨PPᵀ, EEᵀ⟩ + ⟨M, Mᵀ⟩), P = Ŝ + T̂, E = Ŝ − T̂, M = PEᵀ   ("sum/diff" form, Cs = Ct)
// The dual form cancels catastrophically when Ŝ ≈ T̂, so it runs in float64; the sum/diff form has no
// cancellation and runs in the input's accumulation dtype, with P and E formed from float64 unit vectors.
// Class-aware pairs: columns are sorted by class, so class k is a contiguous block and its intra-class
// sum is the same formula on that block; inter = total − intra.
// Both forms store three matrices per (sample, class): s1 = a aᵀ, s2 = a bᵀ, s3 = b bᵀ, where (a, b) are
// (P, E) or (Ŝ, T̂).
#include "../relkd.h"

#include <vector>

namespace relkd {
namespace {

struct Prepared {
  Tensor a, b;                  // work tensors [B, Ca, N], [B, Cb, N], columns sorted by class
  Tensor index;                 // [B, 1, N] permutation applied to the columns (undefined: identity)
  Tensor counts;                // [B, K] pixels per class, on the op's device
  std::vector<int64_t> offsets; // host copy: column offset of class k in sample b is offsets[b*(K+1)+k]
  bool sum_diff = false;
};

Tensor flat(const Tensor& f) { return f.reshape({f.size(0), f.size(1), f.size(2) * f.size(3)}).contiguous(); }

void check_labels(const Tensor& fs, const Tensor& labels, int64_t K) {
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, "affinity_loss: labels must be int64 class indices, got ",
                   labels.scalar_type());
  TORCH_CHECK_VALUE(labels.device() == fs.device(), "affinity_loss: labels must be on ", fs.device(),
                    ", got ", labels.device());
  TORCH_CHECK_VALUE(labels.dim() == 3 && labels.size(0) == fs.size(0) && labels.size(1) == fs.size(2) &&
                        labels.size(2) == fs.size(3),
                    "affinity_loss: labels must have shape [B, H, W] = [", fs.size(0), ", ", fs.size(2), ", ",
                    fs.size(3), "], got ", labels.sizes());
  const auto [lo, hi] = at::aminmax(labels);
  const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
  TORCH_CHECK_VALUE(min >= 0, "affinity_loss: labels must be non-negative, found ", min);
  TORCH_CHECK_VALUE(max < K, "affinity_loss: labels must be < num_classes = ", K, ", found ", max);
}

Prepared prepare(const AffinityKernels& k, const Tensor& fs, const Tensor& ft,
                 const std::optional<Tensor>& labels, int64_t K, double eps) {
  const int64_t B = fs.size(0), Cs = fs.size(1), Ct = ft.size(1), N = fs.size(2) * fs.size(3);
  Prepared p;
  p.sum_diff = Cs == Ct;
  const auto work = p.sum_diff ? acc_type(fs) : at::kDouble;
  p.a = at::empty({B, Cs, N}, fs.options().dtype(work));
  p.b = at::empty({B, Ct, N}, fs.options().dtype(work));
  k.normalize(flat(fs), flat(ft), eps, p.sum_diff, p.a, p.b);
  if (labels.has_value()) {
    const Tensor y = labels->reshape({B, N});
    p.index = std::get<1>(y.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false)).unsqueeze(1);
    p.a = p.a.gather(2, p.index.expand({B, Cs, N}));
    p.b = p.b.gather(2, p.index.expand({B, Ct, N}));
    p.counts = at::zeros({B, K}, y.options()).scatter_add_(1, y, at::ones_like(y));
  } else {
    p.counts = at::full({B, 1}, N, fs.options().dtype(at::kLong));
  }
  const Tensor host = p.counts.cpu();
  const int64_t Kc = p.counts.size(1);
  p.offsets.assign(B * (Kc + 1), 0);
  const int64_t* c = host.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Kc; ++j) p.offsets[b * (Kc + 1) + j + 1] = p.offsets[b * (Kc + 1) + j] + c[b * Kc + j];
  return p;
}

// ‖A_s − A_t‖² of a column block from its three matrices; reduces the last two dims, in float64.
Tensor block_norm2(const Tensor& s1, const Tensor& s2, const Tensor& s3, bool sum_diff) {
  const std::vector<int64_t> dims{-2, -1};
  if (sum_diff) {
    return (at::sum(s1 * s3, dims, false, at::kDouble) + at::sum(s2 * s2.transpose(-2, -1), dims, false, at::kDouble))
        .mul_(0.5);
  }
  return at::sum(s1.square(), dims, false, at::kDouble) - 2.0 * at::sum(s2.square(), dims, false, at::kDouble) +
         at::sum(s3.square(), dims, false, at::kDouble);
}

// Per-sample weights of the intra (a) and inter (c) pair sums: loss_b = a·intra + c·inter.
std::pair<Tensor, Tensor> pair_weights(const Tensor& counts, int64_t N, bool labeled, double w_intra,
                                       double w_inter) {
  const Tensor n2 = counts.to(at::kDouble).square().sum(1);
  if (!labeled) return {at::full_like(n2, 1.0 / (static_cast<double>(N) * N)), at::zeros_like(n2)};
  const Tensor inter = static_cast<double>(N) * N - n2;
  const auto safe_inv = [](const Tensor& n, double w) { return at::where(n > 0, w / n.clamp_min(1), 0.0); };
  return {safe_inv(n2, w_intra), safe_inv(inter, w_inter)};
}

// Runs fn(b, column_offset, column_count, class) over the non-empty class blocks.
template <typename Fn>
void for_each_block(const Prepared& p, Fn fn) {
  const int64_t B = p.counts.size(0), K = p.counts.size(1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < K; ++j) {
      const int64_t lo = p.offsets[b * (K + 1) + j], hi = p.offsets[b * (K + 1) + j + 1];
      if (hi > lo) fn(b, lo, hi - lo, j);
    }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> affinity_loss_forward(
    const AffinityKernels& k, const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
    int64_t num_classes, double intra_weight, double inter_weight, double eps, bool check_finite) {
  check_feature_pair("affinity_loss", fs, ft, "fs", "ft");
  TORCH_CHECK_VALUE(fs.size(2) == ft.size(2) && fs.size(3) == ft.size(3),
                    "affinity_loss: spatial sizes differ (fs is ", fs.size(2), "x", fs.size(3), ", ft is ",
                    ft.size(2), "x", ft.size(3), "); resize one of them first");
  TORCH_CHECK_VALUE(eps > 0, "affinity_loss: eps must be positive, got ", eps);
  const int64_t K = labels.has_value() ? num_classes : 1;
  TORCH_CHECK_VALUE(K >= 1, "affinity_loss: num_classes must be >= 1, got ", num_classes);
  if (labels.has_value()) check_labels(fs, *labels, K);

  const Prepared p = prepare(k, fs, ft, labels, K, eps);
  const int64_t B = fs.size(0), Ca = p.a.size(1), Cb = p.b.size(1), N = p.a.size(2);
  Tensor s1, s2, s3;
  if (!labels.has_value()) {
    s1 = at::bmm(p.a, p.a.transpose(1, 2)).unsqueeze(1);
    s2 = at::bmm(p.a, p.b.transpose(1, 2)).unsqueeze(1);
    s3 = at::bmm(p.b, p.b.transpose(1, 2)).unsqueeze(1);
  } else {
    s1 = at::zeros({B, K, Ca, Ca}, p.a.options());
    s2 = at::zeros({B, K, Ca, Cb}, p.a.options());
    s3 = at::zeros({B, K, Cb, Cb}, p.a.options());
    for_each_block(p, [&](int64_t b, int64_t lo, int64_t n, int64_t j) {
      const Tensor a = p.a[b].narrow(1, lo, n), bb = p.b[b].narrow(1, lo, n);
      s1[b][j].copy_(at::mm(a, a.t()));
      s2[b][j].copy_(at::mm(a, bb.t()));
      s3[b][j].copy_(at::mm(bb, bb.t()));
    });
  }
  const Tensor total = block_norm2(s1.sum(1), s2.sum(1), s3.sum(1), p.sum_diff);   // [B]
  const Tensor intra = block_norm2(s1, s2, s3, p.sum_diff).sum(1);                  // [B]
  const auto [wa, wc] = pair_weights(p.counts, N, labels.has_value(), intra_weight, inter_weight);
  const Tensor loss = (wa * intra + wc * (total - intra)).mean().to(fs.scalar_type());
  if (check_finite) check_finite_result("affinity_loss", loss, {{"fs", fs}, {"ft", ft}});
  return {loss, s1, s2, s3, p.counts};
}

std::tuple<Tensor, Tensor> affinity_loss_backward(
    const AffinityKernels& k, const Tensor& grad, const Tensor& fs, const Tensor& ft,
    const std::optional<Tensor>& labels, const Tensor& s1, const Tensor& s2, const Tensor& s3,
    const Tensor& counts, double intra_weight, double inter_weight, double eps) {
  const int64_t B = fs.size(0), K = counts.size(1);
  const Prepared p = prepare(k, fs, ft, labels, K, eps);
  const int64_t N = p.a.size(2);
  const auto [wa, wc] = pair_weights(p.counts, N, labels.has_value(), intra_weight, inter_weight);
  // loss_b = c·f(all columns) + (a − c)·Σ_k f(block k): the gradient of a column in block k is the
  // single-block formula with Q = c·Σ_k s + (a − c)·s_k, scaled by grad / B.
  const Tensor g = grad.to(p.a.scalar_type()) / static_cast<double>(B);
  const auto q = [&](const Tensor& s) {
    const Tensor c = (wc * g).to(s.scalar_type()).view({B, 1, 1, 1});
    const Tensor d = ((wa - wc) * g).to(s.scalar_type()).view({B, 1, 1, 1});
    return (c * s.sum(1, true) + d * s).contiguous();
  };
  const Tensor q1 = q(s1), q2 = q(s2), q3 = q(s3);
  // ga = X1·a + X2·b and gb = Y1·b + Y2·a, per block.
  //   sum/diff (a = P, b = E): ∂/∂P = (EEᵀ)P + MᵀE,  ∂/∂E = (PPᵀ)E + MP
  //   dual     (a = Ŝ, b = T̂): ∂/∂Ŝ = 4(ŜŜᵀ)Ŝ − 4(ŜT̂ᵀ)T̂,  ∂/∂T̂ = 4(T̂T̂ᵀ)T̂ − 4(T̂Ŝᵀ)Ŝ
  Tensor x1, x2, y1, y2;
  if (p.sum_diff) {
    x1 = q3, x2 = q2.transpose(-2, -1), y1 = q1, y2 = q2;
  } else {
    x1 = 4.0 * q1, x2 = -4.0 * q2, y1 = 4.0 * q3, y2 = -4.0 * q2.transpose(-2, -1);
  }
  Tensor ga, gb;
  if (!labels.has_value()) {
    ga = at::bmm(x1.select(1, 0), p.a).baddbmm_(x2.select(1, 0), p.b);
    gb = at::bmm(y1.select(1, 0), p.b).baddbmm_(y2.select(1, 0), p.a);
  } else {
    Tensor sa = at::zeros_like(p.a), sb = at::zeros_like(p.b);
    for_each_block(p, [&](int64_t b, int64_t lo, int64_t n, int64_t j) {
      const Tensor a = p.a[b].narrow(1, lo, n), bb = p.b[b].narrow(1, lo, n);
      sa[b].narrow(1, lo, n).copy_(at::mm(x1[b][j], a).addmm_(x2[b][j], bb));
      sb[b].narrow(1, lo, n).copy_(at::mm(y1[b][j], bb).addmm_(y2[b][j], a));
    });
    ga = at::empty_like(sa).scatter_(2, p.index.expand_as(sa), sa);
    gb = at::empty_like(sb).scatter_(2, p.index.expand_as(sb), sb);
  }
  Tensor gxs = at::empty({B, fs.size(1), N}, fs.options());
  Tensor gxt = at::empty({B, ft.size(1), N}, ft.options());
  k.normalize_backward(flat(fs), flat(ft), ga.contiguous(), gb.contiguous(), eps, p.sum_diff, gxs, gxt);
  return {gxs.view(fs.sizes()), gxt.view(ft.sizes())};
}

}  // namespace relkd
