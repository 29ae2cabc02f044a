// Fused Lanczos (no re-orthogonalisation) on J^T J for a batch of small square matrices.
//
// Inputs : J  (..., n, n) float32, row-major;  v0 (..., n) float32 (same leading dims).
// Attr   : steps (int64)
// Outputs: alpha (..., steps), beta (..., steps) float32.
//
// Recurrence (jaxgrad.spectral.lanczos_top_singular_operator, reorthogonalise=False):
//   v = v0/||v0|| (v0 == 0 -> e_1); v_prev = 0; b_prev = 0
//   for j: w = J^T J v; w_norm = ||w||; w -= b_prev v_prev; a = w.v; w -= a v; b = ||w||
//          ok = b > 1e3 eps w_norm && b > sqrt(tiny); b = ok ? b : 0; v_next = ok ? w/b : 0
// All arithmetic, including the dot-product accumulation, is float32. Reductions are
// vectorised with `#pragma omp simd reduction` (build with -fopenmp-simd), i.e. summed in
// 8 (AVX2) or 16 (AVX-512) interleaved partial sums: deterministic for a given build, but
// a different rounding order than XLA's.
//
// Each matrix is processed completely (all steps) before the next, so it stays in L1/L2.

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

// w = J^T (J v), one pass over J: for each row i, u_i = J[i,:].v, then w += u_i J[i,:].
// Four rows at a time for instruction-level parallelism in the row dots.
inline void gram(const float* __restrict J, const float* __restrict v, float* __restrict w, int64_t n) {
  for (int64_t k = 0; k < n; ++k) w[k] = 0.0f;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float* r0 = J + (i + 0) * n;
    const float* r1 = J + (i + 1) * n;
    const float* r2 = J + (i + 2) * n;
    const float* r3 = J + (i + 3) * n;
    float u0 = 0.0f, u1 = 0.0f, u2 = 0.0f, u3 = 0.0f;
#pragma omp simd reduction(+ : u0, u1, u2, u3)
    for (int64_t k = 0; k < n; ++k) {
      u0 += r0[k] * v[k];
      u1 += r1[k] * v[k];
      u2 += r2[k] * v[k];
      u3 += r3[k] * v[k];
    }
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) w[k] += u0 * r0[k] + u1 * r1[k] + u2 * r2[k] + u3 * r3[k];
  }
  for (; i < n; ++i) {
    const float* r = J + i * n;
    const float u = dot(r, v, n);
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) w[k] += u * r[k];
  }
}

void lanczos_one(const float* J, const float* v0, float* alpha, float* beta, int64_t n, int64_t steps,
                 float* v, float* v_prev, float* w) {
  const float breakdown = 1e3f * FLT_EPSILON;
  const float tiny = std::sqrt(FLT_MIN);
  const float norm0 = std::sqrt(dot(v0, v0, n));
  if (norm0 > 0.0f) {
    for (int64_t k = 0; k < n; ++k) v[k] = v0[k] / norm0;
  } else {
    for (int64_t k = 0; k < n; ++k) v[k] = 0.0f;
    v[0] = 1.0f;
  }
  for (int64_t k = 0; k < n; ++k) v_prev[k] = 0.0f;
  float b_prev = 0.0f;
  for (int64_t j = 0; j < steps; ++j) {
    gram(J, v, w, n);
    const float w_norm = std::sqrt(dot(w, w, n));
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) w[k] -= b_prev * v_prev[k];
    const float a = dot(w, v, n);
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) w[k] -= a * v[k];
    float b = std::sqrt(dot(w, w, n));
    const bool ok = (b > breakdown * w_norm) && (b > tiny);
    if (!ok) b = 0.0f;
    alpha[j] = a;
    beta[j] = b;
    // v_prev <- v ; v <- ok ? w / b : 0
    for (int64_t k = 0; k < n; ++k) {
      v_prev[k] = v[k];
      v[k] = ok ? w[k] / b : 0.0f;
    }
    b_prev = b;
  }
}

