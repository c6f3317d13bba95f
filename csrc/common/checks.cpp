// Argument checks of the relkd ops (declared and documented in relkd.h): the one place that says which
// values each op accepts. Messages name the op (or its backward) and the argument.
#include <cmath>
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

void check_cpu_dtype(const char* op, const Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
                   ": the CPU kernel supports float32 and float64, got ", t.scalar_type());
}

at::ScalarType affinity_work_dtype(const Tensor& fs, const Tensor& ft) {
  return fs.size(1) == ft.size(1) ? acc_type(fs) : at::kDouble;
}

namespace {

void check_temperature(const char* op, double temperature) {
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= kMinTemperature && temperature <= kMaxTemperature,
                    op, ": temperature must be in [", kMinTemperature, ", ", kMaxTemperature, "], got ",
                    temperature);
}

void check_eps(const char* op, double eps) {
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, op, ": eps must be positive and finite, got ", eps);
}

void check_same_spatial(const char* op, const Tensor& fs, const Tensor& ft) {
  TORCH_CHECK_VALUE(fs.size(2) == ft.size(2) && fs.size(3) == ft.size(3), op, ": spatial sizes differ (fs is ",
                    fs.size(2), "x", fs.size(3), ", ft is ", ft.size(2), "x", ft.size(3),
                    "); resize one of them first");
}

// The incoming gradient of a scalar loss: one floating-point element on the inputs' device.
void check_grad(const char* op, const Tensor& grad, const Tensor& like) {
  TORCH_CHECK_VALUE(grad.numel() == 1, op, ": grad must be the loss's one-element gradient, got shape ",
                    grad.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(grad.scalar_type()), op, ": grad must be a floating-point tensor, got ",
                   grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == like.device(), op, ": grad must be on ", like.device(), ", got ",
                    grad.device());
}

// A statistic the forward saved for the backward: exactly this shape, dtype and device.
void check_saved(const char* op, const char* name, const Tensor& t, at::IntArrayRef sizes, at::ScalarType dtype,
                 const Tensor& like) {
  TORCH_CHECK_VALUE(t.sizes() == sizes && t.scalar_type() == dtype && t.device() == like.device(), op, ": ", name,
                    " must be the forward's ", dtype, " ", sizes, " on ", like.device(), ", got ", t.scalar_type(),
                    " ", t.sizes(), " on ", t.device());
}

void check_gram(const char* op, const Tensor& fs, const Tensor& ft) {
  check_feature_pair(op, fs, ft, "fs", "ft");
  TORCH_CHECK_VALUE(fs.size(1) == ft.size(1), op, ": channel counts differ (fs has ", fs.size(1), ", ft has ",
                    ft.size(1), "); put a 1x1 adapter in front (relkd_bench.losses does)");
}

// labels (when given): int64 [B, H, W] on fs's device with values in [0, num_classes).
void check_affinity(const char* op, const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
                    int64_t num_classes, double intra_weight, double inter_weight, double eps) {
  check_feature_pair(op, fs, ft, "fs", "ft");
  check_same_spatial(op, fs, ft);
  check_eps(op, eps);
  TORCH_CHECK_VALUE(std::isfinite(intra_weight) && intra_weight >= 0, op,
                    ": intra_weight must be finite and >= 0, got ", intra_weight);
  TORCH_CHECK_VALUE(std::isfinite(inter_weight) && inter_weight >= 0, op,
                    ": inter_weight must be finite and >= 0, got ", inter_weight);
  if (!labels.has_value()) return;
  const Tensor& y = *labels;
  TORCH_CHECK_TYPE(y.scalar_type() == at::kLong, op, ": labels must be an integer (int64) tensor of class indices, got ",
                   y.scalar_type());
  TORCH_CHECK_VALUE(y.device() == fs.device(), op, ": labels must be on ", fs.device(), ", got ", y.device());
  TORCH_CHECK_VALUE(y.dim() == 3 && y.size(0) == fs.size(0) && y.size(1) == fs.size(2) && y.size(2) == fs.size(3),
                    op, ": labels must have shape [B, H, W] = [", fs.size(0), ", ", fs.size(2), ", ", fs.size(3),
                    "], got ", y.sizes());
  const auto [lo, hi] = at::aminmax(y);
  const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
  TORCH_CHECK_VALUE(min >= 0, op, ": labels must be non-negative, found ", min);
  TORCH_CHECK_VALUE(num_classes >= 1 && num_classes <= kMaxClasses, op, ": num_classes must be in [1, ",
                    kMaxClasses, "], got ", num_classes);
  TORCH_CHECK_VALUE(max < num_classes, op, ": labels must be < num_classes = ", num_classes, ", found ", max);
}

void check_relation_kl(const char* op, const Tensor& fs, const Tensor& ft, double temperature, double eps) {
  check_feature_pair(op, fs, ft, "fs", "ft");
  check_same_spatial(op, fs, ft);
  check_temperature(op, temperature);
  check_eps(op, eps);
}

