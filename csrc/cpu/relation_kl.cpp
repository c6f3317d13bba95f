// relation_kl_loss on the CPU (DESIGN §3.4): the N×N pixel pairs of each sample are swept in square tiles
// of kTile × kTile pairs that stay in L2; no N×N buffer exists. Since s_ij = s_ji, only tiles (I, J) with
// I ≤ J are formed: one tile updates the row statistics of rows I (row sums) and of rows J (column sums),
// and in backward the gradients of both x̂_I and x̂_J. The tile pairs are dealt to a few partitions with
// their own accumulators (O(B·N) sums; O(B·N·C) gradients, capped by kWorkspaceBytes), added up in order.
//   - inner products: GEMMs on the tiles (MKL/OpenBLAS via at::mm): s = X̂s_I X̂s_Jᵀ and, when Cs = Ct,
//     d = t − s = dl_I dr_Jᵀ (relkd.h) in float32 for float32 input; when Cs ≠ Ct, s and t in float64
//     (float32 s and t tiles miss the 1e-4 gradient target near the teacher: docs/accuracy.md);
//   - exponentials, sums and weights: float64 (relation_kl_kernels.h, built for the baseline ISA and for
//     AVX2+FMA): the KL of nearly equal rows is a difference of O(δ) terms (docs/accuracy.md).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../relkd.h"
#include "isa.h"
#include "relation_kl_tile.h"

#define RELKD_ISA baseline
#include "relation_kl_kernels.h"
#undef RELKD_ISA

namespace relkd {
namespace rkl_cpu {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx2 {
#include "relation_kl_entry.h"
}  // namespace avx2
namespace avx512 {
#include "relation_kl_entry.h"
}  // namespace avx512
#endif

namespace {

template <typename W>
void sums(CpuIsa isa, const W* s, const W* d, const TileSpan& span, const double* ms, const double* mt, double* out,
          int64_t N) {
  RELKD_ISA_CALL(isa, sums, s, d, span, ms, mt, out, out + N, out + 2 * N);
}

template <typename W>
void weights(CpuIsa isa, W* s, W* d, const TileSpan& span, const double* terms, int64_t N, GradMask mask) {
  RELKD_ISA_CALL(isa, weights, s, d, span, terms, N, mask[0], mask[1]);
}

constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;  // per-partition accumulators, all together

struct Block {
  int64_t lo, len;
};

Block block(int64_t index, int64_t N) { return {index * kTile, std::min(kTile, N - index * kTile)}; }

// Whether all offsets of the rows of I and J are equal: then one exponential serves row i and row j.
bool uniform(const double* m, Block I, Block J) {
  const double v = m[I.lo];
  for (int64_t r = 0; r < I.len; ++r)
    if (m[I.lo + r] != v) return false;
  for (int64_t r = 0; r < J.len; ++r)
    if (m[J.lo + r] != v) return false;
  return true;
}

// s = X̂s_I X̂s_Jᵀ and d = X̂t_I X̂t_Jᵀ − s (unscaled) into the caller's tile buffers (relkd.h: RelationRows).
struct Tiles {
  Tensor s, d;

  explicit Tiles(const Tensor& like) : s(at::empty({kTile * kTile}, like.options())), d(at::empty_like(s)) {}

