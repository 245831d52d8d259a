// Shared launch helpers of the CUDA kernels (included by .cu files only).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace pymtl {

// Throws std::runtime_error "<where>: <what>: <CUDA error>" if the last launch failed.
inline void check_launch(const char* where, const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(where) + ": " + what + ": " + cudaGetErrorString(err));
  }
}

}  // namespace pymtl
