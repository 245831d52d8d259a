// CUDA kernel for gram (see gram.h for the contract).
//
// Pass 1 (gram_partial): block (p, s) reduces the 4x4 tile pair p over column split s. Each
// thread walks the split with a stride of the block size, sums products in the input precision
// over runs of kGramRun columns and adds each run to fp64 registers; the block then reduces
// its 16 fp64 values (warp shuffles, then shared memory) into work[s].
// Pass 2 (gram_finalize): G[i][j] = sum over splits in split order. Deterministic: no atomics.
#include <cuda_runtime.h>


#include "common/checks.h"
#include "common/cuda.cuh"
#include "gram/gram.h"

namespace pymtl {
namespace {

constexpr int kTile = 4;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ inline void tile_pair(int64_t p, int64_t ntiles, int64_t* ti, int64_t* tj) {
  // p enumerates (ti, tj) with ti <= tj row by row.
  int64_t row = 0;
  int64_t left = p;
  while (left >= ntiles - row) {
    left -= ntiles - row;
    ++row;
  }
  *ti = row;
  *tj = row + left;
}

//   J     [T, ld]
//   work  [splits, T, T] fp64; this kernel writes the entries of its tile pair
template <typename S>
__global__ void __launch_bounds__(kThreads)
gram_partial(const S* __restrict__ J, int64_t T, int64_t P, int64_t ld, int64_t ntiles,
             int64_t per_split, double* __restrict__ work) {
  int64_t ti, tj;
  tile_pair(blockIdx.x, ntiles, &ti, &tj);
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * per_split;
  const int64_t c1 = min(P, c0 + per_split);

  const S* a[kTile];
  const S* b[kTile];
  bool va[kTile], vb[kTile];
  for (int i = 0; i < kTile; ++i) {
    va[i] = ti * kTile + i < T;
    vb[i] = tj * kTile + i < T;
    a[i] = J + (va[i] ? (ti * kTile + i) * ld : 0);
    b[i] = J + (vb[i] ? (tj * kTile + i) * ld : 0);
  }

  double total[kTile][kTile] = {};
  S run[kTile][kTile] = {};
  int count = 0;
  for (int64_t k = c0 + threadIdx.x; k < c1; k += kThreads) {
    S x[kTile], y[kTile];
    for (int i = 0; i < kTile; ++i) {
      x[i] = va[i] ? a[i][k] : S(0);
      y[i] = vb[i] ? b[i][k] : S(0);
    }
    for (int i = 0; i < kTile; ++i)
      for (int j = 0; j < kTile; ++j) run[i][j] += x[i] * y[j];
    if (++count == kGramRun) {
      for (int i = 0; i < kTile; ++i)
        for (int j = 0; j < kTile; ++j) {
          total[i][j] += static_cast<double>(run[i][j]);
          run[i][j] = S(0);
        }
      count = 0;
    }
  }

  __shared__ double smem[kWarps][kTile * kTile];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int i = 0; i < kTile; ++i) {
    for (int j = 0; j < kTile; ++j) {
      double v = total[i][j] + static_cast<double>(run[i][j]);
      for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
      if (lane == 0) smem[warp][i * kTile + j] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < kTile * kTile) {
    const int i = threadIdx.x / kTile;
    const int j = threadIdx.x % kTile;
    double v = 0.0;
    for (int w = 0; w < kWarps; ++w) v += smem[w][threadIdx.x];
    const int64_t r = ti * kTile + i;
    const int64_t c = tj * kTile + j;
    if (r < T && c < T) {
      double* out = work + static_cast<int64_t>(blockIdx.y) * T * T;
      out[r * T + c] = v;
      out[c * T + r] = v;
    }
  }
}

//   work [splits, T, T] fp64 -> G [T, T]
template <typename S>
__global__ void gram_finalize(const double* __restrict__ work, int64_t T, int64_t splits,
                              S* __restrict__ G) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= T * T) return;
  double s = 0.0;
  for (int64_t k = 0; k < splits; ++k) s += work[k * T * T + idx];
  G[idx] = static_cast<S>(s);
}

template <typename S>
void gram_cuda_impl(const S* J, int64_t T, int64_t P, int64_t ld, S* G, double* work,
                    std::uintptr_t stream) {
  PYMTL_CHECK(T >= 0 && P >= 0, "gram: negative size T=" << T << ", P=" << P);
  PYMTL_CHECK(T <= 1 || ld >= P, "gram: row stride " << ld << " is smaller than P=" << P);
  if (T == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t splits = gram_cuda_splits(P);
  const int64_t per_split = P == 0 ? 1 : (P + splits - 1) / splits;
  const int64_t ntiles = (T + kTile - 1) / kTile;
  const dim3 grid(static_cast<unsigned>(ntiles * (ntiles + 1) / 2), static_cast<unsigned>(splits));
  gram_partial<S><<<grid, kThreads, 0, s>>>(J, T, P, ld, ntiles, per_split, work);
  check_launch("gram_cuda", "gram_partial launch");
  const int64_t n = T * T;
  gram_finalize<S><<<static_cast<unsigned>((n + 255) / 256), 256, 0, s>>>(work, T, splits, G);
  check_launch("gram_cuda", "gram_finalize launch");
}

}  // namespace

void gram_cuda_f32(const float* J, int64_t T, int64_t P, int64_t ld, float* G, double* work,
                   std::uintptr_t stream) {
  gram_cuda_impl<float>(J, T, P, ld, G, work, stream);
}

void gram_cuda_f64(const double* J, int64_t T, int64_t P, int64_t ld, double* G, double* work,
                   std::uintptr_t stream) {
  gram_cuda_impl<double>(J, T, P, ld, G, work, stream);
}

}  // namespace pymtl
