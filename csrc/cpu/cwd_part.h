// The partial statistics of a chunk of one cwd_loss row (csrc/cpu/cwd_kernels.h). A plain struct only: no
// inline functions, so nothing here is compiled with the wider targets of kernels_avx2.cpp and kernels_avx512.cpp.
#pragma once

namespace relkd {
namespace cwd_cpu {

// Over the chunk's pixels i, with z = y/τ: ms, mt the maxima of ys, yt (raw, not divided by τ);
// ss = Σ e^{(ys_i − ms)/τ}, st = Σ e^{(yt_i − mt)/τ}; a = Σ e^{(yt_i − mt)/τ} ((yt_i − mt) − (ys_i − ms))/τ.
struct CwdPart {
  double ms, mt, ss, st, a;
};

}  // namespace cwd_cpu
}  // namespace relkd
