// combine: d = Jᵀ w, the weighted sum of the per-task gradients, in one pass over J.
//
//   J       [T, P]   row-major rows of length P, row stride ld >= P (unit column stride)
//   w       [K, T]   one row of task weights per column group, in J's dtype
//   bounds  [K + 1]  int64 column offsets 0 = b_0 <= b_1 <= ... <= b_K = P: the columns
//                    [b_k, b_{k+1}) form group k and use the weights w[k]
//   d       [P]      d[p] = sum_t w[k(p), t] J[t, p]
//
// Accumulation: in the input precision, over t in ascending order (T terms per column) on
// every device, so the result depends neither on the thread count nor on the block split.
// The CPU kernel may contract a multiply-add into an FMA where the CPU has one.
#pragma once

#include <cstdint>

namespace pymtl {

void combine_cpu_f32(const float* J, int64_t T, int64_t P, int64_t ld, const float* w,
                     int64_t K, const int64_t* bounds, float* d);
void combine_cpu_f64(const double* J, int64_t T, int64_t P, int64_t ld, const double* w,
                     int64_t K, const int64_t* bounds, double* d);

#ifdef PYMTL_HAVE_CUDA
// w and bounds live on the GPU; stream is a cudaStream_t as an integer.
void combine_cuda_f32(const float* J, int64_t T, int64_t P, int64_t ld, const float* w,
                      int64_t K, const int64_t* bounds, float* d, std::uintptr_t stream);
void combine_cuda_f64(const double* J, int64_t T, int64_t P, int64_t ld, const double* w,
                      int64_t K, const int64_t* bounds, double* d, std::uintptr_t stream);
#endif

}  // namespace pymtl
