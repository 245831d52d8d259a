// Short vector types of the CPU kernels (GCC/Clang vector extension).
//
// Vec<S>::type holds 32 bytes of the input type: 8 floats or 4 doubles. It maps to one AVX
// register in the AVX2 / AVX-512 clones (see PYMTL_CLONES) and to two SSE registers otherwise.
// Keeping accumulators in these types keeps them in registers (a plain array may be kept on
// the stack).
#pragma once

#include <cstring>

namespace pymtl {

template <typename S>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <typename S>
using vec_t = typename Vec<S>::type;

// An unaligned vector load, returned by value.
template <typename S>
__attribute__((always_inline)) inline vec_t<S> load(const S* p) {
  vec_t<S> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// An unaligned vector load through a reference: inside a function that is not inlined, a
// returned vector would change the ABI of the baseline clone, which has no AVX.
template <typename S>
__attribute__((always_inline)) inline void load(vec_t<S>& v, const S* p) {
  std::memcpy(&v, p, sizeof(v));
}

}  // namespace pymtl
