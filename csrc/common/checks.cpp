#include <cstdlib>

#include "../relkd.h"

namespace relkd {

void check_finite_result(const char* op, const Tensor& value,
                         std::initializer_list<std::pair<const char*, Tensor>> inputs) {
  if (at::isfinite(value).all().item<bool>()) return;
  for (const auto& [name, t] : inputs) {
    TORCH_CHECK_VALUE(at::isfinite(t).all().item<bool>(), op, ": ", name,
                      " contains NaN or Inf values (pass check_finite=False to skip this check)");
  }
  TORCH_CHECK_VALUE(false, op, ": the inputs are finite but the loss overflowed in ", value.scalar_type(),
                    "; use a wider dtype or rescale the features");
}

std::string env_choice(const char* op, const char* name, std::initializer_list<const char*> choices) {
  const char* env = std::getenv(name);
  const std::string value = env == nullptr ? "" : env;
  if (value.empty()) return *choices.begin();
  std::string listed;
  for (const char* c : choices) {
    if (value == c) return value;
    listed += listed.empty() ? c : std::string(", ") + c;
  }
  C10_THROW_ERROR(ValueError, c10::str(op, ": ", name, " must be one of ", listed, "; got '", value, "'"));
}

void check_feature_pair(const char* op, const Tensor& a, const Tensor& b, const char* name_a,
                        const char* name_b) {
  const auto check_one = [op](const char* name, const Tensor& t) {
    TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must be 4-D [B, C, H, W], got shape ", t.sizes());
    TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                     " must be a floating-point tensor, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.numel() > 0, op, ": ", name, " is empty (shape ", t.sizes(), ")");
  };
  check_one(name_a, a);
  check_one(name_b, b);
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
                   " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
                    " must be on the same device, got ", a.device(), " and ", b.device());
  TORCH_CHECK_VALUE(a.size(0) == b.size(0), op, ": batch sizes differ (", name_a, " has ", a.size(0), ", ",
                    name_b, " has ", b.size(0), ")");
}

}  // namespace relkd
