// relation_kl_loss on the CPU (DESIGN §3.4): the N×N pixel pairs of each sample are swept in square tiles
// of kTile × kTile pairs that stay in L2; no N×N buffer exists. Since s_ij = s_ji, only tiles (I, J) with
// I ≤ J are formed: one tile updates the row statistics of rows I (row sums) and of rows J (column sums),
// and in backward the gradients of both x̂_I and x̂_J. The tile pairs are dealt to a few partitions with
// their own accumulators (O(B·N) sums; O(B·N·C) gradients, capped by kWorkspaceBytes), added up in order.
//   - inner products: float32 (float64 for float64 input) GEMMs on the tiles (MKL/OpenBLAS via at::mm);
//   - exponentials, sums and weights: float64. The KL of nearly equal rows is a difference of O(δ)
//     terms (measured, C = 16, 16×16, τ = 1: float32 exponentials with float64 sums are off by 2.4e-4
//     relative at δ = 1e-3, against the 1e-5 target; float32 GEMM tiles with float64 after stay < 1e-5).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "../relkd.h"
#include "fast_math.h"

namespace relkd {
namespace {

constexpr int64_t kTile = 256;  // two 256×256 float32 tiles (s, t) = 512 KiB: L2-sized
constexpr int64_t kLanes = 8;   // independent partial sums per row, so the row reductions vectorize
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

// s, t = Xs_I Xs_Jᵀ, Xt_I Xt_Jᵀ (unscaled inner products) into the caller's tile buffers.
struct Tiles {
  Tensor s, t;

  Tiles(const Tensor& like_s) : s(at::empty({kTile * kTile}, like_s.options())), t(at::empty_like(s)) {}

