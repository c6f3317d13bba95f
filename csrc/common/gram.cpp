// gram_loss (DESIGN §3.1) is GEMM-shaped end to end, so one device-generic implementation serves CPU
// (MKL/OpenBLAS through ATen) and CUDA (cuBLAS); the fusion is in the algebra, not in a hand loop.
#include "../relkd.h"

namespace relkd {

Tensor gram_sum_diff_product(const Tensor& xs, const Tensor& xt) {
  return at::bmm(xs + xt, (xs - xt).transpose(1, 2));
}

std::tuple<Tensor, Tensor> gram_loss_forward(const Tensor& fs, const Tensor& ft, bool check_finite,
                                             GramProduct product) {
  const int64_t B = fs.size(0), C = fs.size(1);
  const int64_t Ns = fs.size(2) * fs.size(3), Nt = ft.size(2) * ft.size(3);
  const auto acc = acc_type(fs);
  const Tensor xs = fs.reshape({B, C, Ns}).to(acc);
  const Tensor xt = ft.reshape({B, C, Nt}).to(acc);
  Tensor diff;  // G_s - G_t, [B, C, C]
  if (Ns == Nt) {
    // Xs Xsᵀ - Xt Xtᵀ = (P Eᵀ + E Pᵀ) / 2 with P = Xs + Xt, E = Xs - Xt: one GEMM instead of two, and
    // no cancellation between two nearly equal Grams when the student is close to the teacher.
    const Tensor m = product(xs, xt);
    diff = (m + m.transpose(1, 2)).mul_(0.5 / static_cast<double>(Ns));
  } else {
    diff = at::bmm(xs, xs.transpose(1, 2)).div_(static_cast<double>(Ns));
    diff.baddbmm_(xt, xt.transpose(1, 2), 1.0, -1.0 / static_cast<double>(Nt));
  }
  const Tensor loss =
      at::sum(diff.square(), at::kDouble).div_(static_cast<double>(B * C * C)).to(fs.scalar_type());
  if (check_finite) check_finite_result("gram_loss", loss, {{"fs", fs}, {"ft", ft}});
  return {loss, diff};
}

std::tuple<Tensor, Tensor> gram_loss_backward(const Tensor& grad, const Tensor& fs, const Tensor& ft,
                                              const Tensor& diff, std::array<bool, 2> output_mask) {
  const int64_t B = fs.size(0), C = fs.size(1);
  const auto acc = diff.scalar_type();
  // d loss / d Xs = 4 / (B C² Ns) (G_s - G_t) Xs; the teacher side mirrors it with a minus sign. Each side
  // is one GEMM, run only when its gradient is asked for.
  const Tensor g = grad.to(acc) * (4.0 / static_cast<double>(B * C * C));
  const auto side = [&](const Tensor& f, double sign) {
    const int64_t n = f.size(2) * f.size(3);
    const Tensor x = f.reshape({B, C, n}).to(acc);
    return at::bmm(diff, x).mul_(g * (sign / static_cast<double>(n))).view(f.sizes()).to(f.scalar_type());
  };
  return {output_mask[0] ? side(fs, 1.0) : Tensor(), output_mask[1] ? side(ft, -1.0) : Tensor()};
}

}  // namespace relkd
