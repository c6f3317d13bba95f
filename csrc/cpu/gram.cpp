// gram_loss on the CPU: the device-generic GEMM formulation (csrc/common/gram.cpp) on MKL/OpenBLAS. The
// forward's one GEMM, M = P Eᵀ with P = Xs + Xt and E = Xs − Xt, takes P and E a chunk of pixels at a time
// from cache-sized buffers: formed whole, they would cost a write and a re-read of 2·B·C·N numbers, about
// as long as the GEMM itself (the forward then ran slower than the two-GEMM definition).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../relkd.h"

namespace relkd {
namespace {

// Numbers per chunk buffer: P and E of one chunk (2·C·chunk numbers) stay in a core's L2 cache.
constexpr int64_t kChunkElements = int64_t{1} << 16;

// p, e [C, ld] (first n columns) = s ± t for n pixels of one sample (s, t: [C, N] from the chunk's column).
template <typename T>
void sum_diff_columns(const T* s, const T* t, int64_t C, int64_t N, int64_t n, T* p, T* e, int64_t ld) {
  at::parallel_for(0, C, std::max<int64_t>(1, 16384 / n), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const T* sr = s + c * N;
      const T* tr = t + c * N;
      T* pr = p + c * ld;
      T* er = e + c * ld;
      for (int64_t i = 0; i < n; ++i) pr[i] = sr[i] + tr[i], er[i] = sr[i] - tr[i];
    }
  });
}

// m[b] = P Eᵀ of sample b, accumulated over chunks of `chunk` pixels.
template <typename T>
void sample_product(const Tensor& xs, const Tensor& xt, int64_t b, int64_t chunk, Tensor& m) {
  const int64_t C = xs.size(1), N = xs.size(2);
  Tensor p = at::empty({C, chunk}, xs.options()), e = at::empty({C, chunk}, xs.options());
  const T* s = xs.data_ptr<T>() + b * C * N;
  const T* t = xt.data_ptr<T>() + b * C * N;
  Tensor out = m[b];
  for (int64_t lo = 0; lo < N; lo += chunk) {
    const int64_t n = std::min(chunk, N - lo);
    sum_diff_columns(s + lo, t + lo, C, N, n, p.data_ptr<T>(), e.data_ptr<T>(), chunk);
    const Tensor pn = p.narrow(1, 0, n), en = e.narrow(1, 0, n);
    if (lo == 0) {
      at::mm_out(out, pn, en.t());
    } else {
      out.addmm_(pn, en.t());
    }
  }
}

Tensor sum_diff_product_cpu(const Tensor& xs_in, const Tensor& xt_in) {
  const Tensor xs = xs_in.contiguous(), xt = xt_in.contiguous();
  const int64_t B = xs.size(0), C = xs.size(1), threads = at::get_num_threads();
  // One sample per thread (single-threaded GEMMs on cache-resident chunks) when the samples can occupy
  // every thread; otherwise one sample after another, each pass and GEMM on all threads, whose caches
  // together hold a chunk that many times larger.
  const bool per_sample = B >= threads;
  const int64_t chunk = std::max<int64_t>(64, kChunkElements * (per_sample ? 1 : threads) / C);
  Tensor m = at::empty({B, C, C}, xs.options());
  AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "gram_loss", [&] {
    if (per_sample) {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) sample_product<scalar_t>(xs, xt, b, chunk, m);
      });
    } else {
      for (int64_t b = 0; b < B; ++b) sample_product<scalar_t>(xs, xt, b, chunk, m);
    }
  });
  return m;
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& fs, const Tensor& ft, bool check_finite) {
  check_gram_args(fs, ft);
  check_cpu_dtype("gram_loss", fs);
  return gram_loss_forward(fs, ft, check_finite, &sum_diff_product_cpu);
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& fs, const Tensor& ft, const Tensor& diff,
                                        std::array<bool, 2> output_mask) {
  check_gram_backward_args(grad, fs, ft, diff);
  check_cpu_dtype("gram_loss_backward", fs);
  return gram_loss_backward(grad, fs, ft, diff, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(relkd, CPU, m) {
  m.impl("gram_loss", &forward_cpu);
  m.impl("gram_loss_backward", &backward_cpu);
}

}  // namespace relkd
