// cwd_loss on the CPU (channel-wise distillation, Shu et al. ICCV 2021; relkd_bench/ops/cwd.py). Each
// (sample, channel) row of N pixels is a softmax over its pixels. Rows are few and long (B·C = 16 rows of
// 147,456 pixels at B=8, C=2, 384×384), so the work is split within rows: chunks of kCwdChunk pixels, each
// reduced to a CwdPart by the kernels of cwd_kernels.h (one read of ys and yt), then combined per row in chunk
// order (deterministic, whatever the thread count). The forward keeps [B, C, 3] float64 stats (lse_s, lse_t,
// KL per row) so the backward is one elementwise pass with no re-reduction.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "../relkd.h"
#include "isa.h"

#define RELKD_ISA baseline
#include "cwd_kernels.h"
#undef RELKD_ISA

namespace relkd {
namespace cwd_cpu {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx2 {
#include "cwd_entry.h"
}  // namespace avx2
namespace avx512 {
#include "cwd_entry.h"
}  // namespace avx512
#endif

namespace {

// Pixels per chunk: 2 × 32 KiB of float32 input, cache-resident between the max and the sum sweeps.
constexpr int64_t kCwdChunk = 8192;

CwdPart chunk_part(CpuIsa isa, const float* ys, const float* yt, int64_t len, double inv_t) {
  return RELKD_ISA_CALL(isa, forward_f32, ys, yt, len, inv_t);
}

CwdPart chunk_part(CpuIsa isa, const double* ys, const double* yt, int64_t len, double inv_t) {
  return RELKD_ISA_CALL(isa, forward_f64, ys, yt, len, inv_t);
}

void chunk_backward(CpuIsa isa, const float* ys, const float* yt, int64_t len, double inv_t, const double* stats,
                    double scale, float* gs, float* gt) {
  RELKD_ISA_CALL(isa, backward_f32, ys, yt, len, inv_t, stats, scale, gs, gt);
}

void chunk_backward(CpuIsa isa, const double* ys, const double* yt, int64_t len, double inv_t, const double* stats,
                    double scale, double* gs, double* gt) {
  RELKD_ISA_CALL(isa, backward_f64, ys, yt, len, inv_t, stats, scale, gs, gt);
}

// p and q as one partial: both rescaled to the larger maxima. The cross sum's offset moves with both maxima:
// a' = Σ e^{(yt−Mt)/τ} ((yt − ys) − (Mt − Ms))/τ = e^{(mt−Mt)/τ} (a + st ((mt − ms) − (Mt − Ms))/τ).
CwdPart merge(const CwdPart& p, const CwdPart& q, double inv_t) {
  const double Ms = baseline::nan_max(p.ms, q.ms), Mt = baseline::nan_max(p.mt, q.mt);
  const auto side = [&](const CwdPart& x, CwdPart& out) {
    const double fs = std::exp((x.ms - Ms) * inv_t), ft = std::exp((x.mt - Mt) * inv_t);
    out.ss += x.ss * fs;
    out.st += x.st * ft;
    out.a += ft * (x.a + x.st * (((x.mt - x.ms) - (Mt - Ms)) * inv_t));
  };
  CwdPart out{Ms, Mt, 0.0, 0.0, 0.0};
  side(p, out);
  side(q, out);
  return out;
}

// Runs fn(task, row, first pixel of the chunk, chunk length) over all chunks of all rows.
template <typename Fn>
void for_chunks(int64_t rows, int64_t N, Fn fn) {
  const int64_t nchunks = (N + kCwdChunk - 1) / kCwdChunk;
  // ~8192 pixels per task: a few tasks per grain keep the scheduling overhead small.
  at::parallel_for(0, rows * nchunks, 2, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / nchunks, i0 = (task % nchunks) * kCwdChunk;
      fn(task, row, i0, std::min(kCwdChunk, N - i0));
    }
  });
}

template <typename T>
std::tuple<Tensor, Tensor> forward_impl(const Tensor& ys, const Tensor& yt, double temperature) {
  const int64_t B = ys.size(0), C = ys.size(1), N = ys.size(2) * ys.size(3), rows = B * C;
  const int64_t nchunks = (N + kCwdChunk - 1) / kCwdChunk;
  const double inv_t = 1.0 / temperature;
  const T* ps = ys.data_ptr<T>();
  const T* pt = yt.data_ptr<T>();
  const CpuIsa isa = cpu_isa("cwd_loss");
  std::vector<CwdPart> parts(rows * nchunks);
  for_chunks(rows, N, [&](int64_t task, int64_t row, int64_t i0, int64_t len) {
    parts[task] = chunk_part(isa, ps + row * N + i0, pt + row * N + i0, len, inv_t);
  });
  Tensor stats = at::empty({B, C, 3}, ys.options().dtype(at::kDouble));
  double* st = stats.data_ptr<double>();
  double total = 0.0;  // rows in order: deterministic
  for (int64_t r = 0; r < rows; ++r) {
    CwdPart p = parts[r * nchunks];
    for (int64_t c = 1; c < nchunks; ++c) p = merge(p, parts[r * nchunks + c], inv_t);
    const double log_ss = std::log(p.ss), log_st = std::log(p.st);
    // KL = Σ p_t (z_t − z_s) − lse_t + lse_s with z − lse taken against each side's max. A KL divergence:
    // ≥ 0 up to rounding, clamped; NaN and −Inf (an input of −Inf) pass through to the finite check.
    const double raw = p.a / p.st + std::log(p.ss / p.st);  // log of the ratio: no ulp(log N) of log_ss − log_st
    const double kl = raw < 0.0 && std::isfinite(raw) ? 0.0 : raw;
    st[3 * r] = p.ms * inv_t + log_ss;
    st[3 * r + 1] = p.mt * inv_t + log_st;
    st[3 * r + 2] = kl;
    total += kl;
  }
  Tensor loss = at::scalar_tensor(total * temperature * temperature / static_cast<double>(rows),
                                  ys.options().dtype(at::kDouble))
                    .to(ys.scalar_type());
  return {loss, stats};
}

// The gradients output_mask asks for, in one elementwise pass over ys and yt; a gradient not asked for is
// neither computed nor allocated (undefined).
template <typename T>
std::tuple<Tensor, Tensor> backward_impl(const Tensor& grad, const Tensor& ys, const Tensor& yt,
                                         const Tensor& stats, double temperature, std::array<bool, 2> output_mask) {
  const int64_t B = ys.size(0), C = ys.size(1), N = ys.size(2) * ys.size(3), rows = B * C;
  Tensor gs = output_mask[0] ? at::empty_like(ys) : Tensor();
  Tensor gt = output_mask[1] ? at::empty_like(yt) : Tensor();
  if (!gs.defined() && !gt.defined()) return {gs, gt};
  const T* ps = ys.data_ptr<T>();
  const T* pt = yt.data_ptr<T>();
  T* os = gs.defined() ? gs.data_ptr<T>() : nullptr;
  T* ot = gt.defined() ? gt.data_ptr<T>() : nullptr;
  const Tensor st_c = stats.contiguous();
  const double* st = st_c.data_ptr<double>();
  const double scale = grad.item<double>() * temperature / static_cast<double>(rows);
  const CpuIsa isa = cpu_isa("cwd_loss_backward");
  for_chunks(rows, N, [&](int64_t, int64_t row, int64_t i0, int64_t len) {
    const int64_t off = row * N + i0;
    chunk_backward(isa, ps + off, pt + off, len, 1.0 / temperature, st + 3 * row, scale, os ? os + off : nullptr,
                   ot ? ot + off : nullptr);
  });
  return {gs, gt};
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& ys_in, const Tensor& yt_in, double temperature,
                                       bool check_finite) {
  check_cwd_args(ys_in, yt_in, temperature);
  check_cpu_dtype("cwd_loss", ys_in);
  const Tensor ys = ys_in.contiguous(), yt = yt_in.contiguous();
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(ys.scalar_type(), "cwd_loss", [&] { out = forward_impl<scalar_t>(ys, yt, temperature); });
  if (check_finite) check_finite_result("cwd_loss", std::get<0>(out), {{"ys", ys}, {"yt", yt}});
  return out;
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& ys_in, const Tensor& yt_in,
                                        const Tensor& stats, double temperature, std::array<bool, 2> output_mask) {
  check_cwd_backward_args(grad, ys_in, yt_in, stats, temperature);
  check_cpu_dtype("cwd_loss_backward", ys_in);
  const Tensor ys = ys_in.contiguous(), yt = yt_in.contiguous();
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(ys.scalar_type(), "cwd_loss_backward", [&] {
    out = backward_impl<scalar_t>(grad, ys, yt, stats, temperature, output_mask);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("cwd_loss", &forward_cpu);
  m.impl("cwd_loss_backward", &backward_cpu);
}

}  // namespace cwd_cpu
}  // namespace relkd
