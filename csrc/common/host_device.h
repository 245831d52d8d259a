// PYMTL_HD marks the routines a header shares between the CPU and the CUDA kernels: host and
// device functions under nvcc, plain functions under the C++ compiler.
#pragma once

#ifndef PYMTL_HD
#ifdef __CUDACC__
#define PYMTL_HD __host__ __device__
#else
#define PYMTL_HD
#endif
#endif
