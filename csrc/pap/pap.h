// pap_attention: the shared-key attention at the heart of PAP-Net's diffusion (SPEC-methods
// §1.9, "Attention form" and "Op contract for csrc"). For each sample b and source task i:
//
//   O[b, i] = softmax_row(scale · f[b, i] f[b, i]ᵀ) · V[b]
//   lse[b, i, n] = log Σ_m exp(scale · f[b, i, n] · f[b, i, m])
//
//   f    [B, T, N, Cq]  affinity features (query and key at once)
//   v    [B, N, Cv]     values, Cv = T·C: the T tasks' features side by side, shared by sources
//   o    [B, T, N, Cv]  output, written in full
//   lse  [B, T, N]      row log-sum-exp of the scaled logits (saved for the backward)
//
// Backward (flash style: P is recomputed from f and lse, nothing N×N is stored):
//
//   P_i = exp(scale f_i f_iᵀ − lse_i),  delta_i[n] = Σ_c dO_i[n, c] O_i[n, c] (from the caller)
//   dS_i = P_i ⊙ (dO_i Vᵀ − delta_i[:, None]),  df_i = scale (dS_i + dS_iᵀ) f_i
//   dV = Σ_i P_iᵀ dO_i
//
//   dO, df, dv  like o, f, v;  delta like lse
//
// All arrays are contiguous row-major. The α-mix, β-blend and diffusion steps are composed on
// top of this op in pymtl/ops/pap.py. Memory: O(B·T·N·(Cq + Cv)) at most, never O(N²).
//
// CPU kernels (OpenMP): the logits are computed once per (query block, key block) and applied
// to all Cv value columns, with an online softmax (running max and sum). Arithmetic and
// accumulation are in the input precision. The environment variable PYMTL_PAP_CPU_ISA
// (avx512, avx2 or base) caps the instruction set they use, for testing; unset, they use the
// best the CPU has.
#pragma once

#include <cstdint>

namespace pymtl {

// CPU (OpenMP). f [B,T,N,Cq], v [B,N,Cv], o [B,T,N,Cv], lse [B,T,N] (same dtype as f).
void pap_attn_fwd_cpu_f32(const float* f, const float* v, float* o, float* lse, int64_t B,
                          int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale);
void pap_attn_fwd_cpu_f64(const double* f, const double* v, double* o, double* lse, int64_t B,
                          int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale);
// df [B,T,N,Cq] and dv [B,N,Cv] are fully written (no zero-fill needed).
void pap_attn_bwd_cpu_f32(const float* f, const float* v, const float* lse, const float* dO,
                          const float* delta, float* df, float* dv, int64_t B, int64_t T,
                          int64_t N, int64_t Cq, int64_t Cv, double scale);
void pap_attn_bwd_cpu_f64(const double* f, const double* v, const double* lse, const double* dO,
                          const double* delta, double* df, double* dv, int64_t B, int64_t T,
                          int64_t N, int64_t Cq, int64_t Cv, double scale);

// Limits of the CUDA kernels: Cq <= 256 and Cv <= 1024 (the caller checks). Declared in every
// build, so that the Python module reports them with or without CUDA.
constexpr int64_t kPapCudaMaxCq = 256;
constexpr int64_t kPapCudaMaxCv = 1024;

#ifdef PYMTL_HAVE_CUDA
// dtype: 0 = fp32, 1 = fp16, 2 = bf16 for f, v, o and dO; lse, delta fp32; accumulation fp32.
// df [B,T,N,Cq] and dv [B,N,Cv] are fp32 and MUST be zero-filled by the caller (the kernel may
// accumulate into them atomically). stream is a cudaStream_t as an integer.
void pap_attn_fwd_cuda(int dtype, const void* f, const void* v, void* o, float* lse, int64_t B,
                       int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale,
                       std::uintptr_t stream);
void pap_attn_bwd_cuda(int dtype, const void* f, const void* v, const float* lse, const void* dO,
                       const float* delta, float* df, float* dv, int64_t B, int64_t T, int64_t N,
                       int64_t Cq, int64_t Cv, double scale, std::uintptr_t stream);
#endif

}  // namespace pymtl
