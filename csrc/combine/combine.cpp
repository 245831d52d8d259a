// CPU kernel for combine (see combine.h for the contract).
//
// The columns are cut into blocks of kBlock, handed out by OpenMP. Within a block, each
// group's run of columns is cut into chunks of 256 bytes; a chunk is summed over the T rows in
// vector registers (acc = w_0 J_0, then acc += w_t J_t) and stored once. This reads J once and
// writes d once; summing row by row into d in L1 instead measured 1.7-1.9x slower at T = 10
// and 40 (one core), and fp64 accumulators 1.3-2.6x slower at T >= 10. The explicit vector
// type keeps the accumulators in registers (a plain float[64] array was kept on the stack).
#include "combine/combine.h"

#include <algorithm>
#include <cstring>

#include "common/checks.h"
#include "common/cpu.h"

namespace pymtl {
namespace {

constexpr int64_t kBlock = 2048;  // columns per work item
constexpr int kBlocksPerGrab = 8;  // OpenMP dynamic chunk: 16384 columns
// Below this many multiply-adds the OpenMP wake-up costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t{1} << 18;

// Lanes of a short vector of the input type (common/cpu.h): 8 floats or 4 doubles.
template <typename S>
constexpr int64_t kLanes = static_cast<int64_t>(32 / sizeof(S));
constexpr int kVecs = 8;  // vectors per chunk: 256 bytes, 8 AVX2 or 4 AVX-512 registers
template <typename S>
constexpr int64_t kChunk = kVecs * kLanes<S>;

// d[c0, c0 + kChunk) = sum_t wk[t] J[t, c0:...], t ascending, in vector registers.
//   J   [T, ld]
//   wk  [T]
template <typename S>
__attribute__((always_inline)) inline void combine_chunk(const S* J, int64_t T, int64_t ld,
                                                          const S* wk, int64_t c0, S* d) {
  constexpr int64_t L = kLanes<S>;
  vec_t<S> acc[kVecs], x;
  for (int v = 0; v < kVecs; ++v) {
    load<S>(x, J + c0 + v * L);
    acc[v] = x * wk[0];
  }
  for (int64_t t = 1; t < T; ++t) {
    const S wt = wk[t];
    const S* row = J + t * ld + c0;
    for (int v = 0; v < kVecs; ++v) {
      load<S>(x, row + v * L);
      acc[v] += x * wt;
    }
  }
  for (int v = 0; v < kVecs; ++v) std::memcpy(d + c0 + v * L, &acc[v], sizeof(acc[v]));
}

// The same for the columns [c0, c1), fewer than kChunk, one at a time.
template <typename S>
__attribute__((always_inline)) inline void combine_tail(const S* J, int64_t T, int64_t ld,
                                                         const S* wk, int64_t c0, int64_t c1,
                                                         S* d) {
  for (int64_t c = c0; c < c1; ++c) {
    S acc = wk[0] * J[c];
    for (int64_t t = 1; t < T; ++t) acc += wk[t] * J[t * ld + c];
    d[c] = acc;
  }
}

// d[c0, c1) for one group (weights wk [T]): full chunks, then the ragged tail.
template <typename S>
__attribute__((always_inline)) inline void combine_run(const S* J, int64_t T, int64_t ld,
                                                        const S* wk, int64_t c0, int64_t c1,
                                                        S* d) {
  int64_t c = c0;
  for (; c + kChunk<S> <= c1; c += kChunk<S>) combine_chunk<S>(J, T, ld, wk, c, d);
  combine_tail<S>(J, T, ld, wk, c, c1, d);
}

// d over the columns [c0, c1), which may cross group boundaries.
//   w       [K, T]
//   bounds  [K + 1]
template <typename S>
__attribute__((always_inline)) inline void combine_block_impl(const S* J, int64_t T, int64_t ld,
                                                               const S* w, int64_t K,
                                                               const int64_t* bounds, int64_t c0,
                                                               int64_t c1, S* d) {
  // the group of column c0: the last k with bounds[k] <= c0
  int64_t k = std::upper_bound(bounds, bounds + K + 1, c0) - bounds - 1;
  int64_t c = c0;
  while (c < c1) {
    const int64_t end = std::min(c1, bounds[k + 1]);
    if (end > c) combine_run<S>(J, T, ld, w + k * T, c, end, d);
    c = std::max(c, end);
    ++k;
  }
}

// Three clones on x86-64 (AVX-512, AVX2 + FMA, baseline), as in gram.cpp: they sit on the
// function called inside the OpenMP region, which does not inherit its caller's target.
#if defined(__x86_64__) && defined(__GNUC__)
#define PYMTL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define PYMTL_CLONES
#endif

PYMTL_CLONES
void combine_block(const float* J, int64_t T, int64_t ld, const float* w, int64_t K,
                   const int64_t* bounds, int64_t c0, int64_t c1, float* d) {
  combine_block_impl<float>(J, T, ld, w, K, bounds, c0, c1, d);
}

PYMTL_CLONES
void combine_block(const double* J, int64_t T, int64_t ld, const double* w, int64_t K,
                   const int64_t* bounds, int64_t c0, int64_t c1, double* d) {
  combine_block_impl<double>(J, T, ld, w, K, bounds, c0, c1, d);
}

template <typename S>
void combine_impl(const S* J, int64_t T, int64_t P, int64_t ld, const S* w, int64_t K,
                  const int64_t* bounds, S* d) {
  PYMTL_CHECK(T >= 0 && P >= 0 && K >= 1,
              "combine: bad sizes T=" << T << ", P=" << P << ", K=" << K);
  PYMTL_CHECK(T <= 1 || ld >= P, "combine: row stride " << ld << " is smaller than P=" << P);
  PYMTL_CHECK(bounds != nullptr && bounds[0] == 0 && bounds[K] == P,
              "combine: bounds must run from 0 to P=" << P);
  for (int64_t k = 0; k < K; ++k) {
    PYMTL_CHECK(bounds[k] <= bounds[k + 1], "combine: bounds must not decrease (bounds["
                                                << k << "]=" << bounds[k] << " > bounds["
                                                << k + 1 << "]=" << bounds[k + 1] << ")");
  }
  if (P == 0) return;
  PYMTL_CHECK(d != nullptr, "combine: null output");
  if (T == 0) {
    std::fill(d, d + P, S(0));
    return;
  }
  PYMTL_CHECK(J != nullptr && w != nullptr, "combine: null pointer");
  const int64_t nblocks = (P + kBlock - 1) / kBlock;
  const int nthreads = (T * P >= kParallelMinWork) ? max_threads() : 1;
  // Dynamic: a thread that the OS holds back (another process on its core) does not hold up
  // the others. Each column is summed in the same order whichever thread takes it.
#pragma omp parallel for schedule(dynamic, kBlocksPerGrab) num_threads(nthreads) if (nthreads > 1)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t c0 = blk * kBlock;
    combine_block(J, T, ld, w, K, bounds, c0, std::min(P, c0 + kBlock), d);
  }
}

}  // namespace

void combine_cpu_f32(const float* J, int64_t T, int64_t P, int64_t ld, const float* w,
                     int64_t K, const int64_t* bounds, float* d) {
  combine_impl<float>(J, T, P, ld, w, K, bounds, d);
}

void combine_cpu_f64(const double* J, int64_t T, int64_t P, int64_t ld, const double* w,
                     int64_t K, const int64_t* bounds, double* d) {
  combine_impl<double>(J, T, P, ld, w, K, bounds, d);
}

}  // namespace pymtl