  void compute(const RelationRows& rows, int64_t b, Block I, Block J, Tensor& vs, Tensor& vd) {
    vs = s.narrow(0, 0, I.len * J.len).view({I.len, J.len});
    vd = d.narrow(0, 0, I.len * J.len).view({I.len, J.len});
    const Tensor xs = rows.xs[b];
    at::mm_out(vs, xs.narrow(0, I.lo, I.len), xs.narrow(0, J.lo, J.len).t());
    if (rows.dl.defined()) {
      at::mm_out(vd, rows.dl[b].narrow(0, I.lo, I.len), rows.dr[b].narrow(0, J.lo, J.len).t());
    } else {
      const Tensor xt = rows.xt[b];
      at::mm_out(vd, xt.narrow(0, I.lo, I.len), xt.narrow(0, J.lo, J.len).t());
      vd.sub_(vs);
    }
  }
};

// The block pairs I <= J of one sample: the tiles a sweep forms (s_ij = s_ji, so none below the diagonal).
std::vector<std::pair<Block, Block>> block_pairs(int64_t N) {
  const int64_t nb = (N + kTile - 1) / kTile;
  std::vector<std::pair<Block, Block>> pairs;
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = i; j < nb; ++j) pairs.emplace_back(block(i, N), block(j, N));
  return pairs;
}

struct TilePair {
  int64_t b;
  Block I, J;
};

// All block pairs I <= J of every sample, dealt to `parts` partitions: largest tile first, each to the
// partition with the least work so far (ties to the lower index). The deal depends only on (B, N, parts), so
// every partition sums its tiles in a fixed order, and the partitions' pair counts stay close also when the
// last block is partial (tiles of unequal size).
std::vector<std::vector<TilePair>> deal_tile_pairs(int64_t B, int64_t N, int64_t parts) {
  const std::vector<std::pair<Block, Block>> pairs = block_pairs(N);
  std::vector<TilePair> all;
  all.reserve(B * pairs.size());
  for (int64_t b = 0; b < B; ++b)
    for (const auto& [I, J] : pairs) all.push_back({b, I, J});
  const auto pairs_in = [](const TilePair& t) { return t.I.len * t.J.len; };
  std::stable_sort(all.begin(), all.end(),
                   [&](const TilePair& x, const TilePair& y) { return pairs_in(x) > pairs_in(y); });
  std::vector<std::vector<TilePair>> dealt(parts);
  std::vector<int64_t> load(parts, 0);
  for (const TilePair& t : all) {
    const int64_t p = std::min_element(load.begin(), load.end()) - load.begin();
    dealt[p].push_back(t);
    load[p] += pairs_in(t);
  }
  return dealt;
}

// Runs fn(tiles, part, b, I, J) over all block pairs I <= J of every sample in one parallel region, each
// partition accumulating into its own slice `part` of the caller's workspace, which the caller then adds up
// in partition order: no atomics, no locks, and results that do not depend on scheduling. One parallel
// region, not one per round of tiles: a barrier per round costs a scheduler time slice per round when the
// cores are shared.
template <typename Fn>
void for_tile_pairs(int64_t B, int64_t N, int64_t parts, const Tensor& like, Fn fn) {
  const std::vector<std::vector<TilePair>> dealt = deal_tile_pairs(B, N, parts);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    Tiles tiles(like);
    for (int64_t part = begin; part < end; ++part)
      for (const TilePair& t : dealt[part]) fn(tiles, part, t.b, t.I, t.J);
  });
}

// Partitions for a workspace of `bytes` per partition: one per thread, within kWorkspaceBytes in all.
int64_t partitions(int64_t B, int64_t N, int64_t bytes) {
  const int64_t nb = (N + kTile - 1) / kTile;
  const int64_t by_memory = std::max<int64_t>(1, kWorkspaceBytes / std::max<int64_t>(bytes, 1));
  return std::max<int64_t>(1, std::min({static_cast<int64_t>(at::get_num_threads()), B * nb * (nb + 1) / 2, by_memory}));
}

// Σ over the leading (partition) dimension, in order.
Tensor reduce_parts(const Tensor& ws) {
  Tensor total = ws[0].clone();
  for (int64_t p = 1; p < ws.size(0); ++p) total.add_(ws[p]);
  return total;
}

// The tile (I, J) for the kernels, with the rows' offsets m_s, m_t.
TileSpan span_of(Block I, Block J, const double* ms, const double* mt, double inv_tau) {
  return {I.lo, I.len, J.lo, J.len, I.lo == J.lo, uniform(ms, I, J) && uniform(mt, I, J), inv_tau};
}

template <typename W>
Tensor row_sums_impl(const RelationRows& rows, double inv_tau) {
  const int64_t B = rows.xs.size(0), N = rows.xs.size(1);
  const int64_t parts = partitions(B, N, B * 3 * N * static_cast<int64_t>(sizeof(double)));
  const CpuIsa isa = cpu_isa("relation_kl_loss");
  Tensor ws = at::zeros({parts, B, 3, N}, rows.offsets.options());
  double* out = ws.data_ptr<double>();
  const double* m = rows.offsets.data_ptr<double>();
  for_tile_pairs(B, N, parts, rows.xs, [&](Tiles& tiles, int64_t part, int64_t b, Block I, Block J) {
    Tensor vs, vd;
    tiles.compute(rows, b, I, J, vs, vd);
    const double *ms = m + b * 2 * N, *mt = ms + N;
    sums<W>(isa, vs.data_ptr<W>(), vd.data_ptr<W>(), span_of(I, J, ms, mt, inv_tau), ms, mt,
            out + (part * B + b) * 3 * N, N);
  });
  return reduce_parts(ws);
}

