// The fused CUDA sweep of relation_kl_loss (relation_kl_fused.cu), an alternative to the panel sweep of
// relation_kl.cu chosen with RELKD_RELATION_KL_CUDA=fused. Same contract as RelationKLKernels (relkd.h).
#pragma once

#include "../relkd.h"

namespace relkd {

Tensor row_sums_fused(const RelationRows& rows, double inv_tau);
std::tuple<Tensor, Tensor> row_grads_fused(const RelationRows& rows, const Tensor& terms, double inv_tau,
                                           GradMask mask);

}  // namespace relkd
