// Building blocks of the pap CPU kernels (pap.cpp: forward, pap_bwd.cpp: backward).
//
// * Block sizes: queries and keys are processed in blocks of kBlock rows. Blocks are stored
//   transposed where a block product needs them so (the key "panels" [C, kBlock] once per call,
//   f_Q and dO_Q once per query block), zero-padded past N.
// * gemm(): C (+)= A·B for one block, register-tiled: MR rows × NV vectors of W lanes of C stay
//   in registers while the inner dimension streams (broadcast A, vector loads of B). A is read
//   as Aᵀ, so that e.g. Pᵀ in dV += Pᵀ dO costs no copy.
// * pap_exp(): exp in plain arithmetic (Cody-Waite reduction, Taylor polynomial, exponent
//   bits), so loops over it vectorise; relative error about 1 ulp in fp32 and fp64.
// * Dispatch: each kernel body is instantiated per instruction set (AVX-512, AVX2 + FMA,
//   baseline) with that set's tile shape, and picked per call by isa_level(). The bodies are
//   called inside the OpenMP regions: an outlined parallel region does not inherit a target.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/checks.h"

namespace pymtl::pap {

constexpr int64_t kBlock = 64;  // query rows per block, keys per block
constexpr int64_t kInnerBlock = 128;  // inner-dimension slice of a block product (L1-sized)

#define PAP_INLINE __attribute__((always_inline)) inline
#if defined(__x86_64__) && defined(__GNUC__)
#define PAP_X86 1
#define PAP_AVX512 __attribute__((target("arch=x86-64-v4")))
#define PAP_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif

// 2: AVX-512 (x86-64-v4), 1: AVX2 + FMA (x86-64-v3), 0: baseline; capped by PYMTL_PAP_CPU_ISA.
inline int isa_level() {
  int level = 0;
#ifdef PAP_X86
  __builtin_cpu_init();
  level = __builtin_cpu_supports("x86-64-v4") ? 2 : __builtin_cpu_supports("x86-64-v3") ? 1 : 0;
#endif
  const char* cap = std::getenv("PYMTL_PAP_CPU_ISA");
  if (cap != nullptr && std::strcmp(cap, "base") == 0) level = 0;
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0) level = std::min(level, 1);
  return level;
}