// The gradient workspace [parts, B, N, C] of one side, or an undefined tensor when that side is masked out.
Tensor side_workspace(bool wanted, int64_t parts, const Tensor& x) {
  return wanted ? at::zeros({parts, x.size(0), x.size(1), x.size(2)}, x.options()) : Tensor();
}

// Row i += Σ_j G_ij x̂_j over the tile; off the diagonal, row j += Σ_i G_ij x̂_i as well.
void add_tile_grads(const Tensor& g, const Tensor& G, const Tensor& x, Block I, Block J) {
  g.narrow(0, I.lo, I.len).addmm_(G, x.narrow(0, J.lo, J.len));
  if (I.lo != J.lo) g.narrow(0, J.lo, J.len).addmm_(G.t(), x.narrow(0, I.lo, I.len));
}

// Only the sides in `mask` (at least one) are formed: the other's weights, GEMMs and workspace are skipped.
template <typename W>
std::tuple<Tensor, Tensor> row_grads_impl(const RelationRows& rows, const Tensor& terms, double inv_tau,
                                          GradMask mask) {
  const Tensor &xs = rows.xs, &xt = rows.xt;
  const int64_t B = xs.size(0), N = xs.size(1), Cs = xs.size(2), Ct = xt.size(2);
  const int64_t channels = (mask[0] ? Cs : 0) + (mask[1] ? Ct : 0);
  const CpuIsa isa = cpu_isa("relation_kl_loss_backward");
  const int64_t parts = partitions(B, N, B * N * channels * static_cast<int64_t>(sizeof(W)));
  Tensor ws_s = side_workspace(mask[0], parts, xs), ws_t = side_workspace(mask[1], parts, xt);
  const double* m = terms.data_ptr<double>();
  for_tile_pairs(B, N, parts, xs, [&](Tiles& tiles, int64_t part, int64_t b, Block I, Block J) {
    Tensor vs, vd;
    tiles.compute(rows, b, I, J, vs, vd);
    const double* tb = m + b * 5 * N;  // the terms' first two rows are the offsets m_s, m_t
    weights<W>(isa, vs.data_ptr<W>(), vd.data_ptr<W>(), span_of(I, J, tb, tb + N, inv_tau), tb, N, mask);
    if (mask[0]) add_tile_grads(ws_s[part][b], vs, xs[b], I, J);
    if (mask[1]) add_tile_grads(ws_t[part][b], vd, xt[b], I, J);
  });
  return {mask[0] ? reduce_parts(ws_s) : Tensor(), mask[1] ? reduce_parts(ws_t) : Tensor()};
}

// Tiles of one sample kept at a time by sums_and_grads, per thread: up to 4 blocks (N ≤ 1024, 10 tile pairs,
// 10 MiB of float64 tiles).
constexpr int64_t kOneSweepBlocks = 4;

// Every tile pair of one sample, formed once: the sample's row sums, then its terms, then the weights and
// gradient GEMMs on the same tiles (row_sums and row_grads in one sweep, no tile recomputed). One task per
// sample, so each sample's sums and gradients are accumulated by one thread in a fixed order.
template <typename W>
void sums_and_grads_impl(const RelationRows& rows, double inv_tau, GradMask mask, Tensor& totals, Tensor& gs,
                         Tensor& gt) {
  const Tensor &xs = rows.xs, &xt = rows.xt;
  const int64_t B = xs.size(0), N = xs.size(1);
  const CpuIsa isa = cpu_isa("relation_kl_loss");
  totals = at::zeros({B, 3, N}, rows.offsets.options());
  gs = mask[0] ? at::zeros_like(xs) : Tensor();
  gt = mask[1] ? at::zeros_like(xt) : Tensor();
  const std::vector<std::pair<Block, Block>> pairs = block_pairs(N);
  const double* m = rows.offsets.data_ptr<double>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tiles> tiles;
    std::vector<Tensor> vs(pairs.size()), vd(pairs.size());
    std::vector<TileSpan> spans(pairs.size());
    for (size_t p = 0; p < pairs.size(); ++p) tiles.emplace_back(xs);
    for (int64_t b = begin; b < end; ++b) {
      const double *ms = m + b * 2 * N, *mt = ms + N;
      double* out = totals.data_ptr<double>() + b * 3 * N;
      for (size_t p = 0; p < pairs.size(); ++p) {
        const auto [I, J] = pairs[p];
        tiles[p].compute(rows, b, I, J, vs[p], vd[p]);
        spans[p] = span_of(I, J, ms, mt, inv_tau);
        sums<W>(isa, vs[p].data_ptr<W>(), vd[p].data_ptr<W>(), spans[p], ms, mt, out, N);
      }
      // the terms' first two rows are the offsets ms, mt: the spans above hold for the weights too
      const Tensor terms = relation_kl_terms(totals.narrow(0, b, 1), rows.offsets.narrow(0, b, 1)).contiguous();
      for (size_t p = 0; p < pairs.size(); ++p) {
        const auto [I, J] = pairs[p];
        weights<W>(isa, vs[p].data_ptr<W>(), vd[p].data_ptr<W>(), spans[p], terms.data_ptr<double>(), N, mask);
        if (mask[0]) add_tile_grads(gs[b], vs[p], xs[b], I, J);
        if (mask[1]) add_tile_grads(gt[b], vd[p], xt[b], I, J);
      }
    }
  });
}

