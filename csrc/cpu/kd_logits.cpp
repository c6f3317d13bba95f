// kd_logits_loss on the CPU (DESIGN §3.3): one fused sweep per block of pixels computes both
// log-softmaxes, the KL and (in backward) both gradients, with no full-size temporaries. The block
// kernels live in kd_logits_kernels.h; this file parallelizes them and picks the instruction set.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "../relkd.h"
#include "isa.h"

#define RELKD_ISA baseline
#include "kd_logits_kernels.h"
#undef RELKD_ISA

namespace relkd {
namespace kd_cpu {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx2 {
#include "kd_logits_entry.h"
}  // namespace avx2
namespace avx512 {
#include "kd_logits_entry.h"
}  // namespace avx512
#endif

namespace {

double forward_block(CpuIsa isa, const float* zs, const float* zt, int64_t K, int64_t N, int64_t len,
                     double inv_t, KdScratch& s) {
  return RELKD_ISA_CALL(isa, forward_f32, zs, zt, K, N, len, inv_t, s);
}

double forward_block(CpuIsa isa, const double* zs, const double* zt, int64_t K, int64_t N, int64_t len,
                     double inv_t, KdScratch& s) {
  return RELKD_ISA_CALL(isa, forward_f64, zs, zt, K, N, len, inv_t, s);
}

void backward_block(CpuIsa isa, const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                    double scale, KdScratch& s, float* gs, float* gt) {
  RELKD_ISA_CALL(isa, backward_f32, zs, zt, K, N, len, inv_t, scale, s, gs, gt);
}

void backward_block(CpuIsa isa, const double* zs, const double* zt, int64_t K, int64_t N, int64_t len,
                    double inv_t, double scale, KdScratch& s, double* gs, double* gt) {
  RELKD_ISA_CALL(isa, backward_f64, zs, zt, K, N, len, inv_t, scale, s, gs, gt);
}

// Runs fn(task, offset of the block's first element, block length, scratch) over all pixel blocks.
template <typename Fn>
void for_pixel_blocks(int64_t B, int64_t K, int64_t N, Fn fn) {
  const int64_t nblocks = (N + kKdBlock - 1) / kKdBlock;
  at::parallel_for(0, B * nblocks, 16, [&](int64_t begin, int64_t end) {
    std::vector<double> exps(2 * K * kKdBlock);
    std::vector<float> terms(4 * K * kKdBlock);
    KdScratch s;
    s.es = exps.data();
    s.et = exps.data() + K * kKdBlock;
    s.f32 = terms.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblocks, i0 = (task % nblocks) * kKdBlock;
      fn(task, b * K * N + i0, std::min(kKdBlock, N - i0), s);
    }
  });
}

template <typename T>
Tensor forward_impl(const Tensor& zs, const Tensor& zt, double temperature) {
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  const T* ps = zs.data_ptr<T>();
  const T* pt = zt.data_ptr<T>();
  const CpuIsa isa = cpu_isa("kd_logits_loss");
  std::vector<double> partial(B * ((N + kKdBlock - 1) / kKdBlock));  // added in a fixed order: deterministic
  for_pixel_blocks(B, K, N, [&](int64_t task, int64_t off, int64_t len, KdScratch& s) {
    partial[task] = forward_block(isa, ps + off, pt + off, K, N, len, 1.0 / temperature, s);
  });
  double total = 0.0;
  for (double v : partial) total += v;
  total = std::max(total, 0.0);  // a KL divergence: ≥ 0 up to rounding, clamped (NaN passes through)
  return at::scalar_tensor(total * temperature * temperature / static_cast<double>(B * N),
                           zs.options().dtype(at::kDouble))
      .to(zs.scalar_type());
}

// The gradients output_mask asks for, in one sweep that reads zs and zt once; a gradient not asked for is
// neither computed nor allocated (undefined).
template <typename T>
std::tuple<Tensor, Tensor> backward_impl(const Tensor& grad, const Tensor& zs, const Tensor& zt,
                                         double temperature, std::array<bool, 2> output_mask) {
  const int64_t B = zs.size(0), K = zs.size(1), N = zs.size(2) * zs.size(3);
  Tensor gs = output_mask[0] ? at::empty_like(zs) : Tensor();
  Tensor gt = output_mask[1] ? at::empty_like(zt) : Tensor();
  if (!gs.defined() && !gt.defined()) return {gs, gt};
  const T* ps = zs.data_ptr<T>();
  const T* pt = zt.data_ptr<T>();
  T* os = gs.defined() ? gs.data_ptr<T>() : nullptr;
  T* ot = gt.defined() ? gt.data_ptr<T>() : nullptr;
  const double scale = grad.item<double>() * temperature / static_cast<double>(B * N);
  const CpuIsa isa = cpu_isa("kd_logits_loss_backward");
  for_pixel_blocks(B, K, N, [&](int64_t, int64_t off, int64_t len, KdScratch& s) {
    backward_block(isa, ps + off, pt + off, K, N, len, 1.0 / temperature, scale, s, os ? os + off : nullptr,
                   ot ? ot + off : nullptr);
  });
  return {gs, gt};
}

Tensor forward_cpu(const Tensor& zs_in, const Tensor& zt_in, double temperature, bool check_finite) {
  check_kd_args(zs_in, zt_in, temperature);
  check_cpu_dtype("kd_logits_loss", zs_in);
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  Tensor loss;
  AT_DISPATCH_FLOATING_TYPES(zs.scalar_type(), "kd_logits_loss", [&] {
    loss = forward_impl<scalar_t>(zs, zt, temperature);
  });
  if (check_finite) check_finite_result("kd_logits_loss", loss, {{"zs", zs}, {"zt", zt}});
  return loss;
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& zs_in, const Tensor& zt_in,
                                        double temperature, std::array<bool, 2> output_mask) {
  check_kd_backward_args(grad, zs_in, zt_in, temperature);
  check_cpu_dtype("kd_logits_loss_backward", zs_in);
  const Tensor zs = zs_in.contiguous(), zt = zt_in.contiguous();
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(zs.scalar_type(), "kd_logits_loss_backward", [&] {
    out = backward_impl<scalar_t>(grad, zs, zt, temperature, output_mask);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("kd_logits_loss", &forward_cpu);
  m.impl("kd_logits_loss_backward", &backward_cpu);
}

}  // namespace kd_cpu
}  // namespace relkd
