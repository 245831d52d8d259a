// CUDA kernels of the PCGrad and GradVac projection solvers (see projection.h).
//
// One block per group k, one thread per task i (T <= kProjectionCudaMaxTasks = 64). The block
// stages G[k] in shared memory; thread i runs the same row routine as the CPU with c and Gc in
// per-thread arrays. After a barrier the shared buffer is reused for the coefficient rows and
// thread t writes w[k, t] = sum_i c_i[t] over i ascending, as the CPU does. No host
// synchronisation and no atomics.
#include <cuda_runtime.h>


#include "common/checks.h"
#include "common/cuda.cuh"
#include "projection/projection.h"

namespace pymtl {
namespace {

constexpr int kMaxT = static_cast<int>(kProjectionCudaMaxTasks);

// Loads G [T, T] into shared (sG [T * T]).
__device__ inline void stage(const double* __restrict__ G, int64_t T, double* sG) {
  for (int64_t l = threadIdx.x; l < T * T; l += blockDim.x) sG[l] = G[l];
  __syncthreads();
}

// Writes the rows c (thread i's c_i) into sG, then w [T] = column sums in row order.
__device__ inline void reduce_rows(const double* c, int64_t T, double* sG, double* w) {
  __syncthreads();  // every thread is done reading G
  const int64_t i = threadIdx.x;
  if (i < T) {
    for (int64_t t = 0; t < T; ++t) sG[i * T + t] = c[t];
  }
  __syncthreads();
  if (i < T) {
    double s = 0.0;
    for (int64_t r = 0; r < T; ++r) s += sG[r * T + i];
    w[i] = s;
  }
}

//   G [T, T]; orders [T, T-1]; w [T]
__global__ void __launch_bounds__(kMaxT)
pcgrad_kernel(const double* __restrict__ G, int64_t T, const int64_t* __restrict__ orders,
              double* __restrict__ w) {
  __shared__ double sG[kMaxT * kMaxT];
  stage(G, T, sG);
  double c[kMaxT], gc[kMaxT];
  const int64_t i = threadIdx.x;
  if (i < T) pcgrad_row(sG, T, i, orders + i * (T - 1), c, gc);
  reduce_rows(c, T, sG, w);
}

//   G, target, new_target [K, T, T]; orders [T, T-1]; w [K, T]; block k = group k
__global__ void __launch_bounds__(kMaxT)
gradvac_kernel(const double* __restrict__ G, const double* __restrict__ target,
               const int64_t* __restrict__ orders, int64_t T, double beta,
               double* __restrict__ w, double* __restrict__ new_target) {
  __shared__ double sG[kMaxT * kMaxT];
  const int64_t k = blockIdx.x;
  const int64_t TT = T * T;
  stage(G + k * TT, T, sG);
  double c[kMaxT], gc[kMaxT];
  const int64_t i = threadIdx.x;
  if (i < T) {
    const double* row = target + k * TT + i * T;
    double* out = new_target + k * TT + i * T;
    for (int64_t l = 0; l < T; ++l) out[l] = row[l];  // untouched entries keep their value
    gradvac_row(sG, T, i, orders + i * (T - 1), row, beta, c, gc, out);
  }
  reduce_rows(c, T, sG, w + k * T);
}

}  // namespace

void pcgrad_weights_cuda(const double* G, int64_t T, const int64_t* orders, double* w,
                         std::uintptr_t stream) {
  PYMTL_CHECK(T >= 0 && T <= kProjectionCudaMaxTasks,
              "pcgrad_weights: the CUDA kernel takes 0 to " << kProjectionCudaMaxTasks
                                                            << " tasks, got T=" << T);
  if (T == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  pcgrad_kernel<<<1, kMaxT, 0, s>>>(G, T, orders, w);
  check_launch("projection_cuda", "pcgrad_kernel launch");
}

void gradvac_weights_cuda(const double* G, const double* target, const int64_t* orders,
                          int64_t K, int64_t T, double beta, double* w, double* new_target,
                          std::uintptr_t stream) {
  PYMTL_CHECK(K >= 0 && K <= 0x7fffffff, "gradvac_weights: bad number of groups K=" << K);
  PYMTL_CHECK(T >= 0 && T <= kProjectionCudaMaxTasks,
              "gradvac_weights: the CUDA kernel takes 0 to " << kProjectionCudaMaxTasks
                                                             << " tasks, got T=" << T);
  if (K == 0 || T == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  gradvac_kernel<<<static_cast<unsigned>(K), kMaxT, 0, s>>>(G, target, orders, T, beta, w,
                                                             new_target);
  check_launch("projection_cuda", "gradvac_kernel launch");
}

}  // namespace pymtl
