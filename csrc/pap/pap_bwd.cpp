// CPU backward of pap_attention (see pap.h for the contract, pap_cpu.h for the building blocks).
//
// One pass over every (query block, key block) pair, recomputing P from f and lse:
//
//   S = f_Q · panel_K,  dP = dO_Q · Vpanel_K        [kBlock × kBlock] each, per-thread scratch
//   P = exp(scale · S − lse_Q),  dS = scale · P ⊙ (dP − delta_Q)   (and dSᵀ, for df_Q)
//   dV_K += Pᵀ dO_Q,  dfk_K += dSᵀ f_Q,  df_Q += dS f_K
//
// A pair writes rows of its query block (df) and of its key block (dv, dfk), so threads must
// never share a query block or a key block. The blocks are cut into G groups, and the work
// runs in G phases separated by barriers: in phase s, task (b, a) takes query group a and key
// group (a + s) mod G of sample b, for all T sources. The tasks of a phase own disjoint query
// rows and disjoint key rows, so they run in parallel without atomics, and after the G phases
// every pair has been visited once. The key half of df goes to its own buffer dfk (one copy
// of df), added to df at the end. Against a two-pass scheme (queries, then keys) this computes
// S and dP once instead of twice (1152 instead of 1664 multiply-adds per logit at Cq = 128,
// Cv = 384). Memory: the panels (a copy of f and of v) and dfk.
#include <algorithm>

#include "pap/pap.h"
#include "pap/pap_cpu.h"

