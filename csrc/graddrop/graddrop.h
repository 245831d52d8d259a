// GradDrop sign-purity masking on the gradients of a shared activation (SPEC-methods §2.11).
//
//   J     [T, B, N]  per-task gradients of the activation Z, one row of N per sample, contiguous
//   z     [B, N]     the activation values (only their signs are used)
//   S     [T, N]     S[t, n] = sum_b sign(z[b, n]) J[t, b, n]
//   u     [N]        uniform(0, 1) draws
//   leak  scalar in [0, 1]
//   d     [B, N]     d[b, n] = sum_t (leak + (1 - leak) M[t, n]) J[t, b, n], with
//                    P[n] = ½ (1 + sum_t S[t, n] / (sum_t |S[t, n]| + 1e-7)) and
//                    M[t, n] = 1[P > u] 1[S > 0] + 1[P < u] 1[S < 0]
//   coef  [T, N]     CUDA scratch for leak + (1 - leak) M
//
// All arithmetic is in the input precision, summed in ascending index order (b for S, t for P
// and d), the same on every device; the CPU may contract multiply-adds into FMAs. sign(0) = 0,
// and a NaN in z gives NaN in S, as torch.sign does.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace pymtl {

constexpr double kGradDropEps = 1e-7;

// sign(z) in {-1, 0, 1}, and NaN for NaN. Branch-free (a select of two computed values), so
// that the compiler vectorises the loops that use it.
template <typename S>
PYMTL_HD inline S graddrop_sign(S z) {
  const S sign = static_cast<S>(z > S(0)) - static_cast<S>(z < S(0));
  return z == z ? sign : z;
}

// coef[t * cstride] = leak + (1 - leak) M[t] for one column n, with Sc[t * stride] = S[t, n],
// keep = 1 - leak (both rounded to S once, as a PyTorch scalar is).
template <typename S>
PYMTL_HD inline void graddrop_coef(const S* Sc, int64_t stride, int64_t T, S u, S leak, S keep,
                                   S* coef, int64_t cstride) {
  S sum = S(0), mag = S(0);
  for (int64_t t = 0; t < T; ++t) {
    const S s = Sc[t * stride];
    sum += s;
    mag += s < S(0) ? -s : s;
  }
  const S purity = S(0.5) * (S(1) + sum / (mag + static_cast<S>(kGradDropEps)));
  for (int64_t t = 0; t < T; ++t) {
    const S s = Sc[t * stride];
    const bool kept = (purity > u && s > S(0)) || (purity < u && s < S(0));
    coef[t * cstride] = kept ? leak + keep : leak;
  }
}

void graddrop_signed_sum_cpu_f32(const float* J, const float* z, int64_t T, int64_t B, int64_t N,
                                 float* S);
void graddrop_signed_sum_cpu_f64(const double* J, const double* z, int64_t T, int64_t B,
                                 int64_t N, double* S);
void graddrop_combine_cpu_f32(const float* J, const float* S, const float* u, double leak,
                              int64_t T, int64_t B, int64_t N, float* d);
void graddrop_combine_cpu_f64(const double* J, const double* S, const double* u, double leak,
                              int64_t T, int64_t B, int64_t N, double* d);

#ifdef PYMTL_HAVE_CUDA
// stream is a cudaStream_t as an integer; coef [T, N] is scratch allocated by the caller.
void graddrop_signed_sum_cuda_f32(const float* J, const float* z, int64_t T, int64_t B,
                                  int64_t N, float* S, std::uintptr_t stream);
void graddrop_signed_sum_cuda_f64(const double* J, const double* z, int64_t T, int64_t B,
                                  int64_t N, double* S, std::uintptr_t stream);
void graddrop_combine_cuda_f32(const float* J, const float* S, const float* u, double leak,
                               int64_t T, int64_t B, int64_t N, float* coef, float* d,
                               std::uintptr_t stream);
void graddrop_combine_cuda_f64(const double* J, const double* S, const double* u, double leak,
                               int64_t T, int64_t B, int64_t N, double* coef, double* d,
                               std::uintptr_t stream);
#endif

}  // namespace pymtl
