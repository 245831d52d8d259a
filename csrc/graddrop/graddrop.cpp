// CPU kernels of GradDrop (see graddrop.h for the contract).
//
// OpenMP over blocks of kBlock columns n, handed out dynamically (a thread held back by another
// process does not hold up the others; the results do not depend on who takes a block). signed_sum: the block of S [T, kBlock] stays in
// cache while the samples stream through (S += sign(z_b) J_tb, b ascending). combine: the
// block's coefficients [T, kBlock] are computed once into a per-thread buffer; then each
// sample's row of d is summed over t in vector registers, 256 bytes at a time, stored once.
// Every loop is unit-stride and branch-free, so GCC vectorises it.
#include "graddrop/graddrop.h"

#include <algorithm>
#include <vector>

#include "common/checks.h"

namespace pymtl {
namespace {

// Columns per work item: runs of 16 KiB (fp32) per row of J. 4 KiB runs (one page, where
// the hardware prefetchers stop) measured 1.3-1.4x slower.
constexpr int64_t kBlock = 4096;
// Columns summed in registers at once in combine: 256 bytes.
template <typename Sc>
constexpr int64_t kChunk = static_cast<int64_t>(256 / sizeof(Sc));
// Below this many multiply-adds the OpenMP wake-up costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t{1} << 18;

#if defined(__x86_64__) && defined(__GNUC__)
#define PYMTL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define PYMTL_CLONES
#endif

// S[:, n0:n1] for J [T, B, N], z [B, N], S [T, N]; sg [kBlock] scratch. For each sample b
// the signs are computed once, then every task's block of S (T kBlock values, in L2) gets
// sign(z_b) J_tb added: J is read once, in runs of kBlock values. (One task at a time with
// the signs recomputed per task measured 25% slower.)
template <typename Sc>
__attribute__((always_inline)) inline void signed_sum_block_impl(const Sc* J, const Sc* z,
                                                                  int64_t T, int64_t B,
                                                                  int64_t N, int64_t n0,
                                                                  int64_t n1, Sc* sg, Sc* S) {
  const int64_t n = n1 - n0;
  for (int64_t t = 0; t < T; ++t) {
    Sc* __restrict__ out = S + t * N + n0;
    for (int64_t c = 0; c < n; ++c) out[c] = Sc(0);
  }
  for (int64_t b = 0; b < B; ++b) {
    const Sc* __restrict__ zb = z + b * N + n0;
    Sc* __restrict__ sb = sg;
    for (int64_t c = 0; c < n; ++c) sb[c] = graddrop_sign(zb[c]);
    for (int64_t t = 0; t < T; ++t) {
      Sc* __restrict__ out = S + t * N + n0;
      const Sc* __restrict__ jb = J + (t * B + b) * N + n0;
      for (int64_t c = 0; c < n; ++c) out[c] += sb[c] * jb[c];
    }
  }
}

// coef[t, 0:n] = leak + (1 - leak) M[t, n0:n0+n]: graddrop_coef's arithmetic, written as
// loops over the columns so that they vectorise.  S [T, N], u [N], coef [T, kBlock],
// sum and mag [kBlock] scratch.
template <typename Sc>
__attribute__((always_inline)) inline void coef_block(const Sc* S, const Sc* u, Sc leak, Sc keep,
                                                       int64_t T, int64_t N, int64_t n0,
                                                       int64_t n, Sc* sum, Sc* mag, Sc* coef) {
  for (int64_t c = 0; c < n; ++c) sum[c] = mag[c] = Sc(0);
  for (int64_t t = 0; t < T; ++t) {
    const Sc* __restrict__ st = S + t * N + n0;
    for (int64_t c = 0; c < n; ++c) {
      sum[c] += st[c];
      mag[c] += st[c] < Sc(0) ? -st[c] : st[c];
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    sum[c] = Sc(0.5) * (Sc(1) + sum[c] / (mag[c] + static_cast<Sc>(kGradDropEps)));  // purity
  }
  for (int64_t t = 0; t < T; ++t) {
    const Sc* __restrict__ st = S + t * N + n0;
    Sc* __restrict__ ct = coef + t * kBlock;
    for (int64_t c = 0; c < n; ++c) {
      const Sc p = sum[c], uc = u[n0 + c], s = st[c];
      const bool kept = ((p > uc) & (s > Sc(0))) | ((p < uc) & (s < Sc(0)));
      ct[c] = kept ? leak + keep : leak;
    }
  }
}

// d[b, n0+c : n0+c+m] = sum_t coef[t, c:c+m] J[t, b, n0+c : ...] for m <= kChunk<Sc>; with
// m == kChunk<Sc> (a compile-time length) the sums stay in vector registers.
template <typename Sc>
__attribute__((always_inline)) inline void masked_chunk(const Sc* J, const Sc* coef, int64_t T,
                                                         int64_t B, int64_t N, int64_t b,
                                                         int64_t n0, int64_t c, int64_t m,
                                                         Sc* d) {
  Sc acc[kChunk<Sc>];
  for (int64_t j = 0; j < m; ++j) acc[j] = Sc(0);
  for (int64_t t = 0; t < T; ++t) {
    const Sc* __restrict__ ct = coef + t * kBlock + c;
    const Sc* __restrict__ jt = J + (t * B + b) * N + n0 + c;
    for (int64_t j = 0; j < m; ++j) acc[j] += ct[j] * jt[j];
  }
  Sc* __restrict__ out = d + b * N + n0 + c;
  for (int64_t j = 0; j < m; ++j) out[j] = acc[j];
}

// d[:, n0:n1] for J [T, B, N], S [T, N], u [N], d [B, N]; scratch [T + 2, kBlock].
template <typename Sc>
__attribute__((always_inline)) inline void combine_block_impl(const Sc* J, const Sc* S,
                                                               const Sc* u, Sc leak, Sc keep,
                                                               int64_t T, int64_t B, int64_t N,
                                                               int64_t n0, int64_t n1,
                                                               Sc* scratch, Sc* d) {
  const int64_t n = n1 - n0;
  Sc* coef = scratch + 2 * kBlock;
  coef_block<Sc>(S, u, leak, keep, T, N, n0, n, scratch, scratch + kBlock, coef);
  for (int64_t b = 0; b < B; ++b) {
    int64_t c = 0;
    for (; c + kChunk<Sc> <= n; c += kChunk<Sc>) {
      masked_chunk<Sc>(J, coef, T, B, N, b, n0, c, kChunk<Sc>, d);
    }
    if (c < n) masked_chunk<Sc>(J, coef, T, B, N, b, n0, c, n - c, d);
  }
}

PYMTL_CLONES
void signed_sum_block(const float* J, const float* z, int64_t T, int64_t B, int64_t N,
                      int64_t n0, int64_t n1, float* sg, float* S) {
  signed_sum_block_impl<float>(J, z, T, B, N, n0, n1, sg, S);
}

PYMTL_CLONES
void signed_sum_block(const double* J, const double* z, int64_t T, int64_t B, int64_t N,
                      int64_t n0, int64_t n1, double* sg, double* S) {
  signed_sum_block_impl<double>(J, z, T, B, N, n0, n1, sg, S);
}

PYMTL_CLONES
void combine_block(const float* J, const float* S, const float* u, float leak, float keep,
                   int64_t T, int64_t B, int64_t N, int64_t n0, int64_t n1, float* scratch,
                   float* d) {
  combine_block_impl<float>(J, S, u, leak, keep, T, B, N, n0, n1, scratch, d);
}

PYMTL_CLONES
void combine_block(const double* J, const double* S, const double* u, double leak, double keep,
                   int64_t T, int64_t B, int64_t N, int64_t n0, int64_t n1, double* scratch,
                   double* d) {
  combine_block_impl<double>(J, S, u, leak, keep, T, B, N, n0, n1, scratch, d);
}

void check_sizes(const char* op, int64_t T, int64_t B, int64_t N) {
  PYMTL_CHECK(T >= 0 && B >= 0 && N >= 0,
              op << ": negative size T=" << T << ", B=" << B << ", N=" << N);
}

int threads_for(int64_t T, int64_t B, int64_t N) {
  return (T * B * N >= kParallelMinWork) ? max_threads() : 1;
}

template <typename Sc>
void signed_sum_impl(const Sc* J, const Sc* z, int64_t T, int64_t B, int64_t N, Sc* S) {
  check_sizes("graddrop_signed_sum", T, B, N);
  if (T == 0 || N == 0) return;
  PYMTL_CHECK(S != nullptr && (B == 0 || (J != nullptr && z != nullptr)),
              "graddrop_signed_sum: null pointer");
  const int64_t nblocks = (N + kBlock - 1) / kBlock;
  const int nthreads = threads_for(T, B, N);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    std::vector<Sc> sg(static_cast<size_t>(kBlock));
#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t n0 = blk * kBlock;
      signed_sum_block(J, z, T, B, N, n0, std::min(N, n0 + kBlock), sg.data(), S);
    }
  }
}

template <typename Sc>
void combine_impl(const Sc* J, const Sc* S, const Sc* u, double leak, int64_t T, int64_t B,
                  int64_t N, Sc* d) {
  check_sizes("graddrop_combine", T, B, N);
  PYMTL_CHECK(leak >= 0.0 && leak <= 1.0, "graddrop_combine: leak must be in [0, 1], got "
                                              << leak);
  if (B == 0 || N == 0) return;
  PYMTL_CHECK(d != nullptr && (T == 0 || (J != nullptr && S != nullptr && u != nullptr)),
              "graddrop_combine: null pointer");
  const int64_t nblocks = (N + kBlock - 1) / kBlock;
  const int nthreads = threads_for(T, B, N);
  const Sc lk = static_cast<Sc>(leak);
  const Sc keep = static_cast<Sc>(1.0 - leak);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    std::vector<Sc> scratch(static_cast<size_t>((T + 2) * kBlock));
#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t n0 = blk * kBlock;
      combine_block(J, S, u, lk, keep, T, B, N, n0, std::min(N, n0 + kBlock), scratch.data(),
                    d);
    }
  }
}

}  // namespace

void graddrop_signed_sum_cpu_f32(const float* J, const float* z, int64_t T, int64_t B, int64_t N,
                                 float* S) {
  signed_sum_impl<float>(J, z, T, B, N, S);
}

void graddrop_signed_sum_cpu_f64(const double* J, const double* z, int64_t T, int64_t B,
                                 int64_t N, double* S) {
  signed_sum_impl<double>(J, z, T, B, N, S);
}

void graddrop_combine_cpu_f32(const float* J, const float* S, const float* u, double leak,
                              int64_t T, int64_t B, int64_t N, float* d) {
  combine_impl<float>(J, S, u, leak, T, B, N, d);
}

void graddrop_combine_cpu_f64(const double* J, const double* S, const double* u, double leak,
                              int64_t T, int64_t B, int64_t N, double* d) {
  combine_impl<double>(J, S, u, leak, T, B, N, d);
}

}  // namespace pymtl