namespace pymtl {
namespace pap {
namespace {

constexpr int64_t kGroupsPerThread = 4;  // tasks per thread and phase, for load balance

template <typename S>
struct BwdArgs {
  const S* f;        // [B, T, N, Cq]
  const S* fpanels;  // [B, T, nkb, Cq, kBlock]
  const S* vpanels;  // [B, nkb, Cv, kBlock]
  const S* lse;      // [B, T, N]
  const S* dO;       // [B, T, N, Cv]
  const S* delta;    // [B, T, N]
  S* df;             // [B, T, N, Cq]  query half, zero-filled before the phases
  S* dfk;            // [B, T, N, Cq]  key half, zero-filled before the phases
  S* dv;             // [B, N, Cv]     zero-filled before the phases
  int64_t T, N, Cq, Cv, nkb, groups;
  S scale;
};

// P = exp(scale · S − lse) and dS = scale · P ⊙ (dP − delta), in place, and dSᵀ.
//   s, dp [nq, kBlock], dst [kBlock, kBlock], lse, delta [nq]
template <typename S>
PAP_INLINE void probs_and_dlogits(S* s, S* dp, S* dst, int64_t nq, int64_t nk, S scale,
                                  const S* lse, const S* delta) {
  for (int64_t r = 0; r < nq; ++r) {
    S* srow = s + r * kBlock;
    S* drow = dp + r * kBlock;
    const S lr = lse[r], dr = delta[r];
#pragma omp simd
    for (int64_t k = 0; k < nk; ++k) {
      const S p = pap_exp(srow[k] * scale - lr);
      const S d = scale * p * (drow[k] - dr);
      srow[k] = p;
      drow[k] = d;
      dst[k * kBlock + r] = d;
    }
  }
}

// All (query block, key block) pairs of query group a and key group c of sample b, for every
// source.   task = (b · G + a) · G + c;  scratch [kBlock · (3 kBlock + Cq + Cv)]
template <typename S, int W, int MR, int NV>
PAP_INLINE void bwd_task(const BwdArgs<S>& p, int64_t task, S* scratch) {
  const int64_t G = p.groups, b = task / (G * G), a = task / G % G, c = task % G;
  const int64_t N = p.N, Cq = p.Cq, Cv = p.Cv;
  S* s = scratch;                 // [kBlock, kBlock]  S, then P
  S* ds = s + kBlock * kBlock;    // [kBlock, kBlock]  dP, then dS
  S* dst = ds + kBlock * kBlock;  // [kBlock, kBlock]  dSᵀ
  S* fqt = dst + kBlock * kBlock;  // [Cq, kBlock]      f_Qᵀ
  S* dOqt = fqt + Cq * kBlock;     // [Cv, kBlock]      dO_Qᵀ
  S* dv = p.dv + b * N * Cv;       // [N, Cv]
  for (int64_t bi = b * p.T; bi < (b + 1) * p.T; ++bi) {
    const S* f = p.f + bi * N * Cq;  // [N, Cq]
    S* df = p.df + bi * N * Cq;      // [N, Cq]
    S* dfk = p.dfk + bi * N * Cq;    // [N, Cq]
    for (int64_t qb = a * p.nkb / G; qb < (a + 1) * p.nkb / G; ++qb) {
      const int64_t q0 = qb * kBlock, nq = std::min(kBlock, N - q0);
      const S* fq = f + q0 * Cq;                 // [nq, Cq]
      const S* dOq = p.dO + (bi * N + q0) * Cv;  // [nq, Cv]
      pack_transposed(fq, Cq, Cq, nq, fqt);
      pack_transposed(dOq, Cv, Cv, nq, dOqt);
      for (int64_t kb = c * p.nkb / G; kb < (c + 1) * p.nkb / G; ++kb) {
        const int64_t k0 = kb * kBlock, nk = std::min(kBlock, N - k0);
        const S* fpanel = p.fpanels + (bi * p.nkb + kb) * Cq * kBlock;  // [Cq, kBlock]
        const S* vpanel = p.vpanels + (b * p.nkb + kb) * Cv * kBlock;   // [Cv, kBlock]
        gemm<S, W, MR, NV>(nq, kBlock, Cq, {fqt, kBlock}, {fpanel, kBlock}, {s, kBlock}, false);
        gemm<S, W, MR, NV>(nq, kBlock, Cv, {dOqt, kBlock}, {vpanel, kBlock}, {ds, kBlock}, false);
        probs_and_dlogits(s, ds, dst, nq, nk, p.scale, p.lse + bi * N + q0,
                          p.delta + bi * N + q0);
        // dV_K += Pᵀ dO_Q,  dfk_K += dSᵀ f_Q,  df_Q += dS f_K
        gemm<S, W, MR, NV>(nk, Cv, nq, {s, kBlock}, {dOq, Cv}, {dv + k0 * Cv, Cv}, true);
        gemm<S, W, MR, NV>(nk, Cq, nq, {ds, kBlock}, {fq, Cq}, {dfk + k0 * Cq, Cq}, true);
        gemm<S, W, MR, NV>(nq, Cq, nk, {dst, kBlock}, {f + k0 * Cq, Cq}, {df + q0 * Cq, Cq}, true);
      }
    }
  }
}

#ifdef PAP_X86
PAP_AVX512 void bwd_avx512(const BwdArgs<float>& p, int64_t t, float* s) {
  bwd_task<float, 16, 4, 4>(p, t, s);
}
PAP_AVX512 void bwd_avx512(const BwdArgs<double>& p, int64_t t, double* s) {
  bwd_task<double, 8, 4, 4>(p, t, s);
}
PAP_AVX2 void bwd_avx2(const BwdArgs<float>& p, int64_t t, float* s) {
  bwd_task<float, 8, 6, 2>(p, t, s);
}
PAP_AVX2 void bwd_avx2(const BwdArgs<double>& p, int64_t t, double* s) {
  bwd_task<double, 4, 6, 2>(p, t, s);
}
#endif
void bwd_base(const BwdArgs<float>& p, int64_t t, float* s) { bwd_task<float, 4, 4, 2>(p, t, s); }
void bwd_base(const BwdArgs<double>& p, int64_t t, double* s) {
  bwd_task<double, 2, 4, 2>(p, t, s);
}

// Zero-fills p [n] inside a parallel region, each thread its share (first touch).
template <typename S>
void zero_shared(S* p, int64_t n) {
  constexpr int64_t kChunk = 4096;
#pragma omp for schedule(static)
  for (int64_t e = 0; e < n; e += kChunk) std::fill(p + e, p + std::min(n, e + kChunk), S(0));
}

template <typename S>
void bwd_impl(const S* f, const S* v, const S* lse, const S* dO, const S* delta, S* df, S* dv,
              int64_t B, int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale) {
  check_sizes("pap_attn_bwd_cpu", B, T, N, Cq, Cv);
  if (B == 0) return;
  PYMTL_CHECK(f && v && lse && dO && delta && df && dv, "pap_attn_bwd_cpu: null pointer");
  const int64_t nkb = (N + kBlock - 1) / kBlock, nf = B * T * N * Cq;
  const int64_t G = std::min<int64_t>(nkb, kGroupsPerThread * max_threads());
  const auto fpanels = buffer<S>(B * T * nkb * Cq * kBlock);
  const auto vpanels = buffer<S>(B * nkb * Cv * kBlock);
  const auto dfk = buffer<S>(nf);
  pack_all(f, B * T, N, Cq, fpanels.get());
  pack_all(v, B, N, Cv, vpanels.get());
  const BwdArgs<S> args{f,  fpanels.get(), vpanels.get(), lse, dO, delta, df, dfk.get(), dv,
                        T,  N,             Cq,            Cv,  nkb, G,    static_cast<S>(scale)};
  void (*body)(const BwdArgs<S>&, int64_t, S*) = bwd_base;
#ifdef PAP_X86
  const int isa = isa_level();
  if (isa == 2) body = bwd_avx512;
  if (isa == 1) body = bwd_avx2;
#endif
#pragma omp parallel
  {
    zero_shared(df, nf);
    zero_shared(args.dfk, nf);
    zero_shared(dv, B * N * Cv);
    const auto scratch = buffer<S>(kBlock * (3 * kBlock + Cq + Cv));
    for (int64_t phase = 0; phase < G; ++phase) {  // the barrier after each loop separates them
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < B * G; ++t) body(args, t * G + (t % G + phase) % G, scratch.get());
    }
#pragma omp for simd schedule(static)
    for (int64_t e = 0; e < nf; ++e) df[e] += args.dfk[e];
  }
}

}  // namespace
}  // namespace pap

void pap_attn_bwd_cpu_f32(const float* f, const float* v, const float* lse, const float* dO,
                          const float* delta, float* df, float* dv, int64_t B, int64_t T,
                          int64_t N, int64_t Cq, int64_t Cv, double scale) {
  pap::bwd_impl<float>(f, v, lse, dO, delta, df, dv, B, T, N, Cq, Cv, scale);
}

void pap_attn_bwd_cpu_f64(const double* f, const double* v, const double* lse, const double* dO,
                          const double* delta, double* df, double* dv, int64_t B, int64_t T,
                          int64_t N, int64_t Cq, int64_t Cv, double scale) {
  pap::bwd_impl<double>(f, v, lse, dO, delta, df, dv, B, T, N, Cq, Cv, scale);
}

}  // namespace pymtl
