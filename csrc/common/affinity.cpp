// affinity_loss (DESIGN §3.2) without any N×N matrix. Per sample, with unit pixel vectors as columns
// (Ŝ: Cs×N, T̂: Ct×N) and A = X̂ᵀX̂:
//   ‖A_s − A_t‖²_F = ‖ŜŜᵀ‖² − 2‖ŜT̂ᵀ‖² + ‖T̂T̂ᵀ‖²                        ("dual" form, any Cs, Ct)
//                  = ½(⟨PPᵀ, EEᵀ⟩ + ⟨M, Mᵀ⟩), P = Ŝ + T̂, E = Ŝ − T̂, M = PEᵀ   ("sum/diff" form, Cs = Ct)
// The dual form cancels catastrophically when Ŝ ≈ T̂, so it runs in float64; the sum/diff form has no
// cancellation and runs in the input's accumulation dtype, with P and E formed from float64 unit vectors.
// Both forms keep three matrices per (sample, class): s1 = a aᵀ, s2 = a bᵀ, s3 = b bᵀ, where (a, b) are
// (P, E) or (Ŝ, T̂). Class-aware pairs: the pixels of each class are visited as one column block (in
// chunks), whose intra-class sum is the same formula on the block; inter = total − intra.
// Work buffers exist per chunk of pixels only, so the extra memory is O(K·C² + chunk·C) beyond the inputs
// and the gradients.
#include "../relkd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace relkd {
namespace {

Tensor flat(const Tensor& f) { return f.reshape({f.size(0), f.size(1), f.size(2) * f.size(3)}); }

// Which pixels form each (sample, class) block, and how to fetch a chunk of them.
class Blocks {
 public:
  Blocks(const AffinityKernels& k, const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
         int64_t K, double eps)
      : k_(k), xs_(flat(fs)), xt_(flat(ft)), eps_(eps), sum_diff_(fs.size(1) == ft.size(1)) {
    const int64_t B = fs.size(0), N = xs_.size(2);
    if (labels.has_value()) {
      const Tensor y = labels->reshape({B, N});
      order_ = std::get<1>(y.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
      counts_ = at::zeros({B, K}, y.options()).scatter_add_(1, y, at::ones_like(y));
    } else {
      counts_ = at::full({B, 1}, N, fs.options().dtype(at::kLong));
    }
    const Tensor host = counts_.cpu();
    const int64_t Kc = counts_.size(1);
    offsets_.assign(B * (Kc + 1), 0);
    const int64_t* c = host.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < Kc; ++j) offsets_[b * (Kc + 1) + j + 1] = offsets_[b * (Kc + 1) + j] + c[b * Kc + j];
    chunk_ = std::max<int64_t>(256, k.chunk_elements / (fs.size(1) + ft.size(1)));
    work_dtype_ = affinity_work_dtype(fs, ft);
  }

  bool sum_diff() const { return sum_diff_; }
  const Tensor& counts() const { return counts_; }
  at::ScalarType work_dtype() const { return work_dtype_; }

  // Runs fn(b, class, chunk) over chunks of every non-empty (sample, class) block; chunk.a, chunk.b are
  // the work columns [Ca, n], [Cb, n]; chunk.xs, chunk.xt the raw input columns [1, C, n].
  struct Chunk {
    Tensor xs, xt, a, b, index;  // index: pixel positions [n] (undefined: the range [start, start + n))
    int64_t start, n;
  };
  // Samples run in parallel when the device asks for it (CPU: one sample per thread, everything inside
  // single-threaded, which beats handing many small GEMMs and pixel loops between threads); fn must only
  // touch sample b's outputs.
  template <typename Fn>
  void for_each_chunk(Fn fn) const {
    const int64_t B = counts_.size(0);
    if (k_.parallel_samples) {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) sample_chunks(b, fn);
      });
    } else {
      for (int64_t b = 0; b < B; ++b) sample_chunks(b, fn);
    }
  }

  template <typename Fn>
  void sample_chunks(int64_t b, Fn& fn) const {
    const int64_t K = counts_.size(1);
    for (int64_t j = 0; j < K; ++j)
        for (int64_t lo = offsets_[b * (K + 1) + j], hi = offsets_[b * (K + 1) + j + 1]; lo < hi; lo += chunk_) {
          Chunk c{{}, {}, {}, {}, {}, lo, std::min(chunk_, hi - lo)};
          if (order_.defined()) {
            c.index = order_[b].narrow(0, lo, c.n);
            c.xs = xs_[b].index_select(1, c.index).unsqueeze(0);
            c.xt = xt_[b].index_select(1, c.index).unsqueeze(0);
          } else {
            c.xs = xs_[b].narrow(1, lo, c.n).contiguous().unsqueeze(0);
            c.xt = xt_[b].narrow(1, lo, c.n).contiguous().unsqueeze(0);
          }
          Tensor a = at::empty({1, xs_.size(1), c.n}, xs_.options().dtype(work_dtype_));
          Tensor o = at::empty({1, xt_.size(1), c.n}, xs_.options().dtype(work_dtype_));
          k_.normalize(c.xs, c.xt, eps_, sum_diff_, a, o);
          c.a = a[0], c.b = o[0];
          fn(b, j, c);
        }
  }

  // Writes a chunk's gradient columns [C, n] into g [B, C, N] at the chunk's pixels.
  static void scatter(Tensor& g, int64_t b, const Chunk& c, const Tensor& values) {
    if (c.index.defined()) {
      g[b].index_copy_(1, c.index, values);
    } else {
      g[b].narrow(1, c.start, c.n).copy_(values);
    }
  }

 private:
  const AffinityKernels& k_;
  Tensor xs_, xt_, order_, counts_;
  std::vector<int64_t> offsets_;
  double eps_;
  bool sum_diff_;
  int64_t chunk_ = 0;
  at::ScalarType work_dtype_;
};

