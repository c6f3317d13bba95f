#include "../relkd.h"

namespace relkd {

void check_kd_inputs(const Tensor& zs, const Tensor& zt, double temperature) {
  check_feature_pair("kd_logits_loss", zs, zt, "zs", "zt");
  TORCH_CHECK_VALUE(zs.sizes() == zt.sizes(), "kd_logits_loss: zs and zt must have the same shape [B, K, H, W]",
                    " (class counts ", zs.size(1), " vs ", zt.size(1), "), got ", zs.sizes(), " and ", zt.sizes());
  TORCH_CHECK_VALUE(temperature > 0, "kd_logits_loss: temperature must be positive, got ", temperature);
}

}  // namespace relkd