// One sweep where a sample's tiles fit (kOneSweepBlocks) and the samples keep every thread busy (one sample
// per task; N ≤ kTile is a single tile pair either way).
bool sums_and_grads_cpu(const RelationRows& rows, double inv_tau, GradMask mask, Tensor& sums, Tensor& gs,
                        Tensor& gt) {
  const int64_t B = rows.xs.size(0), N = rows.xs.size(1);
  if (N > kOneSweepBlocks * kTile || (N > kTile && B < at::get_num_threads())) return false;
  if (rows.xs.scalar_type() == at::kDouble)
    sums_and_grads_impl<double>(rows, inv_tau, mask, sums, gs, gt);
  else
    sums_and_grads_impl<float>(rows, inv_tau, mask, sums, gs, gt);
  return true;
}

Tensor row_sums_cpu(const RelationRows& rows, double inv_tau) {
  return rows.xs.scalar_type() == at::kDouble ? row_sums_impl<double>(rows, inv_tau)
                                              : row_sums_impl<float>(rows, inv_tau);
}

std::tuple<Tensor, Tensor> row_grads_cpu(const RelationRows& rows, const Tensor& terms, double inv_tau,
                                         GradMask mask) {
  return rows.xs.scalar_type() == at::kDouble ? row_grads_impl<double>(rows, terms, inv_tau, mask)
                                              : row_grads_impl<float>(rows, terms, inv_tau, mask);
}

constexpr RelationKLKernels kCpuKernels{&row_sums_cpu,        &row_grads_cpu,
                                        /*float64_when_channels_differ=*/true,
                                        &relation_rows_cpu,   &relation_rows_backward_cpu,
                                        &sums_and_grads_cpu};
// The same with the ATen composites of csrc/common for the per-pixel passes (the ones the CUDA path uses), so
// the CPU tests cover them too.
constexpr RelationKLKernels kCpuKernelsAten{&row_sums_cpu, &row_grads_cpu, /*float64_when_channels_differ=*/true,
                                            nullptr,       nullptr,        &sums_and_grads_cpu};

const RelationKLKernels& cpu_kernels() {
  const bool aten = env_choice("relation_kl_loss", "RELKD_RELATION_KL_ROWS", {"fused", "aten"}) == "aten";
  return aten ? kCpuKernelsAten : kCpuKernels;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_cpu(const Tensor& fs, const Tensor& ft, double temperature,
                                                       double eps, bool check_finite, GradMask grad_mask) {
  check_relation_kl_args(fs, ft, temperature, eps);
  check_cpu_dtype("relation_kl_loss", fs);
  return relation_kl_forward(cpu_kernels(), fs, ft, temperature, eps, check_finite, grad_mask);
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& stats,
                                        double temperature, double eps, GradMask output_mask) {
  check_relation_kl_backward_args(grad, fs, ft, stats, temperature, eps);
  check_cpu_dtype("relation_kl_loss_backward", fs);
  return relation_kl_backward(cpu_kernels(), grad, fs, ft, stats, temperature, eps, output_mask);
}

}  // namespace
}  // namespace rkl_cpu

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("relation_kl_loss", &rkl_cpu::forward_cpu);
  m.impl("relation_kl_loss_backward", &rkl_cpu::backward_cpu);
}

}  // namespace relkd
