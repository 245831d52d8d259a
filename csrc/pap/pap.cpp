// CPU forward of pap_attention (see pap.h for the contract, pap_cpu.h for the building blocks).
//
// The keys of every (b, i) are first packed into transposed panels. Work items are then
// (b, i, query block) under OpenMP; each streams over the key blocks with an online softmax:
//
//   Sᵀ = f_K · f_Qᵀ                       logits, [kBlock × kBlock] per-thread scratch
//   m' = max(m, scale · rowmax S);  O_Q *= exp(m − m');  l = l · exp(m − m') + Σ_k P
//   Pᵀ = exp(scale · Sᵀ − m')            in place: Pᵀ is how the next product reads P
//   O_Q += P · V_K                        straight into the output rows of this item
//
// and ends with O_Q /= l, lse = m + log l. Each logit block is applied to all Cv value
// columns (the T tasks' values) at once. Memory: the panels (one copy of f) and
// kBlock · (kBlock + Cq) scratch per thread.
#include "pap/pap.h"

#include <cmath>
#include <limits>

#include "pap/pap_cpu.h"

namespace pymtl {
namespace pap {
namespace {

template <typename S>
struct FwdArgs {
  const S* f;       // [B, T, N, Cq]
  const S* panels;  // [B, T, nkb, Cq, kBlock]
  const S* v;       // [B, N, Cv]
  S* o;             // [B, T, N, Cv]
  S* lse;           // [B, T, N]
  int64_t T, N, Cq, Cv, nkb;
  S scale;
};

// Online-softmax update of the kBlock query columns of st = Sᵀ [nk, kBlock], the logits of
// one key block: st becomes Pᵀ in place, and the rows of o whose running max grew are
// rescaled. Every step runs across the query columns, in vectors. Columns past nq (zero
// logits from the zero-padded f_Qᵀ) are computed and never used.
//   o [nq, Cv];  m, l, m_new, sum [kBlock]
template <typename S>
PAP_INLINE void softmax_update(S* st, int64_t nq, int64_t nk, S scale, S* o, int64_t Cv, S* m,
                               S* l, S* m_new, S* sum) {
  std::copy(m, m + kBlock, m_new);
  for (int64_t k = 0; k < nk; ++k) {
    const S* row = st + k * kBlock;
#pragma omp simd
    for (int64_t q = 0; q < kBlock; ++q) {
      const S x = row[q] * scale;
      m_new[q] = x > m_new[q] ? x : m_new[q];  // std::max's reference result does not vectorise
    }
  }
#pragma omp simd
  for (int64_t q = 0; q < kBlock; ++q) {
    const S corr = pap_exp(m[q] - m_new[q]);  // 0 on the first block (m = −∞, l = 0)
    l[q] *= corr;
    sum[q] = corr;
  }
  for (int64_t q = 0; q < nq; ++q) {
    if (sum[q] != S(1)) {
      S* orow = o + q * Cv;
      const S corr = sum[q];
#pragma omp simd
      for (int64_t c = 0; c < Cv; ++c) orow[c] *= corr;
    }
  }
  std::copy(m_new, m_new + kBlock, m);
  std::fill(sum, sum + kBlock, S(0));
  for (int64_t k = 0; k < nk; ++k) {
    S* row = st + k * kBlock;
#pragma omp simd
    for (int64_t q = 0; q < kBlock; ++q) {
      const S p = pap_exp(row[q] * scale - m[q]);
      row[q] = p;
      sum[q] += p;
    }
  }
#pragma omp simd
  for (int64_t q = 0; q < kBlock; ++q) l[q] += sum[q];
}

// One work item: (b, i, query block qb).   scratch [kBlock · (kBlock + Cq + 4)]
template <typename S, int W, int MR, int NV>
PAP_INLINE void fwd_item(const FwdArgs<S>& p, int64_t item, S* scratch) {
  const int64_t nqb = (p.N + kBlock - 1) / kBlock;
  const int64_t bi = item / nqb, q0 = (item % nqb) * kBlock;
  const int64_t b = bi / p.T, nq = std::min(kBlock, p.N - q0);
  const S* vb = p.v + b * p.N * p.Cv;     // [N, Cv]
  S* oq = p.o + (bi * p.N + q0) * p.Cv;  // [nq, Cv]
  S* st = scratch;                        // [kBlock, kBlock] Sᵀ, then Pᵀ
  S* fqt = st + kBlock * kBlock;          // [Cq, kBlock]     f_Qᵀ
  S* m = fqt + p.Cq * kBlock;             // [kBlock] × 4: m, l, and two temporaries
  S* l = m + kBlock;
  pack_transposed(p.f + (bi * p.N + q0) * p.Cq, p.Cq, p.Cq, nq, fqt);
  std::fill(m, m + kBlock, -std::numeric_limits<S>::infinity());
  std::fill(l, l + kBlock, S(0));
  std::fill(oq, oq + nq * p.Cv, S(0));
  for (int64_t kb = 0; kb < p.nkb; ++kb) {
    const int64_t k0 = kb * kBlock, nk = std::min(kBlock, p.N - k0);
    const S* panel = p.panels + (bi * p.nkb + kb) * p.Cq * kBlock;  // [Cq, kBlock] f_Kᵀ
    gemm<S, W, MR, NV>(nk, kBlock, p.Cq, {panel, kBlock}, {fqt, kBlock}, {st, kBlock}, false);
    softmax_update(st, nq, nk, p.scale, oq, p.Cv, m, l, l + kBlock, l + 2 * kBlock);
    gemm<S, W, MR, NV>(nq, p.Cv, nk, {st, kBlock}, {vb + k0 * p.Cv, p.Cv}, {oq, p.Cv}, true);
  }
  S* lse = p.lse + bi * p.N + q0;
  for (int64_t r = 0; r < nq; ++r) {
    const S inv = S(1) / l[r];
    S* orow = oq + r * p.Cv;
#pragma omp simd
    for (int64_t c = 0; c < p.Cv; ++c) orow[c] *= inv;
    lse[r] = m[r] + std::log(l[r]);
  }
}

// One instantiation per instruction set, with that set's register tile of C (MR rows × NV
// vectors: 4 × 4 of the 32 registers on AVX-512, 6 × 2 of 16 on AVX2, 4 × 2 on SSE; each the
// fastest measured on a Zen 5 core against 6 × 4, 8 × 2, 8 × 3 and 4 × 2, 4 × 3, 3 × 4).
// pap_bwd.cpp uses the same tiles.
#ifdef PAP_X86
PAP_AVX512 void fwd_avx512(const FwdArgs<float>& p, int64_t it, float* s) {
  fwd_item<float, 16, 4, 4>(p, it, s);
}
PAP_AVX512 void fwd_avx512(const FwdArgs<double>& p, int64_t it, double* s) {
  fwd_item<double, 8, 4, 4>(p, it, s);
}
PAP_AVX2 void fwd_avx2(const FwdArgs<float>& p, int64_t it, float* s) {
  fwd_item<float, 8, 6, 2>(p, it, s);
}
PAP_AVX2 void fwd_avx2(const FwdArgs<double>& p, int64_t it, double* s) {
  fwd_item<double, 4, 6, 2>(p, it, s);
}
#endif
void fwd_base(const FwdArgs<float>& p, int64_t it, float* s) { fwd_item<float, 4, 4, 2>(p, it, s); }
void fwd_base(const FwdArgs<double>& p, int64_t it, double* s) {
  fwd_item<double, 2, 4, 2>(p, it, s);
}

template <typename S>
void fwd_impl(const S* f, const S* v, S* o, S* lse, int64_t B, int64_t T, int64_t N, int64_t Cq,
              int64_t Cv, double scale) {
  check_sizes("pap_attn_fwd_cpu", B, T, N, Cq, Cv);
  if (B == 0) return;
  PYMTL_CHECK(f && v && o && lse, "pap_attn_fwd_cpu: null pointer");
  const int64_t nkb = (N + kBlock - 1) / kBlock;
  const auto panels = buffer<S>(B * T * nkb * Cq * kBlock);
  pack_all(f, B * T, N, Cq, panels.get());
  const FwdArgs<S> args{f, panels.get(), v, o, lse, T, N, Cq, Cv, nkb, static_cast<S>(scale)};
  void (*body)(const FwdArgs<S>&, int64_t, S*) = fwd_base;
#ifdef PAP_X86
  const int isa = isa_level();
  if (isa == 2) body = fwd_avx512;
  if (isa == 1) body = fwd_avx2;
#endif
  const int64_t items = B * T * nkb;  // query blocks: as many as key blocks
#pragma omp parallel
  {
    const auto scratch = buffer<S>(kBlock * (kBlock + Cq + 4));
#pragma omp for schedule(dynamic)
    for (int64_t it = 0; it < items; ++it) body(args, it, scratch.get());
  }
}

}  // namespace
}  // namespace pap

void pap_attn_fwd_cpu_f32(const float* f, const float* v, float* o, float* lse, int64_t B,
                          int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale) {
  pap::fwd_impl<float>(f, v, o, lse, B, T, N, Cq, Cv, scale);
}

void pap_attn_fwd_cpu_f64(const double* f, const double* v, double* o, double* lse, int64_t B,
                          int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale) {
  pap::fwd_impl<double>(f, v, o, lse, B, T, N, Cq, Cv, scale);
}

}  // namespace pymtl
