// relation_kl_loss on CUDA (DESIGN §3.4). The N×N pairs are swept in column panels J: cuBLAS forms the
// panel of inner products X̂ X̂_Jᵀ ([B, N, bc]; float32 work tensors — fp32 accumulation — for float32,
// float16 and bfloat16 input, float64 for float64), a fused kernel folds it into the per-row statistics
// (forward: one warp per row, float64 sums) or turns it in place into the weights G = W + Wᵀ (backward),
// and cuBLAS adds G X̂_J into every row's gradient. Memory is O(B·N·bc), bc chosen so both panels stay
// within kPanelBytes; no N×N buffer. The normalization and statistics → loss are csrc/common.
// RELKD_RELATION_KL_CUDA=fused selects the experimental fused sweep of relation_kl_fused.cu instead.
#include <ATen/Dispatch.h>

#include <algorithm>

#include "../relkd.h"
#include "common.cuh"
#include "relation_kl_kernels.cuh"
#include "relation_kl_fused.cuh"

namespace relkd {
namespace {

constexpr int64_t kPanelBytes = int64_t{64} << 20;

int64_t panel_width(int64_t B, int64_t N, int64_t element_size) {
  return std::min(N, std::max<int64_t>(32, kPanelBytes / (2 * B * N * element_size)));
}

// ps = X̂s X̂s_Jᵀ and pd = X̂t X̂t_Jᵀ − ps for the columns [j0, j0 + w), as contiguous [B, N, w] views of the
// buffers.
void panels(const RelationRows& rows, int64_t j0, int64_t w, const Tensor& buf_s, const Tensor& buf_d, Tensor& ps,
            Tensor& pd) {
  const Tensor &xs = rows.xs, &xt = rows.xt;
  const int64_t B = xs.size(0), N = xs.size(1);
  ps = buf_s.narrow(0, 0, B * N * w).view({B, N, w});
  pd = buf_d.narrow(0, 0, B * N * w).view({B, N, w});
  at::bmm_out(ps, xs, xs.narrow(1, j0, w).transpose(1, 2));
  if (rows.dl.defined()) {
    at::bmm_out(pd, rows.dl, rows.dr.narrow(1, j0, w).transpose(1, 2));
  } else {
    at::bmm_out(pd, xt, xt.narrow(1, j0, w).transpose(1, 2));
    pd.sub_(ps);
  }
}

// Calls fn(j0, w, ps, pd) for each column panel [j0, j0 + w), with the panels formed by panels().
template <typename Fn>
void for_each_panel(const RelationRows& rows, Fn fn) {
  const int64_t B = rows.xs.size(0), N = rows.xs.size(1), bc = panel_width(B, N, rows.xs.element_size());
  const Tensor buf_s = at::empty({B * N * bc}, rows.xs.options()), buf_d = at::empty_like(buf_s);
  for (int64_t j0 = 0; j0 < N; j0 += bc) {
    const int64_t w = std::min(bc, N - j0);
    Tensor ps, pd;
    panels(rows, j0, w, buf_s, buf_d, ps, pd);
    fn(j0, w, ps, pd);
  }
}

Tensor row_sums_cuda(const RelationRows& rows, double inv_tau) {
  const Tensor& offsets = rows.offsets;
  const int64_t B = rows.xs.size(0), N = rows.xs.size(1);
  Tensor sums = at::zeros({B, 3, N}, offsets.options());
  const auto stream = at::cuda::getCurrentCUDAStream();
  for_each_panel(rows, [&](int64_t, int64_t w, const Tensor& ps, const Tensor& pd) {
    AT_DISPATCH_FLOATING_TYPES(rows.xs.scalar_type(), "relation_kl_loss", [&] {
      panel::row_sums_kernel<scalar_t><<<blocks_for(B * N * 32), kThreads, 0, stream>>>(
          ps.data_ptr<scalar_t>(), pd.data_ptr<scalar_t>(), B * N, N, w, inv_tau, offsets.data_ptr<double>(),
          sums.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return sums;
}

// Only the sides in `mask` get weights, GEMMs and a gradient buffer; the other comes back undefined.
std::tuple<Tensor, Tensor> row_grads_cuda(const RelationRows& rows, const Tensor& terms, double inv_tau,
                                          GradMask mask) {
  const Tensor &xs = rows.xs, &xt = rows.xt;
  const int64_t B = xs.size(0), N = xs.size(1);
  Tensor gs = mask[0] ? at::zeros_like(xs) : Tensor(), gt = mask[1] ? at::zeros_like(xt) : Tensor();
  const auto stream = at::cuda::getCurrentCUDAStream();
  for_each_panel(rows, [&](int64_t j0, int64_t w, const Tensor& ps, const Tensor& pd) {
    AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "relation_kl_loss_backward", [&] {
      panel::weights_kernel<scalar_t><<<blocks_for(B * N * w), kThreads, 0, stream>>>(
          ps.data_ptr<scalar_t>(), pd.data_ptr<scalar_t>(), B, N, j0, w, inv_tau, terms.data_ptr<double>(), mask[0],
          mask[1]);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (mask[0]) gs.baddbmm_(ps, xs.narrow(1, j0, w));  // row i += Σ_{j ∈ J} G_s,ij x̂_j
    if (mask[1]) gt.baddbmm_(pd, xt.narrow(1, j0, w));
  });
  return {gs, gt};
}

const RelationKLKernels kCudaKernels{&row_sums_cuda, &row_grads_cuda, /*float64_when_channels_differ=*/false};
const RelationKLKernels kFusedKernels{&row_sums_fused, &row_grads_fused, /*float64_when_channels_differ=*/false};

const RelationKLKernels& cuda_kernels() {
  const bool fused = env_choice("relation_kl_loss", "RELKD_RELATION_KL_CUDA", {"panels", "fused"}) == "fused";
  return fused ? kFusedKernels : kCudaKernels;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_cuda(const Tensor& fs, const Tensor& ft, double temperature,
                                                        double eps, bool check_finite, GradMask grad_mask) {
  check_relation_kl_args(fs, ft, temperature, eps);
  check_cuda_dtype("relation_kl_loss", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return relation_kl_forward(cuda_kernels(), fs, ft, temperature, eps, check_finite, grad_mask);
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                         const Tensor& stats, double temperature, double eps, GradMask output_mask) {
  check_relation_kl_backward_args(grad, fs, ft, stats, temperature, eps);
  check_cuda_dtype("relation_kl_loss_backward", fs);
  const c10::cuda::CUDAGuard guard(fs.device());
  return relation_kl_backward(cuda_kernels(), grad, fs, ft, stats, temperature, eps, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CUDA, m) {
  m.impl("relation_kl_loss", &forward_cuda);
  m.impl("relation_kl_loss_backward", &backward_cuda);
}

}  // namespace relkd