// Uninitialised storage (std::vector would write every element first).
template <typename S>
std::unique_ptr<S[]> buffer(int64_t n) {
  return std::unique_ptr<S[]>(new S[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

template <typename S, int W>
struct VecOf {
  typedef S type __attribute__((vector_size(W * sizeof(S))));
};
template <typename S, int W>
using vec = typename VecOf<S, W>::type;

// A block operand: rows of a row-major matrix at stride ld.
template <typename S>
struct In {
  const S* p;
  int64_t ld;
};
template <typename S>
struct Out {
  S* p;
  int64_t ld;
};

// The block products below take their left operand A [M, K] as Aᵀ (`at`, row-major [K, M]):
// the MR values A(r, k) a row tile needs at step k are then adjacent, one pointer plus
// constant offsets, which keeps the inner loop free of extra address registers. Operands
// that are not stored that way are transposed once per block (pack_transposed).

// c[MR, NV·W] (+)= Σ_{k<K} at[k, r] · b[k, 0 : NV·W], the MR × NV accumulators in registers.
template <typename S, int W, int MR, int NV>
PAP_INLINE void micro(int64_t K, In<S> at, In<S> b, Out<S> c, bool acc) {
  using V = vec<S, W>;
  V cr[MR][NV];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NV; ++j) {
      if (acc) {
        std::memcpy(&cr[r][j], c.p + r * c.ld + j * W, sizeof(V));
      } else {
        cr[r][j] = V{};
      }
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
    for (int j = 0; j < NV; ++j) std::memcpy(&bv[j], b.p + k * b.ld + j * W, sizeof(V));
    const S* ak = at.p + k * at.ld;
    for (int r = 0; r < MR; ++r) {
      for (int j = 0; j < NV; ++j) cr[r][j] += ak[r] * bv[j];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NV; ++j) std::memcpy(c.p + r * c.ld + j * W, &cr[r][j], sizeof(V));
  }
}

// micro() for mr <= MR rows.
template <typename S, int W, int MR, int NV>
PAP_INLINE void micro_rows(int64_t mr, int64_t K, In<S> at, In<S> b, Out<S> c, bool acc) {
  if constexpr (MR > 1) {
    if (mr < MR) {
      micro_rows<S, W, MR - 1, NV>(mr, K, at, b, c, acc);
      return;
    }
  }
  micro<S, W, MR, NV>(K, at, b, c, acc);
}

// The last nc < NV·W columns of a row tile: whole vectors, then scalars.
template <typename S, int W, int MR>
PAP_INLINE void tail_cols(int64_t mr, int64_t nc, int64_t K, In<S> at, In<S> b, Out<S> c,
                          bool acc) {
  int64_t j = 0;
  for (; j + W <= nc; j += W) {
    micro_rows<S, W, MR, 1>(mr, K, at, {b.p + j, b.ld}, {c.p + j, c.ld}, acc);
  }
  for (int64_t r = 0; r < mr; ++r) {
    for (int64_t jj = j; jj < nc; ++jj) {
      S s = acc ? c.p[r * c.ld + jj] : S(0);
      for (int64_t k = 0; k < K; ++k) s += at.p[k * at.ld + r] * b.p[k * b.ld + jj];
      c.p[r * c.ld + jj] = s;
    }
  }
}

// C[M, Nc] (+)= A[M, K] · B[K, Nc] with A given as Aᵀ. K is sliced by kInnerBlock so that a
// [slice × NV·W] panel of B stays in L1 while the row tiles of C pass over it.
template <typename S, int W, int MR, int NV>
PAP_INLINE void gemm(int64_t M, int64_t Nc, int64_t K, In<S> at, In<S> b, Out<S> c, bool acc) {
  constexpr int64_t NR = NV * W;
  if (K == 0 && !acc) {
    for (int64_t r = 0; r < M; ++r) std::fill(c.p + r * c.ld, c.p + r * c.ld + Nc, S(0));
  }
  for (int64_t k0 = 0; k0 < K; k0 += kInnerBlock) {
    const int64_t kc = std::min(kInnerBlock, K - k0);
    const bool ac = acc || k0 > 0;
    for (int64_t j0 = 0; j0 < Nc; j0 += NR) {
      const int64_t nc = std::min(NR, Nc - j0);
      const In<S> bj{b.p + k0 * b.ld + j0, b.ld};
      for (int64_t i0 = 0; i0 < M; i0 += MR) {
        const int64_t mr = std::min<int64_t>(MR, M - i0);
        const In<S> ai{at.p + k0 * at.ld + i0, at.ld};
        const Out<S> ci{c.p + i0 * c.ld + j0, c.ld};
        if (nc == NR) {
          micro_rows<S, W, MR, NV>(mr, kc, ai, bj, ci, ac);
        } else {
          tail_cols<S, W, MR>(mr, nc, kc, ai, bj, ci, ac);
        }
      }
    }
  }
}

// dst[c, r] = src[r, c] for r < rows (src rows at stride ld), 0 for rows <= r < kBlock.
//   src [rows, C], dst [C, kBlock]
template <typename S>
PAP_INLINE void pack_transposed(const S* src, int64_t ld, int64_t C, int64_t rows, S* dst) {
  for (int64_t c = 0; c < C; ++c) {
    S* out = dst + c * kBlock;
    for (int64_t r = 0; r < rows; ++r) out[r] = src[r * ld + c];
    for (int64_t r = rows; r < kBlock; ++r) out[r] = S(0);
  }
}

// Constants of pap_exp: exp(x) is computed for kLo <= x <= kHi (larger x are clamped to kHi)
// and is exactly 0 below kLo, where it is under the smallest normal number anyway.
template <typename S>
struct ExpConst;
template <>
struct ExpConst<float> {
  using I = int32_t;
  static constexpr float kLo = -87.0f, kHi = 88.0f, kShift = 12582912.0f;  // 1.5·2^23
  static constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
  static constexpr int kDegree = 7, kBias = 127, kMant = 23;
};
template <>
struct ExpConst<double> {
  using I = int64_t;
  static constexpr double kLo = -708.0, kHi = 709.0, kShift = 6755399441055744.0;  // 1.5·2^52
  static constexpr double kLn2Hi = 0.6931471803691238, kLn2Lo = 1.9082149292705877e-10;
  static constexpr int kDegree = 13, kBias = 1023, kMant = 52;
};

// 1/k!, folded at compile time.
template <typename S, int K>
constexpr S inv_factorial() {
  S v = S(1);
  for (int d = 2; d <= K; ++d) v /= S(d);
  return v;
}

// Σ_{d=K..D} r^(d−K) / d!  (Horner, fully unrolled)
template <typename S, int D, int K = 0>
PAP_INLINE S exp_poly(S r) {
  constexpr S c = inv_factorial<S, K>();
  if constexpr (K == D) {
    return c;
  } else {
    return c + r * exp_poly<S, D, K + 1>(r);
  }
}

// Straight-line code (selects, no branches or calls), so loops over it vectorise.
template <typename S>
PAP_INLINE S pap_exp(S x) {
  using E = ExpConst<S>;
  const S xc = x < E::kLo ? E::kLo : (x > E::kHi ? E::kHi : x);
  const S n = (xc * S(1.4426950408889634) + E::kShift) - E::kShift;  // round(x / ln 2)
  const S r = (xc - n * E::kLn2Hi) - n * E::kLn2Lo;                   // |r| <= ln(2) / 2
  const typename E::I bits = (static_cast<typename E::I>(n) + E::kBias) << E::kMant;
  S two_n;
  std::memcpy(&two_n, &bits, sizeof(S));
  const S y = exp_poly<S, E::kDegree>(r) * two_n;
  return x < E::kLo ? S(0) : y;
}

// Panels of all key blocks of `count` matrices [N, C] (contiguous, one after the other):
// dst [count, nkb, C, kBlock].
template <typename S>
void pack_all(const S* src, int64_t count, int64_t N, int64_t C, S* dst) {
  const int64_t nkb = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < count * nkb; ++job) {
    const int64_t m = job / nkb, kb = job % nkb;
    const int64_t nk = std::min(kBlock, N - kb * kBlock);
    pack_transposed(src + (m * N + kb * kBlock) * C, C, C, nk, dst + job * C * kBlock);
  }
}

inline void check_sizes(const char* op, int64_t B, int64_t T, int64_t N, int64_t Cq,
                        int64_t Cv) {
  PYMTL_CHECK(B >= 0 && T >= 1 && N >= 1 && Cq >= 1 && Cv >= 1,
              op << ": invalid sizes B=" << B << ", T=" << T << ", N=" << N << ", Cq=" << Cq
                 << ", Cv=" << Cv << " (expected B >= 0 and the others >= 1)");
}

}  // namespace pymtl::pap