ffi::Error LanczosImpl(ffi::Buffer<ffi::F32> J, ffi::Buffer<ffi::F32> v0, ffi::ResultBuffer<ffi::F32> alpha,
                       ffi::ResultBuffer<ffi::F32> beta, int64_t steps) {
  auto jd = J.dimensions();
  auto vd = v0.dimensions();
  auto ad = alpha->dimensions();
  if (jd.size() < 2) return ffi::Error::InvalidArgument("J must have rank >= 2");
  const int64_t n = jd.back();
  if (jd[jd.size() - 2] != n) return ffi::Error::InvalidArgument("J must be square");
  if (vd.size() != jd.size() - 1 || vd.back() != n)
    return ffi::Error::InvalidArgument("v0 must have shape J.shape[:-1]");
  if (steps < 0 || ad.size() != vd.size() || ad.back() != steps)
    return ffi::Error::InvalidArgument("alpha/beta must have shape (..., steps)");
  if (n == 0) return ffi::Error::InvalidArgument("n must be positive");
  const int64_t batch = static_cast<int64_t>(v0.element_count()) / n;
  const float* Jp = J.typed_data();
  const float* vp = v0.typed_data();
  float* ap = alpha->typed_data();
  float* bp = beta->typed_data();
  std::vector<float> scratch(3 * n);
  for (int64_t b = 0; b < batch; ++b) {
    lanczos_one(Jp + b * n * n, vp + b * n, ap + b * steps, bp + b * steps, n, steps, scratch.data(),
                scratch.data() + n, scratch.data() + 2 * n);
  }
  return ffi::Error::Success();
}

// Largest eigenvalue of the symmetric tridiagonal (alpha[0:k], beta[0:k-1]) by Sturm-count
// bisection in double precision (Kahan 1966): count(x) = #{i : d_i < 0}, d_0 = a_0 - x,
// d_i = a_i - x - b_{i-1}^2 / d_{i-1} = number of eigenvalues below x.
double top_eigenvalue(const float* alpha, const float* beta, int64_t k) {
  if (k == 0) return 0.0;
  double lo = INFINITY, hi = -INFINITY;  // Gershgorin bounds
  for (int64_t i = 0; i < k; ++i) {
    const double r = (i > 0 ? std::fabs((double)beta[i - 1]) : 0.0) + (i + 1 < k ? std::fabs((double)beta[i]) : 0.0);
    lo = std::fmin(lo, (double)alpha[i] - r);
    hi = std::fmax(hi, (double)alpha[i] + r);
  }
  const double pivmin = DBL_MIN;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (!(mid > lo && mid < hi)) break;  // interval is one ulp wide
    int64_t below = 0;
    double d = 1.0;
    for (int64_t i = 0; i < k; ++i) {
      const double b2 = i > 0 ? (double)beta[i - 1] * (double)beta[i - 1] : 0.0;
      d = (double)alpha[i] - mid - (i > 0 ? b2 / d : 0.0);
      if (std::fabs(d) < pivmin) d = -pivmin;
      below += d < 0.0;
    }
    if (below == k) hi = mid; else lo = mid;  // all eigenvalues below mid: the top one is in [lo, mid]
  }
  return 0.5 * (lo + hi);
}

ffi::Error LanczosValueImpl(ffi::Buffer<ffi::F32> J, ffi::Buffer<ffi::F32> v0, ffi::ResultBuffer<ffi::F32> value,
                            int64_t steps) {
  auto jd = J.dimensions();
  auto vd = v0.dimensions();
  if (jd.size() < 2) return ffi::Error::InvalidArgument("J must have rank >= 2");
  const int64_t n = jd.back();
  if (jd[jd.size() - 2] != n || n == 0) return ffi::Error::InvalidArgument("J must be square, n > 0");
  if (vd.size() != jd.size() - 1 || vd.back() != n)
    return ffi::Error::InvalidArgument("v0 must have shape J.shape[:-1]");
  const int64_t batch = static_cast<int64_t>(v0.element_count()) / n;
  if (steps < 0 || static_cast<int64_t>(value->element_count()) != batch)
    return ffi::Error::InvalidArgument("value must have shape J.shape[:-2]");
  std::vector<float> scratch(3 * n + 2 * steps);
  float* a = scratch.data() + 3 * n;
  float* b = a + steps;
  for (int64_t i = 0; i < batch; ++i) {
    lanczos_one(J.typed_data() + i * n * n, v0.typed_data() + i * n, a, b, n, steps, scratch.data(),
                scratch.data() + n, scratch.data() + 2 * n);
    value->typed_data()[i] = static_cast<float>(std::sqrt(std::fmax(top_eigenvalue(a, b, steps), 0.0)));
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LanczosTopSingularValueF32, LanczosValueImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // J
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // value (...)
                                  .Attr<int64_t>("steps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LanczosTopSingularF32, LanczosImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // J
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // alpha
                                  .Ret<ffi::Buffer<ffi::F32>>()  // beta
                                  .Attr<int64_t>("steps"));
