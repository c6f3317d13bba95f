// Runs the CUDA kernels of relation_kl_loss on the CPU emulation of simt.h, on inputs written by
// tests/test_relation_kl_loss_cuda_emu.py, with the launch geometry of the CUDA host code.
//
//   relation_kl_emu <path> <float|double> B N Cs Ct K2 inv_tau panel_width <both|student|teacher> DIR
//
// <path> is "fused" (relation_kl_fused.cu) or "panels" (relation_kl.cu; panel_width columns per panel, the
// panel GEMMs done here in plain loops). The mask names the backward's gradients (its output_mask). DIR holds
// the RelationRows of relkd.h as raw little-endian arrays: xs [B,N,Cs], xt [B,N,Ct], dl and dr [B,N,K2] when
// K2 > 0 (work dtype), offsets [B,2,N] and terms [B,5,N] (float64). Writes sums [B,3,N] (float64) and the
// wanted ones of gs, gt (work dtype) to DIR. A side not wanted must not be touched: the fused kernel gets a
// null output for it (a write would be reported by AddressSanitizer), and the panel weights kernel must leave
// its panel as it was (checked here).
#include <cstdio>
#include <stdexcept>
#include <string>

#include "io.h"
#include "simt.h"
// simt.h first: the kernels read its threadIdx, __syncthreads and friends.
#include "../../csrc/cuda/grid.cuh"
#include "../../csrc/cuda/relation_kl_fused_kernels.cuh"
#include "../../csrc/cuda/relation_kl_kernels.cuh"

namespace {

struct Dims {
  int64_t B, N, Cs, Ct, K2, bc;
  double inv_tau;
  bool student, teacher;  // the gradients wanted
};

using simt::load;
using simt::save;

template <typename W>
struct Rows {
  std::vector<W> xs, xt, dl, dr;
  std::vector<double> offsets, terms;
};

template <typename W>
Rows<W> load_rows(const std::string& dir, const Dims& d) {
  Rows<W> r{load<W>(dir, "xs", d.B * d.N * d.Cs), load<W>(dir, "xt", d.B * d.N * d.Ct), {}, {},
            load<double>(dir, "offsets", d.B * 2 * d.N), load<double>(dir, "terms", d.B * 5 * d.N)};
  if (d.K2 > 0) r.dl = load<W>(dir, "dl", d.B * d.N * d.K2), r.dr = load<W>(dir, "dr", d.B * d.N * d.K2);
  return r;
}

template <typename W>
void run_fused(const std::string& dir, const Dims& d) {
  Rows<W> r = load_rows<W>(dir, d);
  const relkd::fused::RowsView<W> v{r.xs.data(), r.xt.data(), d.K2 > 0 ? r.dl.data() : nullptr,
                                    d.K2 > 0 ? r.dr.data() : nullptr, d.N, d.Cs, d.Ct, d.K2};
  std::vector<double> sums(d.B * 3 * d.N, -1.0);  // the kernel writes every entry: no zero start
  simt::launch(relkd::fused::sums_grid(d.B, d.N), relkd::fused::kFusedThreads, relkd::fused::sums_kernel<W>, v,
               d.inv_tau, r.offsets.data(), sums.data());
  std::vector<W> gs(d.B * d.N * d.Cs, W(-1)), gt(d.B * d.N * d.Ct, W(-1));
  const relkd::fused::GradChunks chunks = relkd::fused::grad_chunks<W>(d.Cs, d.Ct, d.student, d.teacher);
  simt::launch(relkd::fused::grads_grid(d.B, d.N, chunks), relkd::fused::kFusedThreads,
               relkd::fused::grads_kernel<W>, v, d.inv_tau, r.terms.data(), chunks.student,
               d.student ? gs.data() : nullptr, d.teacher ? gt.data() : nullptr);
  save(dir, "sums", sums);
  if (d.student) save(dir, "gs", gs);
  if (d.teacher) save(dir, "gt", gt);
}

// out[b, i, j] = Σ_k A[b, i, k] · Bm[b, j0 + j, k] for j < w, accumulated in W (cuBLAS accumulates float in
// float32).
template <typename W>
void panel_product(const std::vector<W>& A, const std::vector<W>& Bm, int64_t K, const Dims& d, int64_t j0,
                   int64_t w, std::vector<W>& out) {
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t i = 0; i < d.N; ++i)
      for (int64_t j = 0; j < w; ++j) {
        W acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += A[(b * d.N + i) * K + k] * Bm[(b * d.N + j0 + j) * K + k];
        out[(b * d.N + i) * w + j] = acc;
      }
}

