// relation_kl_loss on CUDA, the fused flash-attention-style sweep (DESIGN §3.4): no N×N or panel buffer,
// only per-row statistics (forward) and the gradients (backward) touch global memory.
//
// Experimental, chosen with RELKD_RELATION_KL_CUDA=fused; the default CUDA path is the panel sweep of
// relation_kl.cu, which was faster on the GPU (results/gpu/README.md). The kernels and their geometry are in
// relation_kl_fused_kernels.cuh (also run by the CPU emulation in tests/cuda_emu).
#include <ATen/Dispatch.h>

#include "../relkd.h"
#include "common.cuh"
#include "relation_kl_fused.cuh"
#include "relation_kl_fused_kernels.cuh"

namespace relkd {
namespace {

template <typename W>
fused::RowsView<W> view_of(const RelationRows& rows) {
  const bool pe = rows.dl.defined();
  return {rows.xs.data_ptr<W>(), rows.xt.data_ptr<W>(), pe ? rows.dl.data_ptr<W>() : nullptr,
          pe ? rows.dr.data_ptr<W>() : nullptr, rows.xs.size(1), rows.xs.size(2), rows.xt.size(2),
          pe ? rows.dl.size(2) : 0};
}

}  // namespace

Tensor row_sums_fused(const RelationRows& rows, double inv_tau) {
  const int64_t B = rows.xs.size(0), N = rows.xs.size(1);
  TORCH_CHECK(B <= 65535, "relation_kl_loss (fused CUDA): batch size ", B, " exceeds the grid limit 65535");
  Tensor sums = at::empty({B, 3, N}, rows.offsets.options());
  AT_DISPATCH_FLOATING_TYPES(rows.xs.scalar_type(), "relation_kl_loss_fused", [&] {
    const dim3 grid = fused::sums_grid(B, N);
    fused::sums_kernel<scalar_t><<<grid, fused::kFusedThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        view_of<scalar_t>(rows), inv_tau, rows.offsets.data_ptr<double>(), sums.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return sums;
}

// Blocks are launched for the sides in `mask` only; the other gradient comes back undefined.
std::tuple<Tensor, Tensor> row_grads_fused(const RelationRows& rows, const Tensor& terms, double inv_tau,
                                           GradMask mask) {
  const int64_t B = rows.xs.size(0), N = rows.xs.size(1), Cs = rows.xs.size(2), Ct = rows.xt.size(2);
  TORCH_CHECK(B <= 65535, "relation_kl_loss (fused CUDA): batch size ", B, " exceeds the grid limit 65535");
  Tensor gs = mask[0] ? at::empty_like(rows.xs) : Tensor(), gt = mask[1] ? at::empty_like(rows.xt) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(rows.xs.scalar_type(), "relation_kl_loss_backward_fused", [&] {
    const fused::GradChunks chunks = fused::grad_chunks<scalar_t>(Cs, Ct, mask[0], mask[1]);
    fused::grads_kernel<scalar_t><<<fused::grads_grid(B, N, chunks), fused::kFusedThreads, 0,
                                    at::cuda::getCurrentCUDAStream()>>>(
        view_of<scalar_t>(rows), inv_tau, terms.data_ptr<double>(), chunks.student,
        mask[0] ? gs.data_ptr<scalar_t>() : nullptr, mask[1] ? gt.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gs, gt};
}

}  // namespace relkd
