// The entry points every ISA build of kd_logits_kernels.h defines. kd_logits.cpp includes this file inside
// each ISA namespace (no include guard on purpose) to declare that build's copies.
double forward_f32(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t, KdScratch& s);
double forward_f64(const double* zs, const double* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                   KdScratch& s);
void backward_f32(const float* zs, const float* zt, int64_t K, int64_t N, int64_t len, double inv_t, double scale,
                  KdScratch& s, float* gs, float* gt);
void backward_f64(const double* zs, const double* zt, int64_t K, int64_t N, int64_t len, double inv_t,
                  double scale, KdScratch& s, double* gs, double* gt);
