// CUDA kernel for combine (see combine.h for the contract).
//
// One thread per column (grid-stride loop): it finds its group by binary search in bounds,
// then sums w[k, t] J[t, p] over t ascending in the input precision. A warp reads 32
// consecutive columns of each row (coalesced), and its threads almost always share one group,
// so the reads of w and bounds are broadcasts. When they fit in kSharedBytes, w and bounds are
// staged in shared memory once per block.
#include <cuda_runtime.h>

#include <algorithm>

#include "combine/combine.h"
#include "common/checks.h"
#include "common/cuda.cuh"

namespace pymtl {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
constexpr int64_t kSharedBytes = 16 * 1024;

//   J [T, ld]; w [K, T]; bounds [K + 1]; d [P]
template <typename S>
__global__ void __launch_bounds__(kThreads)
combine_kernel(const S* __restrict__ J, int64_t T, int64_t P, int64_t ld, const S* __restrict__ w,
               int64_t K, const int64_t* __restrict__ bounds, bool staged, S* __restrict__ d) {
  extern __shared__ int64_t smem[];  // [K + 1] bounds, then [K, T] weights
  const int64_t* b = bounds;
  const S* wt = w;
  if (staged) {
    int64_t* sb = smem;
    S* sw = reinterpret_cast<S*>(smem + K + 1);
    for (int64_t i = threadIdx.x; i <= K; i += blockDim.x) sb[i] = bounds[i];
    for (int64_t i = threadIdx.x; i < K * T; i += blockDim.x) sw[i] = w[i];
    __syncthreads();
    b = sb;
    wt = sw;
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += stride) {
    int64_t lo = 0, hi = K;  // the last k with b[k] <= p (b[0] = 0 <= p < b[K] = P)
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (b[mid] <= p) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const S* wk = wt + lo * T;
    S acc = wk[0] * J[p];
    for (int64_t t = 1; t < T; ++t) acc += wk[t] * J[t * ld + p];
    d[p] = acc;
  }
}

template <typename S>
__global__ void fill_zero(S* d, int64_t P) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += stride)
    d[p] = S(0);
}

template <typename S>
void combine_cuda_impl(const S* J, int64_t T, int64_t P, int64_t ld, const S* w, int64_t K,
                       const int64_t* bounds, S* d, std::uintptr_t stream) {
  PYMTL_CHECK(T >= 0 && P >= 0 && K >= 1,
              "combine: bad sizes T=" << T << ", P=" << P << ", K=" << K);
  PYMTL_CHECK(T <= 1 || ld >= P, "combine: row stride " << ld << " is smaller than P=" << P);
  if (P == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const unsigned blocks =
      static_cast<unsigned>(std::min(kMaxBlocks, (P + kThreads - 1) / kThreads));
  if (T == 0) {
    fill_zero<S><<<blocks, kThreads, 0, s>>>(d, P);
    check_launch("combine_cuda", "fill_zero launch");
    return;
  }
  const int64_t shared = (K + 1) * static_cast<int64_t>(sizeof(int64_t)) +
                         K * T * static_cast<int64_t>(sizeof(S));
  const bool staged = shared <= kSharedBytes;
  combine_kernel<S><<<blocks, kThreads, staged ? static_cast<size_t>(shared) : 0, s>>>(
      J, T, P, ld, w, K, bounds, staged, d);
  check_launch("combine_cuda", "combine_kernel launch");
}

}  // namespace

void combine_cuda_f32(const float* J, int64_t T, int64_t P, int64_t ld, const float* w,
                      int64_t K, const int64_t* bounds, float* d, std::uintptr_t stream) {
  combine_cuda_impl<float>(J, T, P, ld, w, K, bounds, d, stream);
}

void combine_cuda_f64(const double* J, int64_t T, int64_t P, int64_t ld, const double* w,
                      int64_t K, const int64_t* bounds, double* d, std::uintptr_t stream) {
  combine_cuda_impl<double>(J, T, P, ld, w, K, bounds, d, stream);
}

}  // namespace pymtl
