// Branch-free float64 exp and log for the CPU pixel/tile loops: with -fno-trapping-math GCC vectorizes
// loops that call them (the libm versions stay scalar). `static` on purpose: every translation unit gets
// its own copy, compiled for that unit's instruction set (kernels_avx2.cpp builds them for AVX2+FMA),
// so no wider-ISA copy can be picked by the linker for a baseline caller.
#pragma once

#include <cstdint>
#include <cstring>

namespace relkd {

// exp(x) for x <= 0 (a logit minus an upper bound of its row): Cody–Waite reduction to |r| <= ln2/2 and a degree-13
// Taylor polynomial (truncation < 1e-17 relative), no division or branch, so the pixel loops vectorize.
// NaN propagates; x < -700 is clamped (the result, ~1e-304, is negligible next to the max term 1).
static inline double exp_nonpositive(double x) {
  constexpr double kRound = 6755399441055744.0;  // 1.5·2^52: adding it rounds to an integer in the low bits
  x = x < -700.0 ? -700.0 : x;
  const double t = x * 1.4426950408889634 + kRound;
  const double n = t - kRound;
  const double r = (x - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  uint64_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 1023) << 52;  // 2^n: the low bits of t hold n
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// log(x) for normal x > 0 (here a ratio of softmax sums, within [1/K, K]): x = m·2^e with m in
// [√½, √2), log m = 2·atanh((m − 1)/(m + 1)) by its series (|s| ≤ 0.172, 11 terms: < 1e-17). Branch-free
// like exp_nonpositive; NaN propagates.
static inline double log_positive(double x) {
  constexpr double kMagic = 4503599627370496.0;  // 2^52: bits 0x4330… + k read back as 2^52 + k
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint64_t mantissa = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;  // m in [1, 2)
  const uint64_t exponent = 0x4330000000000000ull | ((bits >> 52) & 0x7FFull);
  double m, e;
  std::memcpy(&m, &mantissa, sizeof m);
  std::memcpy(&e, &exponent, sizeof e);
  e -= kMagic + 1023.0;
  const bool high = m > 1.4142135623730951;
  m = high ? 0.5 * m : m;
  e = high ? e + 1.0 : e;
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double p = 1.0 / 21.0;
  for (int k = 19; k >= 1; k -= 2) p = p * s2 + 1.0 / k;
  const double result = e * 0.6931471805599453 + 2.0 * s * p;
  return x == x ? result : x;
}

// float32 exp(x) for x <= 88 (8 lanes with AVX2): the same reduction, degree-7 Taylor polynomial on
// |r| <= ln2/2 (truncation < 1e-8 relative). Below -87 the result is 0 (no denormals); NaN propagates.
static inline float exp_f32(float x_in) {
  constexpr float kRound = 12582912.0f;  // 1.5·2^23
  const float x = x_in < -87.0f ? -87.0f : x_in;
  const float t = x * 1.44269504f + kRound;
  const float n = t - kRound;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 127) << 23;  // 2^n: the low bits of t hold n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x_in < -87.0f ? 0.0f : p * scale;
}

// float32 log(x) for normal x > 0, division-free (the pixel loops call it several times per pixel):
// x = m·2^e with m in [√½, √2), log m = u − u²/2 + u³·P(u), u = m − 1, P the degree-8 minimax polynomial of
// Cephes' logf (about 1 ulp). ln2 is split so e·ln2 adds no rounding. NaN propagates.
static inline float log_f32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t mantissa = (bits & 0x007FFFFFu) | 0x3F800000u;  // m in [1, 2)
  float m;
  std::memcpy(&m, &mantissa, sizeof m);
  float e = static_cast<float>(static_cast<int32_t>((bits >> 23) & 0xFFu) - 127);
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  e = high ? e + 1.0f : e;
  const float u = m - 1.0f, u2 = u * u;
  float p = 7.0376836292e-2f;
  p = p * u - 1.1514610310e-1f;
  p = p * u + 1.1676998740e-1f;
  p = p * u - 1.2420140846e-1f;
  p = p * u + 1.4249322787e-1f;
  p = p * u - 1.6668057665e-1f;
  p = p * u + 2.0000714765e-1f;
  p = p * u - 2.4999993993e-1f;
  p = p * u + 3.3333331174e-1f;
  const float tail = (p * u * u2 - e * 2.12194440e-4f) - 0.5f * u2;
  const float result = (u + tail) + e * 0.693359375f;
  return x == x ? result : x;
}

// log(1 + q) for q >= 0 to a few ulps, also for q far below float32's epsilon: log(u)·q/(u − 1), u = 1 + q
// (the rounding of u cancels in the ratio); q itself when u rounds to 1.
static inline float log1p_f32(float q) {
  const float u = 1.0f + q;
  const float d = u - 1.0f;
  return d == 0.0f ? q : log_f32(u) * (q / d);
}

}  // namespace relkd