// ‖A_s − A_t‖² of a column block from its three matrices; reduces the last two dims, in float64.
Tensor block_norm2(const Tensor& s1, const Tensor& s2, const Tensor& s3, bool sum_diff) {
  const std::vector<int64_t> dims{-2, -1};
  const auto sum = [&](const Tensor& t) { return at::sum(t, dims, false, at::kDouble); };
  if (sum_diff) return (sum(s1 * s3) + sum(s2 * s2.transpose(-2, -1))).mul_(0.5);
  return sum(s1.square()) - 2.0 * sum(s2.square()) + sum(s3.square());
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

// A map whose pixel vectors are all exactly zero has X̂ = 0, and every term of ∂loss/∂X̂ of that map carries
// X̂ (dual form: 4(X̂X̂ᵀ)X̂ − 4(X̂Ŷᵀ)Ŷ, per class block too), so the definition's gradient is exactly 0 there.
// The sum/diff form reaches that 0 only up to rounding, which the chain rule's 1/eps turns into values like
// −931; such samples get their exact 0. (Maps with some nonzero pixel keep the formula: their zero pixels'
// gradients are the definition's g/eps.)
Tensor zero_for_zero_maps(const Tensor& f, const Tensor& g) {
  const int64_t B = f.size(0);
  const Tensor nonzero = f.reshape({B, -1}).ne(0).any(1).view({B, 1, 1});
  return at::where(nonzero, g, at::zeros({}, g.options()));
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> affinity_loss_forward(
    const AffinityKernels& k, const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
    int64_t num_classes, double intra_weight, double inter_weight, double eps, bool check_finite) {
  const int64_t K = labels.has_value() ? num_classes : 1;

  const Blocks blocks(k, fs, ft, labels, K, eps);
  const int64_t B = fs.size(0), Ca = fs.size(1), Cb = ft.size(1), N = fs.size(2) * fs.size(3);
  const auto opts = fs.options().dtype(blocks.work_dtype());
  Tensor s1 = at::zeros({B, K, Ca, Ca}, opts), s2 = at::zeros({B, K, Ca, Cb}, opts);
  Tensor s3 = at::zeros({B, K, Cb, Cb}, opts);
  blocks.for_each_chunk([&](int64_t b, int64_t j, const Blocks::Chunk& c) {
    s1[b][j].addmm_(c.a, c.a.t());
    s2[b][j].addmm_(c.a, c.b.t());
    s3[b][j].addmm_(c.b, c.b.t());
  });
  const bool sd = blocks.sum_diff();
  const Tensor total = block_norm2(s1.sum(1), s2.sum(1), s3.sum(1), sd);  // [B]
  const Tensor intra = block_norm2(s1, s2, s3, sd).sum(1);                 // [B]
  const auto [wa, wc] = pair_weights(blocks.counts(), N, labels.has_value(), intra_weight, inter_weight);
  // Both pair sums are sums of squares; the Gram identities can leave them a rounding below 0 (−1e-8 on
  // one-pixel maps), so each is clamped at 0. The backward is the unclamped formula's.
  const Tensor inter = (total - intra).clamp_min(0.0);
  const Tensor loss = (wa * intra.clamp_min(0.0) + wc * inter).mean().to(fs.scalar_type());
  if (check_finite) check_finite_result("affinity_loss", loss, {{"fs", fs}, {"ft", ft}});
  return {loss, s1, s2, s3, blocks.counts()};
}

std::tuple<Tensor, Tensor> affinity_loss_backward(
    const AffinityKernels& k, const Tensor& grad, const Tensor& fs, const Tensor& ft,
    const std::optional<Tensor>& labels, const Tensor& s1, const Tensor& s2, const Tensor& s3,
    const Tensor& counts, double intra_weight, double inter_weight, double eps, std::array<bool, 2> output_mask) {
  const auto [want_s, want_t] = output_mask;
  if (!want_s && !want_t) return {Tensor(), Tensor()};
  const int64_t B = fs.size(0), K = counts.size(1), N = fs.size(2) * fs.size(3);
  const Blocks blocks(k, fs, ft, labels, K, eps);
  const bool sd = blocks.sum_diff();
  // Which incoming gradients the asked-for sides need: in the sum/diff form ∂/∂x̂s = ga + gb and
  // ∂/∂x̂t = ga − gb, so either side needs both; in the dual form ga feeds only the student, gb only the
  // teacher, and the statistics and GEMMs of the other are never formed.
  const bool need_ga = sd || want_s, need_gb = sd || want_t;
  const auto [wa, wc] = pair_weights(blocks.counts(), N, labels.has_value(), intra_weight, inter_weight);
  // loss_b = c·f(all columns) + (a − c)·Σ_k f(block k): the gradient of a column in block k is the
  // single-block formula with Q = c·Σ_k s + (a − c)·s_k, scaled by grad / B.
  const Tensor g = grad.to(s1.scalar_type()) / static_cast<double>(B);
  const auto q = [&](const Tensor& s) {
    const Tensor c = (wc * g).to(s.scalar_type()).view({B, 1, 1, 1});
    const Tensor d = ((wa - wc) * g).to(s.scalar_type()).view({B, 1, 1, 1});
    return (c * s.sum(1, true) + d * s).contiguous();
  };
  // ga = X1·a + X2·b and gb = Y1·b + Y2·a, per block:
  //   sum/diff (a = P, b = E): ∂/∂P = (EEᵀ)P + MᵀE,  ∂/∂E = (PPᵀ)E + MP
  //   dual     (a = Ŝ, b = T̂): ∂/∂Ŝ = 4(ŜŜᵀ)Ŝ − 4(ŜT̂ᵀ)T̂,  ∂/∂T̂ = 4(T̂T̂ᵀ)T̂ − 4(T̂Ŝᵀ)Ŝ
  const Tensor q2 = q(s2);
  Tensor x1, x2, y1, y2;
  if (sd) {
    x1 = q(s3), x2 = q2.transpose(-2, -1).contiguous(), y1 = q(s1), y2 = q2;
  } else {
    if (need_ga) x1 = 4.0 * q(s1), x2 = -4.0 * q2;
    if (need_gb) y1 = 4.0 * q(s3), y2 = (-4.0 * q2).transpose(-2, -1).contiguous();
  }
  Tensor gxs = want_s ? at::empty({B, fs.size(1), N}, fs.options()) : Tensor();
  Tensor gxt = want_t ? at::empty({B, ft.size(1), N}, ft.options()) : Tensor();
  blocks.for_each_chunk([&](int64_t b, int64_t j, const Blocks::Chunk& c) {
    const Tensor ga = need_ga ? at::mm(x1[b][j], c.a).addmm_(x2[b][j], c.b).unsqueeze(0) : Tensor();
    const Tensor gb = need_gb ? at::mm(y1[b][j], c.b).addmm_(y2[b][j], c.a).unsqueeze(0) : Tensor();
    Tensor os = want_s ? at::empty_like(c.xs) : Tensor(), ot = want_t ? at::empty_like(c.xt) : Tensor();
    k.normalize_backward(c.xs, c.xt, ga, gb, eps, sd, os, ot);
    if (want_s) Blocks::scatter(gxs, b, c, os[0]);
    if (want_t) Blocks::scatter(gxt, b, c, ot[0]);
  });
  return {want_s ? zero_for_zero_maps(fs, gxs).view(fs.sizes()) : Tensor(),
          want_t ? zero_for_zero_maps(ft, gxt).view(ft.sizes()) : Tensor()};
}

}  // namespace relkd
