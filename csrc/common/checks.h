// Shared argument checks and OpenMP helpers for pymtl kernels.
//
// Tensors reach C++ as raw addresses: the Python wrappers in pymtl/ops/ validate dtype, device,
// shape and layout first and report errors in the user's terms. The checks here are the last
// line of defence against a wrapper bug; they throw std::invalid_argument, which pybind11
// turns into ValueError.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#ifdef PYMTL_HAVE_OPENMP
#include <omp.h>
#endif

namespace pymtl {

#define PYMTL_CHECK(cond, ...)                                                   \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::ostringstream pymtl_msg_;                                             \
      pymtl_msg_ << __VA_ARGS__;                                                 \
      throw std::invalid_argument(pymtl_msg_.str());                             \
    }                                                                            \
  } while (0)

inline int max_threads() {
#ifdef PYMTL_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#ifdef PYMTL_HAVE_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace pymtl
