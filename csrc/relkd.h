// Shared declarations of the relkd ops: the device-generic parts (GEMM-shaped work through ATen, so
// cuBLAS/MKL do it) and the hooks each device implements (fused per-pixel kernels).
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>

namespace relkd {

using at::Tensor;

// --- Argument checks (csrc/common/checks.cpp): the one home of every rule on the values the ops accept.
// Every registered op, forward and backward, runs its op's check_*_args before any work: torch.ops.relkd.*
// is public API, and the Python functions leave the values to these checks (they only turn Python-type
// mistakes into a TypeError naming the argument, which the schema would report as a RuntimeError).

// The accepted temperature range, for every op that takes one: above it the float64 sums lose the loss
// (their rounding grows like eps·τ², docs/accuracy.md), below it the one-hot rows leave nothing to distill.
constexpr double kMinTemperature = 1e-3;
constexpr double kMaxTemperature = 1e3;
// The most classes affinity_loss accepts: its saved statistics hold B·K·(Cs + Ct)² numbers.
constexpr int64_t kMaxClasses = 4096;

// Checks shared by every op: 4-D non-empty floating tensors of one dtype on one device, equal batch size.
void check_feature_pair(const char* op, const Tensor& a, const Tensor& b, const char* name_a,
                        const char* name_b);
// The dtypes the CPU kernels support: float32 and float64.
void check_cpu_dtype(const char* op, const Tensor& t);

void check_gram_args(const Tensor& fs, const Tensor& ft);
void check_gram_backward_args(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& diff);
// Forward and backward; `labels` values (non-negative, < num_classes) are read on the host: one reduction.
void check_affinity_args(const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
                         int64_t num_classes, double intra_weight, double inter_weight, double eps);
void check_affinity_backward_args(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                  const std::optional<Tensor>& labels, const Tensor& s1, const Tensor& s2,
                                  const Tensor& s3, const Tensor& counts, double intra_weight,
                                  double inter_weight, double eps);
void check_kd_args(const Tensor& zs, const Tensor& zt, double temperature);
void check_kd_backward_args(const Tensor& grad, const Tensor& zs, const Tensor& zt, double temperature);
// cwd_loss: ys, yt of one shape [B, C, H, W]; stats the forward's float64 [B, C, 3].
void check_cwd_args(const Tensor& ys, const Tensor& yt, double temperature);
void check_cwd_backward_args(const Tensor& grad, const Tensor& ys, const Tensor& yt, const Tensor& stats,
                             double temperature);
void check_relation_kl_args(const Tensor& fs, const Tensor& ft, double temperature, double eps);
void check_relation_kl_backward_args(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& stats,
                                     double temperature, double eps);

// The dtype of affinity_loss's saved statistics s1, s2, s3: the work dtype of its sum/diff form (Cs = Ct:
// float64 for float64 input, float32 otherwise) or float64 for the dual form (Cs ≠ Ct).
at::ScalarType affinity_work_dtype(const Tensor& fs, const Tensor& ft);

// Raises ValueError naming the op and the first non-finite input when `value` is not finite.
// Costs one reduction of the (already computed) result; the inputs are only scanned on failure.
void check_finite_result(const char* op, const Tensor& value,
                         std::initializer_list<std::pair<const char*, Tensor>> inputs);

// The value of environment variable `name`: one of `choices`, the first when unset or empty; any other value
// is a ValueError naming the op and the variable. Read on every call, so a test can switch it.
std::string env_choice(const char* op, const char* name, std::initializer_list<const char*> choices);

// dtype in which reductions and GEMMs run: float64 for float64 inputs, float32 otherwise.
inline at::ScalarType acc_type(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// --- gram_loss (device generic, GEMMs only) ---------------------------------------------------
// Every backward takes output_mask = {student, teacher} (ATen's convention): a gradient not asked for is
// never computed and comes back undefined (None in Python).
// M = P Eᵀ per sample, P = Xs + Xt, E = Xs − Xt, for xs, xt [B, C, N] in the accumulation dtype: the one GEMM
// of the forward when Ns = Nt. Each device supplies it; gram_sum_diff_product is the plain ATen form.
using GramProduct = Tensor (*)(const Tensor& xs, const Tensor& xt);
Tensor gram_sum_diff_product(const Tensor& xs, const Tensor& xt);
std::tuple<Tensor, Tensor> gram_loss_forward(const Tensor& fs, const Tensor& ft, bool check_finite,
                                             GramProduct product);
std::tuple<Tensor, Tensor> gram_loss_backward(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                              const Tensor& diff, std::array<bool, 2> output_mask);

// --- affinity_loss -------------------------------------------------------------------------------
// Per-device fused pixel kernels used by the device-generic affinity core.
struct AffinityKernels {
  // xs [B,Cs,N], xt [B,Ct,N] contiguous. When Cs == Ct writes P = x̂s + x̂t, E = x̂s - x̂t (acc dtype),
  // otherwise x̂s, x̂t (float64). Norms are taken in float64, so E keeps its digits when xs ≈ xt.
  void (*normalize)(const Tensor& xs, const Tensor& xt, double eps, bool sum_diff, Tensor& out_a,
                    Tensor& out_b);
  // Chain rule of x̂ = x / max(|x|, eps) per pixel: gx = (g - x̂ (x̂·g)) / |x|, or g / eps when
  // |x| <= eps. In sum/diff mode the gradients w.r.t. x̂s, x̂t are ga + gb and ga - gb (both read for
  // either side), otherwise ga and gb. An undefined gxs or gxt is a side not asked for: its chain rule is
  // skipped, and in the dual form its incoming gradient (ga or gb) may be undefined too.
  void (*normalize_backward)(const Tensor& xs, const Tensor& xt, const Tensor& ga, const Tensor& gb,
                             double eps, bool sum_diff, Tensor& gxs, Tensor& gxt);
  // Pixels per work chunk are about chunk_elements / (Cs + Ct): the float64/float32 work buffers then
  // stay cache-sized on the CPU. A GPU takes whole samples.
  int64_t chunk_elements;
  bool parallel_samples;  // CPU: one sample per thread
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> affinity_loss_forward(
    const AffinityKernels& k, const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
    int64_t num_classes, double intra_weight, double inter_weight, double eps, bool check_finite);

std::tuple<Tensor, Tensor> affinity_loss_backward(
    const AffinityKernels& k, const Tensor& grad, const Tensor& fs, const Tensor& ft,
    const std::optional<Tensor>& labels, const Tensor& s1, const Tensor& s2, const Tensor& s3,
    const Tensor& counts, double intra_weight, double inter_weight, double eps, std::array<bool, 2> output_mask);

// --- relation_kl_loss ----------------------------------------------------------------------------
// Per sample, unit pixel vectors as rows (x̂ [N, C]) and s_ij = ⟨x̂_i, x̂_j⟩ / τ. Row i's sums use a fixed
// offset m_i = |x̂_i|·max_j |x̂_j| / τ ≥ max_j s_ij (Cauchy–Schwarz), so no running max is needed and
// partial sums of any tiles simply add. Per-device hooks sweep the N×N pairs tile by tile.
// The kernels never form t_ij − s_ij as a difference of two separately rounded inner products: when
// Cs = Ct the rows come with dl, dr such that d = dl drᵀ = X̂t X̂tᵀ − X̂s X̂sᵀ (dl = [x̂t | e],
// dr = [e | x̂s], e = x̂t − x̂s taken in float64), so d keeps its digits when the student nears the teacher;
// t_ij = s_ij + d_ij. When Cs ≠ Ct there is no such form and d = X̂t X̂tᵀ − X̂s X̂sᵀ is taken in the work
// dtype (float64 on the CPU, see RelationKLKernels::float64_when_channels_differ).
struct RelationRows {
  Tensor xs, xt;   // [B,N,Cs], [B,N,Ct] unit rows, work dtype, contiguous
  Tensor dl, dr;   // [B,N,2C] work dtype when Cs = Ct, else undefined
  Tensor offsets;  // [B,2,N] float64: m_s, m_t
};

// Which input gradients a backward forms: {fs, ft} (the op's output_mask, as in ATen's backward ops).
using GradMask = std::array<bool, 2>;

struct RelationKLKernels {
  // Returns [B,3,N] float64: Σ_j e^{s_ij − m_s,i}, Σ_j e^{t_ij − m_t,i}, Σ_j e^{t_ij − m_t,i}(t_ij − s_ij).
  Tensor (*row_sums)(const RelationRows& rows, double inv_tau);
  // terms [B,5,N] float64: m_s, m_t, r_s = e^{m_s − lse_s}, r_t = e^{m_t − lse_t}, a = lse_t − lse_s + KL.
  // Returns Σ_j G_ij x̂_j per row (work dtype) with G = W + Wᵀ; Ws_ij = p_s,ij − p_t,ij,
  // Wt_ij = p_t,ij (t_ij − s_ij − a_i) (csrc/common/relation_kl_pair.h). Only the sides in `mask` (at least
  // one) are computed; the other comes back undefined.
  std::tuple<Tensor, Tensor> (*row_grads)(const RelationRows& rows, const Tensor& terms, double inv_tau,
                                          GradMask mask);
  // Cs ≠ Ct with float32 (or narrower) input: take the inner products in float64 (accurate gradients as the
  // student nears the teacher; CPU) or in float32 (GPU throughput).
  bool float64_when_channels_differ;
  // Optional fused per-pixel passes, else the ATen composites of csrc/common/relation_kl.cpp: the rows of
  // NCHW features (rows in `work` dtype, dl/dr when Cs = Ct), and the chain rule of x̂ = x / max(|x|, eps)
  // taking g_rows [B,N,C]·scale back to f's NCHW shape and dtype.
  RelationRows (*rows)(const Tensor& fs, const Tensor& ft, double eps, double inv_tau, at::ScalarType work) = nullptr;
  Tensor (*rows_backward)(const Tensor& f, const Tensor& g_rows, const Tensor& scale, double eps) = nullptr;
  // Optional: row_sums and row_grads in one sweep, each pair formed once, where a device can hold all of a
  // sample's pairs at a time (the CPU: every tile of one sample per thread, for small N). Sets the row sums
  // and the sides in `mask` (at least one) and returns true, or returns false without work where it would
  // not gain (then row_sums and row_grads run).
  bool (*sums_and_grads)(const RelationRows& rows, double inv_tau, GradMask mask, Tensor& sums, Tensor& gs,
                         Tensor& gt) = nullptr;
};

// The backward terms of row_grads (m_s, m_t, r_s = 1/Σ e_s, r_t = 1/Σ e_t, a = Σ p_t (t − s)) from row sums
// [B,3,N] and offsets [B,2,N]: the same terms the backward op derives from the saved statistics.
Tensor relation_kl_terms(const Tensor& sums, const Tensor& offsets);

// The CPU's fused per-pixel passes (csrc/cpu/relation_kl_rows.cpp).
RelationRows relation_rows_cpu(const Tensor& fs, const Tensor& ft, double eps, double inv_tau, at::ScalarType work);
Tensor relation_rows_backward_cpu(const Tensor& f, const Tensor& g_rows, const Tensor& scale, double eps);

// Returns loss, stats [B,3,N] (lse_s, lse_t, KL) and the gradients w.r.t. fs, ft that grad_mask asks for, per
// unit upstream gradient (an empty [0] tensor for a side not asked for).
std::tuple<Tensor, Tensor, Tensor, Tensor> relation_kl_forward(const RelationKLKernels& k, const Tensor& fs,
                                                               const Tensor& ft, double temperature, double eps,
                                                               bool check_finite, GradMask grad_mask);
// output_mask: which of the gradients w.r.t. fs, ft to compute; one not asked for is returned undefined
// (None in Python) and none of its work is done.
std::tuple<Tensor, Tensor> relation_kl_backward(const RelationKLKernels& k, const Tensor& grad, const Tensor& fs,
                                                const Tensor& ft, const Tensor& stats, double temperature,
                                                double eps, GradMask output_mask);

}  // namespace relkd
