// The entry points every ISA build of cwd_kernels.h defines. cwd.cpp includes this file inside each ISA
// namespace (no include guard on purpose) to declare that build's copies.
CwdPart forward_f32(const float* ys, const float* yt, int64_t len, double inv_t);
CwdPart forward_f64(const double* ys, const double* yt, int64_t len, double inv_t);
void backward_f32(const float* ys, const float* yt, int64_t len, double inv_t, const double* stats, double scale,
                  float* gs, float* gt);
void backward_f64(const double* ys, const double* yt, int64_t len, double inv_t, const double* stats, double scale,
                  double* gs, double* gt);