void check_kd(const char* op, const Tensor& zs, const Tensor& zt, double temperature) {
  check_feature_pair(op, zs, zt, "zs", "zt");
  TORCH_CHECK_VALUE(zs.sizes() == zt.sizes(), op, ": zs and zt must have the same shape [B, K, H, W] (class counts ",
                    zs.size(1), " vs ", zt.size(1), "), got ", zs.sizes(), " and ", zt.sizes());
  check_temperature(op, temperature);
}

// CWD compares channel c of the student with channel c of the teacher, pixel by pixel: one shape.
void check_cwd(const char* op, const Tensor& ys, const Tensor& yt, double temperature) {
  check_feature_pair(op, ys, yt, "ys", "yt");
  TORCH_CHECK_VALUE(ys.sizes() == yt.sizes(), op, ": ys and yt must have one shape [B, C, H, W] (channel counts ",
                    ys.size(1), " vs ", yt.size(1), "), got ", ys.sizes(), " and ", yt.sizes());
  check_temperature(op, temperature);
}

}  // namespace

void check_gram_args(const Tensor& fs, const Tensor& ft) { check_gram("gram_loss", fs, ft); }

void check_gram_backward_args(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& diff) {
  constexpr const char* op = "gram_loss_backward";
  check_gram(op, fs, ft);
  check_grad(op, grad, fs);
  check_saved(op, "diff", diff, {fs.size(0), fs.size(1), fs.size(1)}, acc_type(fs), fs);
}

void check_affinity_args(const Tensor& fs, const Tensor& ft, const std::optional<Tensor>& labels,
                         int64_t num_classes, double intra_weight, double inter_weight, double eps) {
  check_affinity("affinity_loss", fs, ft, labels, num_classes, intra_weight, inter_weight, eps);
}

void check_affinity_backward_args(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                  const std::optional<Tensor>& labels, const Tensor& s1, const Tensor& s2,
                                  const Tensor& s3, const Tensor& counts, double intra_weight,
                                  double inter_weight, double eps) {
  constexpr const char* op = "affinity_loss_backward";
  // The class count comes from the saved counts [B, K]; without labels K is 1.
  TORCH_CHECK_VALUE(counts.dim() == 2, op, ": counts must be the forward's int64 [B, num_classes], got shape ",
                    counts.sizes());
  const int64_t K = counts.size(1);
  check_affinity(op, fs, ft, labels, K, intra_weight, inter_weight, eps);
  TORCH_CHECK_VALUE(labels.has_value() || K == 1, op, ": counts must be [B, 1] without labels, got ",
                    counts.sizes());
  check_grad(op, grad, fs);
  const int64_t B = fs.size(0), Cs = fs.size(1), Ct = ft.size(1);
  const auto work = affinity_work_dtype(fs, ft);
  check_saved(op, "counts", counts, {B, K}, at::kLong, fs);
  check_saved(op, "s1", s1, {B, K, Cs, Cs}, work, fs);
  check_saved(op, "s2", s2, {B, K, Cs, Ct}, work, fs);
  check_saved(op, "s3", s3, {B, K, Ct, Ct}, work, fs);
}

void check_kd_args(const Tensor& zs, const Tensor& zt, double temperature) {
  check_kd("kd_logits_loss", zs, zt, temperature);
}

void check_kd_backward_args(const Tensor& grad, const Tensor& zs, const Tensor& zt, double temperature) {
  check_kd("kd_logits_loss_backward", zs, zt, temperature);
  check_grad("kd_logits_loss_backward", grad, zs);
}

void check_cwd_args(const Tensor& ys, const Tensor& yt, double temperature) {
  check_cwd("cwd_loss", ys, yt, temperature);
}

void check_cwd_backward_args(const Tensor& grad, const Tensor& ys, const Tensor& yt, const Tensor& stats,
                             double temperature) {
  constexpr const char* op = "cwd_loss_backward";
  check_cwd(op, ys, yt, temperature);
  check_grad(op, grad, ys);
  check_saved(op, "stats", stats, {ys.size(0), ys.size(1), 3}, at::kDouble, ys);
}

void check_relation_kl_args(const Tensor& fs, const Tensor& ft, double temperature, double eps) {
  check_relation_kl("relation_kl_loss", fs, ft, temperature, eps);
}

void check_relation_kl_backward_args(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& stats,
                                     double temperature, double eps) {
  constexpr const char* op = "relation_kl_loss_backward";
  check_relation_kl(op, fs, ft, temperature, eps);
  check_grad(op, grad, fs);
  check_saved(op, "stats", stats, {fs.size(0), 3, fs.size(2) * fs.size(3)}, at::kDouble, fs);
}

}  // namespace relkd
