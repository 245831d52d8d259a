// gram: G = J Jᵀ for the per-task gradient matrix J.
//
//   J  [T, P]  row-major rows of length P, row stride ld >= P (unit column stride)
//   G  [T, T]  dense, symmetric, written in full
//
// Accumulation: products are summed in the input precision over short runs (at most
// kGramRun elements per accumulator lane), and the runs are summed in double. For fp32 input
// the error is therefore that of a length-kGramRun fp32 sum, not of a length-P one.
#pragma once

#include <cstdint>

namespace pymtl {

constexpr int64_t kGramRun = 256;

void gram_cpu_f32(const float* J, int64_t T, int64_t P, int64_t ld, float* G);
void gram_cpu_f64(const double* J, int64_t T, int64_t P, int64_t ld, double* G);

// Number of column splits the CUDA kernel uses for P columns; the caller allocates the fp64
// workspace [splits, T, T] with the framework's allocator.
int64_t gram_cuda_splits(int64_t P);

#ifdef PYMTL_HAVE_CUDA
// work [gram_cuda_splits(P), T, T] fp64 scratch; stream is a cudaStream_t as an integer.
void gram_cuda_f32(const float* J, int64_t T, int64_t P, int64_t ld, float* G, double* work,
                   std::uintptr_t stream);
void gram_cuda_f64(const double* J, int64_t T, int64_t P, int64_t ld, double* G, double* work,
                   std::uintptr_t stream);
#endif

}  // namespace pymtl