  void compute(const Tensor& xs, const Tensor& xt, Block I, Block J, Tensor& vs, Tensor& vt) {
    vs = s.narrow(0, 0, I.len * J.len).view({I.len, J.len});
    vt = t.narrow(0, 0, I.len * J.len).view({I.len, J.len});
    at::mm_out(vs, xs.narrow(0, I.lo, I.len), xs.narrow(0, J.lo, J.len).t());
    at::mm_out(vt, xt.narrow(0, I.lo, I.len), xt.narrow(0, J.lo, J.len).t());
  }
};

// Runs fn(tiles, part, b, I, J) over all block pairs I <= J of every sample in one parallel region. The
// pairs are dealt round-robin to `parts` partitions, each accumulating into its own slice `part` of the
// caller's workspace, which the caller then adds up in partition order: no atomics, no locks, and results
// that do not depend on scheduling. (One region: a barrier per round of tiles costs a scheduler time slice
// per round when the cores are shared — measured 10× slower on a loaded 2-core machine.)
template <typename Fn>
void for_tile_pairs(int64_t B, int64_t N, int64_t parts, const Tensor& like, Fn fn) {
  const int64_t nb = (N + kTile - 1) / kTile, per_sample = nb * (nb + 1) / 2;
  std::vector<std::pair<int64_t, int64_t>> pairs;
  pairs.reserve(per_sample);
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = i; j < nb; ++j) pairs.emplace_back(i, j);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    Tiles tiles(like);
    for (int64_t part = begin; part < end; ++part)
      for (int64_t task = part; task < B * per_sample; task += parts) {
        const auto [i, j] = pairs[task % per_sample];
        fn(tiles, part, task / per_sample, i, j);
      }
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

// Calls fn(kUniform) with the flag as a compile-time constant.
template <typename Fn>
void dispatch(bool is_uniform, Fn fn) {
  is_uniform ? fn(std::true_type{}) : fn(std::false_type{});
}

// Sum of a row buffer in kLanes independent partial sums (a strict-order reduction does not vectorize).
inline double lane_sum(const double* __restrict__ v, int64_t len) {
  double part[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= len; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += v[c + l];
  double total = 0.0;
  for (; c < len; ++c) total += v[c];
  for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  return total;
}

// Forward tile: adds row i's three sums over j ∈ J, and (off the diagonal) row j's sums over i ∈ I.
// Every loop below is a branch-free map over the columns, so it vectorizes.
template <typename W, bool kUniform>
void sums_tile(const W* __restrict__ s, const W* __restrict__ t, Block I, Block J, bool diagonal, double inv_tau,
               const double* __restrict__ ms, const double* __restrict__ mt, double* sum_s, double* sum_t,
               double* acc) {
  double cs[kTile] = {}, ct[kTile] = {}, ca[kTile] = {};  // column sums (rows j ∈ J)
  double es[kTile], et[kTile], ed[kTile];                 // this row's terms
  const double* __restrict__ ms_j = ms + J.lo;
  const double* __restrict__ mt_j = mt + J.lo;
  for (int64_t r = 0; r < I.len; ++r) {
    const int64_t i = I.lo + r;
    const W* __restrict__ srow = s + r * J.len;
    const W* __restrict__ trow = t + r * J.len;
    const double ms_i = ms[i], mt_i = mt[i];
    for (int64_t c = 0; c < J.len; ++c) {
      const double sv = static_cast<double>(srow[c]) * inv_tau, tv = static_cast<double>(trow[c]) * inv_tau;
      es[c] = exp_nonpositive(sv - ms_i);
      et[c] = exp_nonpositive(tv - mt_i);
      ed[c] = et[c] * (tv - sv);
    }
    sum_s[i] += lane_sum(es, J.len), sum_t[i] += lane_sum(et, J.len), acc[i] += lane_sum(ed, J.len);
    if (diagonal) continue;
    if (kUniform) {
      for (int64_t c = 0; c < J.len; ++c) cs[c] += es[c], ct[c] += et[c], ca[c] += ed[c];
    } else {
      for (int64_t c = 0; c < J.len; ++c) {
        const double sv = static_cast<double>(srow[c]) * inv_tau, tv = static_cast<double>(trow[c]) * inv_tau;
        const double e_t = exp_nonpositive(tv - mt_j[c]);
        cs[c] += exp_nonpositive(sv - ms_j[c]), ct[c] += e_t, ca[c] += e_t * (tv - sv);
      }
    }
  }
  if (diagonal) return;
  for (int64_t c = 0; c < J.len; ++c) sum_s[J.lo + c] += cs[c], sum_t[J.lo + c] += ct[c], acc[J.lo + c] += ca[c];
}

// One row of the backward weights, in place on float64 buffers (sv, tv in; G_s, G_t out). js_* point at the
// statistics of the columns' rows j.
template <bool kUniform>
void weights_row(double* __restrict__ gs, double* __restrict__ gt, int64_t len, double inv_tau, double ms_i,
                 double mt_i, double rs_i, double rt_i, double a_i, const double* __restrict__ ms_j,
                 const double* __restrict__ mt_j, const double* __restrict__ rs_j, const double* __restrict__ rt_j,
                 const double* __restrict__ a_j) {
  for (int64_t c = 0; c < len; ++c) {
    const double sv = gs[c] * inv_tau, tv = gt[c] * inv_tau;
    const double es = exp_nonpositive(sv - ms_i), et = exp_nonpositive(tv - mt_i), d = tv - sv;
    const double es_j = kUniform ? es : exp_nonpositive(sv - ms_j[c]);
    const double et_j = kUniform ? et : exp_nonpositive(tv - mt_j[c]);
    const double ps_i = es * rs_i, pt_i = et * rt_i, ps_j = es_j * rs_j[c], pt_j = et_j * rt_j[c];
    gs[c] = (ps_i - pt_i) + (ps_j - pt_j);
    gt[c] = pt_i * (d - a_i) + pt_j * (d - a_j[c]);
  }
}

// Backward tile: overwrites s, t with G_s, G_t (G_ij = W_ij + W_ji, W from the statistics of each row).
template <typename W, bool kUniform>
void weights_tile(W* __restrict__ s, W* __restrict__ t, Block I, Block J, double inv_tau, const double* terms,
                  int64_t N) {
  const double *ms = terms, *mt = terms + N, *rs = terms + 2 * N, *rt = terms + 3 * N, *a = terms + 4 * N;
  const int64_t j0 = J.lo;
  double gs[kTile], gt[kTile];
  for (int64_t r = 0; r < I.len; ++r) {
    const int64_t i = I.lo + r;
    W* __restrict__ srow = s + r * J.len;
    W* __restrict__ trow = t + r * J.len;
    for (int64_t c = 0; c < J.len; ++c) gs[c] = static_cast<double>(srow[c]), gt[c] = static_cast<double>(trow[c]);
    weights_row<kUniform>(gs, gt, J.len, inv_tau, ms[i], mt[i], rs[i], rt[i], a[i], ms + j0, mt + j0,
                                  rs + j0, rt + j0, a + j0);
    for (int64_t c = 0; c < J.len; ++c) srow[c] = static_cast<W>(gs[c]), trow[c] = static_cast<W>(gt[c]);
  }
}

template <typename W>
Tensor row_sums_impl(const Tensor& xs, const Tensor& xt, const Tensor& offsets, double inv_tau) {
  const int64_t B = xs.size(0), N = xs.size(1);
  const int64_t parts = partitions(B, N, B * 3 * N * static_cast<int64_t>(sizeof(double)));
  Tensor ws = at::zeros({parts, B, 3, N}, offsets.options());
  double* out = ws.data_ptr<double>();
  const double* m = offsets.data_ptr<double>();
  for_tile_pairs(B, N, parts, xs, [&](Tiles& tiles, int64_t part, int64_t b, int64_t bi, int64_t bj) {
    Tensor vs, vt;
    const Block I = block(bi, N), J = block(bj, N);
    tiles.compute(xs[b], xt[b], I, J, vs, vt);
    const double *ms = m + b * 2 * N, *mt = ms + N;
    double* o = out + (part * B + b) * 3 * N;
    const bool diagonal = bi == bj;
    dispatch(uniform(ms, I, J) && uniform(mt, I, J), [&](auto kUniform) {
      sums_tile<W, kUniform>(vs.data_ptr<W>(), vt.data_ptr<W>(), I, J, diagonal, inv_tau, ms, mt, o, o + N,
                                     o + 2 * N);
    });
  });
  return reduce_parts(ws);
}

template <typename W>
std::tuple<Tensor, Tensor> row_grads_impl(const Tensor& xs, const Tensor& xt, const Tensor& terms, double inv_tau) {
  const int64_t B = xs.size(0), N = xs.size(1), Cs = xs.size(2), Ct = xt.size(2);
  const int64_t parts = partitions(B, N, B * N * (Cs + Ct) * static_cast<int64_t>(sizeof(W)));
  Tensor ws_s = at::zeros({parts, B, N, Cs}, xs.options()), ws_t = at::zeros({parts, B, N, Ct}, xt.options());
  const double* m = terms.data_ptr<double>();
  for_tile_pairs(B, N, parts, xs, [&](Tiles& tiles, int64_t part, int64_t b, int64_t bi, int64_t bj) {
    Tensor vs, vt;
    const Block I = block(bi, N), J = block(bj, N);
    const Tensor xsb = xs[b], xtb = xt[b], gs = ws_s[part][b], gt = ws_t[part][b];
    tiles.compute(xsb, xtb, I, J, vs, vt);
    const double* tb = m + b * 5 * N;
    dispatch(uniform(tb, I, J) && uniform(tb + N, I, J), [&](auto kUniform) {
      weights_tile<W, kUniform>(vs.data_ptr<W>(), vt.data_ptr<W>(), I, J, inv_tau, tb, N);
    });
    // Row i gets Σ_j G_ij x̂_j; off the diagonal, row j gets Σ_i G_ij x̂_i as well.
    gs.narrow(0, I.lo, I.len).addmm_(vs, xsb.narrow(0, J.lo, J.len));
    gt.narrow(0, I.lo, I.len).addmm_(vt, xtb.narrow(0, J.lo, J.len));
    if (bi != bj) {
      gs.narrow(0, J.lo, J.len).addmm_(vs.t(), xsb.narrow(0, I.lo, I.len));
      gt.narrow(0, J.lo, J.len).addmm_(vt.t(), xtb.narrow(0, I.lo, I.len));
    }
  });
  return {reduce_parts(ws_s), reduce_parts(ws_t)};
}

Tensor row_sums_cpu(const Tensor& xs, const Tensor& xt, const Tensor& offsets, double inv_tau) {
  return xs.scalar_type() == at::kDouble ? row_sums_impl<double>(xs, xt, offsets, inv_tau)
                                         : row_sums_impl<float>(xs, xt, offsets, inv_tau);
}

std::tuple<Tensor, Tensor> row_grads_cpu(const Tensor& xs, const Tensor& xt, const Tensor& terms, double inv_tau) {
  return xs.scalar_type() == at::kDouble ? row_grads_impl<double>(xs, xt, terms, inv_tau)
                                         : row_grads_impl<float>(xs, xt, terms, inv_tau);
}

constexpr RelationKLKernels kCpuKernels{&row_sums_cpu, &row_grads_cpu};

void check_cpu(const Tensor& fs) {
  TORCH_CHECK_TYPE(fs.scalar_type() == at::kFloat || fs.scalar_type() == at::kDouble,
                   "relation_kl_loss: the CPU kernel supports float32 and float64, got ", fs.scalar_type());
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& fs, const Tensor& ft, double temperature, double eps,
                                       bool check_finite) {
  check_relation_kl_inputs(fs, ft, temperature, eps);
  check_cpu(fs);
  return relation_kl_forward(kCpuKernels, fs, ft, temperature, eps, check_finite);
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& stats,
                                        double temperature, double eps) {
  check_cpu(fs);
  return relation_kl_backward(kCpuKernels, grad, fs, ft, stats, temperature, eps);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("relation_kl_loss", &forward_cpu);
  m.impl("relation_kl_loss_backward", &backward_cpu);
}

}  // namespace relkd
