// The entry points every ISA build of relation_kl_kernels.h defines. relation_kl.cpp includes this file
// inside each ISA namespace (no include guard on purpose) to declare that build's copies.
void sums(const float* s, const float* d, const TileSpan& span, const double* ms, const double* mt, double* sum_s,
          double* sum_t, double* acc);
void sums(const double* s, const double* d, const TileSpan& span, const double* ms, const double* mt, double* sum_s,
          double* sum_t, double* acc);
void weights(float* s, float* d, const TileSpan& span, const double* terms, int64_t N, bool student, bool teacher);
void weights(double* s, double* d, const TileSpan& span, const double* terms, int64_t N, bool student, bool teacher);