// The host loop of relation_kl.cu: panels of bc columns; forward row sums, backward weights then
// g += G X̂_J (a baddbmm on the GPU).
template <typename W>
void run_panels(const std::string& dir, const Dims& d) {
  Rows<W> r = load_rows<W>(dir, d);
  std::vector<double> sums(d.B * 3 * d.N, 0.0);
  std::vector<W> gs(d.B * d.N * d.Cs, W(0)), gt(d.B * d.N * d.Ct, W(0));
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t j0 = 0; j0 < d.N; j0 += d.bc) {
      const int64_t w = std::min(d.bc, d.N - j0);
      std::vector<W> ps(d.B * d.N * w), pd(d.B * d.N * w);
      panel_product(r.xs, r.xs, d.Cs, d, j0, w, ps);
      if (d.K2 > 0) {
        panel_product(r.dl, r.dr, d.K2, d, j0, w, pd);
      } else {
        panel_product(r.xt, r.xt, d.Ct, d, j0, w, pd);
        for (size_t e = 0; e < pd.size(); ++e) pd[e] -= ps[e];
      }
      if (pass == 0) {
        simt::launch(relkd::blocks_for(d.B * d.N * 32), relkd::kThreads, relkd::panel::row_sums_kernel<W>,
                     ps.data(), pd.data(), d.B * d.N, d.N, w, d.inv_tau, r.offsets.data(), sums.data());
        continue;
      }
      const std::vector<W> ps_before = ps, pd_before = pd;
      simt::launch(relkd::blocks_for(d.B * d.N * w), relkd::kThreads, relkd::panel::weights_kernel<W>, ps.data(),
                   pd.data(), d.B, d.N, j0, w, d.inv_tau, r.terms.data(), d.student, d.teacher);
      if ((!d.student && ps != ps_before) || (!d.teacher && pd != pd_before))
        throw std::runtime_error("weights_kernel wrote the panel of a gradient not asked for");
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t i = 0; i < d.N; ++i)
          for (int64_t j = 0; j < w; ++j) {
            const W g_s = ps[(b * d.N + i) * w + j], g_t = pd[(b * d.N + i) * w + j];
            if (d.student)
              for (int64_t c = 0; c < d.Cs; ++c) gs[(b * d.N + i) * d.Cs + c] += g_s * r.xs[(b * d.N + j0 + j) * d.Cs + c];
            if (d.teacher)
              for (int64_t c = 0; c < d.Ct; ++c) gt[(b * d.N + i) * d.Ct + c] += g_t * r.xt[(b * d.N + j0 + j) * d.Ct + c];
          }
    }
  save(dir, "sums", sums);
  if (d.student) save(dir, "gs", gs);
  if (d.teacher) save(dir, "gt", gt);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 12) {
    std::fprintf(stderr, "usage: %s fused|panels float|double B N Cs Ct K2 inv_tau panel_width %s DIR\n", argv[0],
                 "both|student|teacher");
    return 2;
  }
  const std::string path = argv[1], dtype = argv[2], mask = argv[10], dir = argv[11];
  const Dims d{std::stoll(argv[3]), std::stoll(argv[4]), std::stoll(argv[5]), std::stoll(argv[6]),
               std::stoll(argv[7]), std::stoll(argv[9]), std::stod(argv[8]), mask != "teacher", mask != "student"};
  try {
    if (mask != "both" && mask != "student" && mask != "teacher") throw std::runtime_error("unknown mask: " + mask);
    if (path == "fused" && dtype == "float") run_fused<float>(dir, d);
    else if (path == "fused" && dtype == "double") run_fused<double>(dir, d);
    else if (path == "panels" && dtype == "float") run_panels<float>(dir, d);
    else if (path == "panels" && dtype == "double") run_panels<double>(dir, d);
    else throw std::runtime_error("unknown path or dtype: " + path + " " + dtype);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relation_kl_emu: %s\n", e.what());
    return 2;
  }
  return 0;
}
