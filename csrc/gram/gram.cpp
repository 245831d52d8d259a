// CPU kernel for gram (see gram.h for the contract).
//
// Work is split into column blocks of kGramRun * kLanes columns. For each block every pair of
// 4-row tiles (upper triangle only) is reduced in registers: kLanes independent accumulators
// per row pair, in the input precision, vectorised by the compiler. Block results are added in
// double to a per-thread T×T buffer; thread buffers are summed in thread order at the end, so
// the result is deterministic for a given thread count and clone (FMA or not: see PYMTL_CLONES).
#include "gram/gram.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/checks.h"
#include "common/cpu.h"

namespace pymtl {
namespace {

constexpr int64_t kTile = 4;
// Below this many multiply-adds the OpenMP wake-up costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t{1} << 18;

// Lanes of a short vector of the input type (common/cpu.h): 8 floats or 4 doubles.
template <typename S>
constexpr int kLanes = static_cast<int>(32 / sizeof(S));

// out[i][j] += sum_k a[i][k] * b[j][k] over k < n, with n <= kGramRun * kLanes<S>: each of the
// kLanes accumulator lanes sums at most kGramRun products in the input precision.
//   a, b  kTile row pointers each, [n] contiguous
//   out   [kTile, kTile] fp64
template <typename S>
__attribute__((always_inline)) inline void tile_dot(const S* const* a, const S* const* b,
                                                     int64_t n, double (*out)[kTile]) {
  constexpr int L = kLanes<S>;
  vec_t<S> acc[kTile][kTile];
  for (int i = 0; i < kTile; ++i) {
    for (int j = 0; j < kTile; ++j) acc[i][j] = vec_t<S>{};
  }
  int64_t k = 0;
  for (; k + L <= n; k += L) {
    vec_t<S> x[kTile];
    for (int i = 0; i < kTile; ++i) x[i] = load(a[i] + k);
    for (int j = 0; j < kTile; ++j) {
      const vec_t<S> y = load(b[j] + k);
      for (int i = 0; i < kTile; ++i) acc[i][j] += x[i] * y;
    }
  }
  S tail[kTile][kTile] = {};
  for (; k < n; ++k) {
    for (int i = 0; i < kTile; ++i) {
      for (int j = 0; j < kTile; ++j) tail[i][j] += a[i][k] * b[j][k];
    }
  }
  for (int i = 0; i < kTile; ++i) {
    for (int j = 0; j < kTile; ++j) {
      double s = static_cast<double>(tail[i][j]);
      for (int l = 0; l < L; ++l) s += static_cast<double>(acc[i][j][l]);
      out[i][j] += s;
    }
  }
}

// Adds the Gram of columns [c0, c0 + n) to acc ([T, T] fp64, upper triangle of tiles).
//   J      [T, ld]
//   zeros  [n] zero padding for the rows past T in the last tile
template <typename S>
__attribute__((always_inline)) inline void gram_block(const S* J, int64_t T, int64_t ld,
                                                       int64_t c0, int64_t n, const S* zeros,
                                                       double* acc) {
  const int64_t ntiles = (T + kTile - 1) / kTile;
  for (int64_t ti = 0; ti < ntiles; ++ti) {
    const S* a[kTile];
    for (int64_t i = 0; i < kTile; ++i) {
      const int64_t r = ti * kTile + i;
      a[i] = r < T ? J + r * ld + c0 : zeros;
    }
    for (int64_t tj = ti; tj < ntiles; ++tj) {
      const S* b[kTile];
      for (int64_t j = 0; j < kTile; ++j) {
        const int64_t r = tj * kTile + j;
        b[j] = r < T ? J + r * ld + c0 : zeros;
      }
      double out[kTile][kTile] = {};
      tile_dot<S>(a, b, n, out);
      for (int64_t i = 0; i < kTile; ++i) {
        const int64_t r = ti * kTile + i;
        if (r >= T) break;
        for (int64_t j = 0; j < kTile; ++j) {
          const int64_t c = tj * kTile + j;
          if (c >= T) break;
          acc[r * T + c] += out[i][j];
        }
      }
    }
  }
}

// On x86-64, three clones: AVX-512 (x86-64-v4), AVX2 + FMA (Haswell) and baseline, picked at
// load time by the CPU that runs them. They are put on the work done inside the OpenMP region,
// not on its caller: GCC outlines a parallel region into a function of its own, which does not
// inherit the caller's target, so clones of gram_cpu_* would all run baseline (SSE2) code.
#if defined(__x86_64__) && defined(__GNUC__)
#define PYMTL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define PYMTL_CLONES
#endif

// Adds the Gram of the column blocks [b0, b1) (kGramRun * kLanes columns each) to acc.
template <typename S>
__attribute__((always_inline)) inline void gram_blocks_impl(const S* J, int64_t T, int64_t P,
                                                             int64_t ld, int64_t b0, int64_t b1,
                                                             const S* zeros, double* acc) {
  const int64_t block = kGramRun * kLanes<S>;
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t c0 = blk * block;
    gram_block<S>(J, T, ld, c0, std::min(block, P - c0), zeros, acc);
  }
}

PYMTL_CLONES
void gram_blocks(const float* J, int64_t T, int64_t P, int64_t ld, int64_t b0, int64_t b1,
                 const float* zeros, double* acc) {
  gram_blocks_impl<float>(J, T, P, ld, b0, b1, zeros, acc);
}

PYMTL_CLONES
void gram_blocks(const double* J, int64_t T, int64_t P, int64_t ld, int64_t b0, int64_t b1,
                 const double* zeros, double* acc) {
  gram_blocks_impl<double>(J, T, P, ld, b0, b1, zeros, acc);
}

template <typename S>
void gram_impl(const S* J, int64_t T, int64_t P, int64_t ld, S* G) {
  PYMTL_CHECK(T >= 0 && P >= 0, "gram: negative size T=" << T << ", P=" << P);
  PYMTL_CHECK(T <= 1 || ld >= P, "gram: row stride " << ld << " is smaller than P=" << P);
  PYMTL_CHECK(T == 0 || (G != nullptr && (P == 0 || J != nullptr)), "gram: null pointer");
  const int64_t block = kGramRun * kLanes<S>;
  const int64_t nblocks = (P + block - 1) / block;
  const int nthreads = (T * T * P >= kParallelMinWork) ? max_threads() : 1;
  std::vector<double> partial(static_cast<size_t>(nthreads) * T * T, 0.0);
  const std::vector<S> zeros(static_cast<size_t>(block), S(0));

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    double* acc = partial.data() + static_cast<int64_t>(thread_id()) * T * T;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      gram_blocks(J, T, P, ld, blk, blk + 1, zeros.data(), acc);
    }
  }
  for (int64_t r = 0; r < T; ++r) {
    for (int64_t c = r; c < T; ++c) {
      double s = 0.0;
      for (int t = 0; t < nthreads; ++t) s += partial[static_cast<size_t>(t) * T * T + r * T + c];
      G[r * T + c] = static_cast<S>(s);
      G[c * T + r] = static_cast<S>(s);
    }
  }
}

}  // namespace

void gram_cpu_f32(const float* J, int64_t T, int64_t P, int64_t ld, float* G) {
  gram_impl<float>(J, T, P, ld, G);
}

void gram_cpu_f64(const double* J, int64_t T, int64_t P, int64_t ld, double* G) {
  gram_impl<double>(J, T, P, ld, G);
}

int64_t gram_cuda_splits(int64_t P) {
  // 65536 columns per split (256 threads x 256 columns each), at most 1024 splits.
  const int64_t per_split = int64_t{1} << 16;
  return std::clamp<int64_t>((P + per_split - 1) / per_split, 1, 1024);
}

}  // namespace pymtl
