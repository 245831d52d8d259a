// CUDA kernels of GradDrop (see graddrop.h for the contract).
//
// signed_sum: one thread per (t, n), a loop over b; a warp reads 32 consecutive n (coalesced).
// combine: pass 1, one thread per n, writes coef [T, N] with the same routine as the CPU;
// pass 2, one thread per (b, n), d[b, n] = sum_t coef[t, n] J[t, b, n] over t ascending.
// Grid-stride loops; launched on the caller's stream; no atomics.
#include <cuda_runtime.h>

#include <algorithm>

#include "common/checks.h"
#include "common/cuda.cuh"
#include "graddrop/graddrop.h"

namespace pymtl {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;

unsigned blocks_for(int64_t n) {
  const int64_t blocks = std::min(kMaxBlocks, (n + kThreads - 1) / kThreads);
  return static_cast<unsigned>(std::max<int64_t>(1, blocks));
}

__device__ inline int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

//   J [T, B, N]; z [B, N]; S [T, N]
template <typename Sc>
__global__ void signed_sum_kernel(const Sc* __restrict__ J, const Sc* __restrict__ z, int64_t T,
                                  int64_t B, int64_t N, Sc* __restrict__ S) {
  for (int64_t idx = first_index(); idx < T * N; idx += grid_stride()) {
    const int64_t t = idx / N;
    const int64_t n = idx % N;
    Sc acc = Sc(0);
    for (int64_t b = 0; b < B; ++b) acc += graddrop_sign(z[b * N + n]) * J[(t * B + b) * N + n];
    S[idx] = acc;
  }
}

//   S [T, N]; u [N]; coef [T, N]
template <typename Sc>
__global__ void coef_kernel(const Sc* __restrict__ S, const Sc* __restrict__ u, int64_t T,
                            int64_t N, Sc leak, Sc keep, Sc* __restrict__ coef) {
  for (int64_t n = first_index(); n < N; n += grid_stride()) {
    graddrop_coef<Sc>(S + n, N, T, u[n], leak, keep, coef + n, N);
  }
}

//   J [T, B, N]; coef [T, N]; d [B, N]
template <typename Sc>
__global__ void masked_sum_kernel(const Sc* __restrict__ J, const Sc* __restrict__ coef,
                                  int64_t T, int64_t B, int64_t N, Sc* __restrict__ d) {
  for (int64_t idx = first_index(); idx < B * N; idx += grid_stride()) {
    const int64_t n = idx % N;
    Sc acc = Sc(0);
    for (int64_t t = 0; t < T; ++t) acc += coef[t * N + n] * J[t * B * N + idx];
    d[idx] = acc;
  }
}

template <typename Sc>
void signed_sum_cuda(const Sc* J, const Sc* z, int64_t T, int64_t B, int64_t N, Sc* S,
                     std::uintptr_t stream) {
  PYMTL_CHECK(T >= 0 && B >= 0 && N >= 0,
              "graddrop_signed_sum: negative size T=" << T << ", B=" << B << ", N=" << N);
  if (T == 0 || N == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  signed_sum_kernel<Sc><<<blocks_for(T * N), kThreads, 0, s>>>(J, z, T, B, N, S);
  check_launch("graddrop_cuda", "signed_sum_kernel launch");
}

template <typename Sc>
void combine_cuda(const Sc* J, const Sc* S, const Sc* u, double leak, int64_t T, int64_t B,
                  int64_t N, Sc* coef, Sc* d, std::uintptr_t stream) {
  PYMTL_CHECK(T >= 0 && B >= 0 && N >= 0,
              "graddrop_combine: negative size T=" << T << ", B=" << B << ", N=" << N);
  PYMTL_CHECK(leak >= 0.0 && leak <= 1.0, "graddrop_combine: leak must be in [0, 1], got "
                                              << leak);
  if (B == 0 || N == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (T > 0) {
    coef_kernel<Sc><<<blocks_for(N), kThreads, 0, s>>>(
        S, u, T, N, static_cast<Sc>(leak), static_cast<Sc>(1.0 - leak), coef);
    check_launch("graddrop_cuda", "coef_kernel launch");
  }
  masked_sum_kernel<Sc><<<blocks_for(B * N), kThreads, 0, s>>>(J, coef, T, B, N, d);
  check_launch("graddrop_cuda", "masked_sum_kernel launch");
}

}  // namespace

void graddrop_signed_sum_cuda_f32(const float* J, const float* z, int64_t T, int64_t B,
                                  int64_t N, float* S, std::uintptr_t stream) {
  signed_sum_cuda<float>(J, z, T, B, N, S, stream);
}

void graddrop_signed_sum_cuda_f64(const double* J, const double* z, int64_t T, int64_t B,
                                  int64_t N, double* S, std::uintptr_t stream) {
  signed_sum_cuda<double>(J, z, T, B, N, S, stream);
}

void graddrop_combine_cuda_f32(const float* J, const float* S, const float* u, double leak,
                               int64_t T, int64_t B, int64_t N, float* coef, float* d,
                               std::uintptr_t stream) {
  combine_cuda<float>(J, S, u, leak, T, B, N, coef, d, stream);
}

void graddrop_combine_cuda_f64(const double* J, const double* S, const double* u, double leak,
                               int64_t T, int64_t B, int64_t N, double* coef, double* d,
                               std::uintptr_t stream) {
  combine_cuda<double>(J, S, u, leak, T, B, N, coef, d, stream);
}

}  // namespace pymtl
