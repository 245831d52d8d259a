// CUDA kernels of PAP-Net's shared-key attention (contract in pap.h): for each (b, i),
//   O = softmax_row(scale f_i f_iᵀ) V[b],  lse[n] = log-sum-exp of row n's scaled logits.
// fp16 / bf16 elements become fp32 in shared memory: all sums, the softmax (max-subtracted), lse
// and delta are fp32; nothing N x N is stored. 256 threads as 16 x 16 (ty, tx): in a 64-row
// tile thread (ty, tx) holds rows ty + 16 r (r < 4) and columns tx + 16 c (conflict-free shared
// reads, half-warp row reductions). A·Bᵀ tiles (f fᵀ; dO Vᵀ) stream their inner dimension by 32.
// Forward: a block per (64 queries, 128 value columns, i, b) walks the key tiles of 64 with an
// online softmax, rescaling a 64 x 128 fp32 accumulator (32 registers per thread); each value
// chunk recomputes the logits. The blocks of one (b, i) are adjacent in x, so f_i and V[b]
// (shared by all sources) mostly come from L2. Backward (P = exp(scale s - lse) recomputed):
// pap_dv_kernel, a block per (64 keys, 128 value columns, b), sums P_iᵀ dO_i over i and query
// tiles in registers and stores dv (no atomics). pap_df_kernel, a block per (64 queries, i, b),
// stages D = scale P (dO Vᵀ - delta) per key tile in shared memory, keeps dq += D K in registers
// (4 x QC per thread, QC = 4 / 8 / 16 for Cq <= 64 / 128 / 256), atomicAdds dk = Dᵀ Q into df's
// key rows (the key half of scale (dS + dSᵀ) f) and at the end dq into its query rows: df must
// be zero-filled, and its sums are not bitwise deterministic. Shared memory: 33.3 KB static per
// block (no opt-in); 128 registers per thread (2 blocks per SM), ~195 for QC = 16. Limits:
// Cq <= 256, Cv <= 1024, B, T <= 65535. Expected bottleneck: shared loads and FMA issue on the
// fp32 SIMT cores (no tensor cores), and the df atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "common/checks.h"
#include "common/cuda.cuh"
#include "pap/pap.h"

namespace pymtl {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 64;            // query / key rows per tile
constexpr int kLd = kTile + 1;       // padded row length of the shared 64-wide tiles
constexpr int kDK = 32;              // inner-dimension chunk of the A·Bᵀ tiles
constexpr int kDV = 128;             // value columns per block
constexpr int kVK = 32;              // rows of a V / dO sub-tile
constexpr int kFC = 64;              // f columns per df product chunk
constexpr int kFR = 16;              // f rows per df product sub-tile
constexpr int kBuf = 2 * kDK * kLd;  // floats of the stream buffer
static_assert(kBuf >= kVK * kDV && kBuf >= 2 * kFR * kFC, "pap: stream buffer too small");

struct Dims {  // chunks: value chunks of kDV columns (at least 1)
  int64_t T, N, Cq, Cv, chunks;
  float scale;
};

template <typename S>
struct Rows {  // rows [0, n) of a row-major matrix with row length ld, starting at p
  const S* p;
  int n;
  int64_t ld;
};

template <typename S>
struct BwdArgs {
  const S* f;          // [B, T, N, Cq]
  const S* v;          // [B, N, Cv]
  const float* lse;    // [B, T, N]
  const S* dO;         // [B, T, N, Cv]
  const float* delta;  // [B, T, N]
  float* df;           // [B, T, N, Cq], zero-filled by the caller, accumulated atomically
  float* dv;           // [B, N, Cv], written in full
};

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void put(float* p, float x) { *p = x; }
__device__ __forceinline__ void put(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void put(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }
__device__ __forceinline__ int ty() { return static_cast<int>(threadIdx.x) / 16; }
__device__ __forceinline__ int tx() { return static_cast<int>(threadIdx.x) % 16; }

// Rows of the tile that starts at row `start` of N (1 to kTile).
__device__ __forceinline__ int tile_rows(int64_t N, int64_t start) {
  return N - start < kTile ? static_cast<int>(N - start) : kTile;
}

// Max (kMax) or sum over the 16 threads of a tile row (one half-warp).
template <bool kMax>
__device__ __forceinline__ float row_reduce(float x) {
  for (int off = 8; off > 0; off /= 2) {
    const float y = __shfl_xor_sync(0xffffffffu, x, off);
    x = kMax ? fmaxf(x, y) : x + y;
  }
  return x;
}

// Stages A[r0 + r, c0 + c] (r < R, c < C; zero past A.n rows or A.ld columns) as fp32 at
// dst[c * kLd + r] when kT (transposed), else at dst[r * C + c]. Reads are row-contiguous.
template <bool kT, int R, int C, typename S>
__device__ __forceinline__ void load_tile(Rows<S> A, int r0, int64_t c0, float* dst) {
  for (int l = static_cast<int>(threadIdx.x); l < R * C; l += kThreads) {
    const int r = l / C, c = l % C;
    const bool in = r0 + r < A.n && c0 + c < A.ld;
    dst[kT ? c * kLd + r : l] = in ? to_f(A.p[(r0 + r) * A.ld + c0 + c]) : 0.f;
  }
}

// acc[r][c] += sum_k A[ty + 16 r, k] B[tx + 16 c, k], k < A.ld = B.ld; rows past A.n, B.n are 0.
template <typename S>
__device__ __forceinline__ void dot_tile(Rows<S> A, Rows<S> B, float* buf, float (&acc)[4][4]) {
  for (int64_t k0 = 0; k0 < A.ld; k0 += kDK) {
    __syncthreads();  // the previous readers of buf are done
    load_tile<true, kTile, kDK>(A, 0, k0, buf);
    load_tile<true, kTile, kDK>(B, 0, k0, buf + kDK * kLd);
    __syncthreads();
    float part[4][4] = {};  // per-chunk sums: the error grows with 32 + K / 32, not K
#pragma unroll 8
    for (int k = 0; k < kDK; ++k) {
      float a[4], b[4];
      for (int r = 0; r < 4; ++r) {
        a[r] = buf[k * kLd + ty() + 16 * r];
        b[r] = buf[(kDK + k) * kLd + tx() + 16 * r];
      }
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) part[r][c] = fmaf(a[r], b[c], part[r][c]);
    }
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) acc[r][c] += part[r][c];
  }
}

// Online-softmax step for one key tile. s (raw logits; rows ty + 16 r, keys tx + 16 c) becomes
// exp(scale s - m_new), zero past `keys`; l and the accumulator rows are rescaled to m_new.
__device__ __forceinline__ void softmax_step(float (&s)[4][4], int keys, float scale,
                                             float (&m)[4], float (&l)[4], float (&acc)[4][8]) {
  for (int r = 0; r < 4; ++r) {
    float mx = -INFINITY;
    for (int c = 0; c < 4; ++c) {
      s[r][c] = tx() + 16 * c < keys ? s[r][c] * scale : -INFINITY;
      mx = fmaxf(mx, s[r][c]);
    }
    const float m_new = fmaxf(m[r], row_reduce<true>(mx));  // finite: every tile has a key
    const float alpha = expf(m[r] - m_new);                  // 0 on the first tile (m = -inf)
    float sum = 0.f;
    for (int c = 0; c < 4; ++c) {
      s[r][c] = expf(s[r][c] - m_new);
      sum += s[r][c];
    }
    l[r] = l[r] * alpha + row_reduce<false>(sum);
    m[r] = m_new;
    for (int c = 0; c < 8; ++c) acc[r][c] *= alpha;
  }
}

// s (raw logits; queries ty + 16 r < rows, keys tx + 16 c < keys) becomes P = exp(scale s - lse),
// zero elsewhere. lse points at the tile's first query.
__device__ __forceinline__ void probs(float (&s)[4][4], int rows, int keys, const float* lse,
                                      float scale) {
  for (int r = 0; r < 4; ++r) {
    const int n = ty() + 16 * r;
    const float L = n < rows ? lse[n] : 0.f;
    for (int c = 0; c < 4; ++c)
      s[r][c] = n < rows && tx() + 16 * c < keys ? expf(s[r][c] * scale - L) : 0.f;
  }
}

// sP[row][col] = s[r][c] for row ty + 16 r, col tx + 16 c.
__device__ __forceinline__ void stage(const float (&s)[4][4], float* sP) {
  __syncthreads();  // the previous readers of sP are done
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) sP[(ty() + 16 * r) * kLd + tx() + 16 * c] = s[r][c];
}

// acc[r][c] += sum_k P(ty + 16 r, k) V[k, c0 + tx + 16 c] over the V.n rows of V, with
// P(row, k) = sP[row][k], or sP[k][row] when kT.
template <bool kT, typename S>
__device__ __forceinline__ void apply_v(const float* sP, Rows<S> V, int64_t c0, float* buf,
                                        float (&acc)[4][8]) {
  for (int k0 = 0; k0 < V.n; k0 += kVK) {
    __syncthreads();  // sP is staged; the previous readers of buf are done
    load_tile<false, kVK, kDV>(V, k0, c0, buf);
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < kVK; ++k) {
      float p[4], w[8];
      for (int r = 0; r < 4; ++r)
        p[r] = sP[kT ? (k0 + k) * kLd + ty() + 16 * r : (ty() + 16 * r) * kLd + k0 + k];
      for (int c = 0; c < 8; ++c) w[c] = buf[k * kDV + tx() + 16 * c];
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 8; ++c) acc[r][c] = fmaf(p[r], w[c], acc[r][c]);
    }
  }
}

// out[(ty + 16 r) * ld + c0 + tx + 16 c] = x[r][c] (kAdd: atomicAdd) for rows < rows, cols < ld.
template <bool kAdd, int W, typename S>
__device__ __forceinline__ void write_rows(const float (&x)[4][W], S* out, int rows, int64_t c0,
                                           int64_t ld) {
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < W; ++c) {
      const int64_t col = c0 + tx() + 16 * c;
      if (ty() + 16 * r >= rows || col >= ld) continue;
      S* p = out + (ty() + 16 * r) * ld + col;
      if constexpr (kAdd) atomicAdd(p, x[r][c]);
      if constexpr (!kAdd) put(p, x[r][c]);
    }
  }
}

// f [B,T,N,Cq], v [B,N,Cv], o [B,T,N,Cv], lse [B,T,N]; grid (query tiles * chunks, T, B): O and
// lse of one query tile and value chunk of (b, i).
template <typename S>
__global__ void __launch_bounds__(kThreads)
pap_fwd_kernel(const S* __restrict__ f, const S* __restrict__ v, S* __restrict__ o,
               float* __restrict__ lse, Dims d) {
  __shared__ float buf[kBuf];
  __shared__ float sP[kTile * kLd];
  const int64_t n0 = blockIdx.x / d.chunks * kTile;
  const int64_t c0 = blockIdx.x % d.chunks * kDV;
  const int64_t bi = blockIdx.z * d.T + blockIdx.y;  // (b, i) row of f, o and lse
  const S* fi = f + bi * d.N * d.Cq;
  const Rows<S> Q{fi + n0 * d.Cq, tile_rows(d.N, n0), d.Cq};
  float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, l[4] = {}, acc[4][8] = {};
  for (int64_t m0 = 0; m0 < d.N; m0 += kTile) {
    const Rows<S> K{fi + m0 * d.Cq, tile_rows(d.N, m0), d.Cq};
    float s[4][4] = {};
    dot_tile(Q, K, buf, s);
    softmax_step(s, K.n, d.scale, m, l, acc);
    stage(s, sP);
    apply_v<false>(sP, Rows<S>{v + (blockIdx.z * d.N + m0) * d.Cv, K.n, d.Cv}, c0, buf, acc);
  }
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) acc[r][c] /= l[r];
  write_rows<false>(acc, o + (bi * d.N + n0) * d.Cv, Q.n, c0, d.Cv);
  for (int r = 0; r < 4; ++r)
    if (c0 == 0 && tx() == 0 && ty() + 16 * r < Q.n)
      lse[bi * d.N + n0 + ty() + 16 * r] = m[r] + logf(l[r]);
}

// grid (key tiles * chunks, B): dv[b] rows of one key tile, one value chunk, summed over i.
template <typename S>
__global__ void __launch_bounds__(kThreads) pap_dv_kernel(BwdArgs<S> a, Dims d) {
  __shared__ float buf[kBuf];
  __shared__ float sP[kTile * kLd];
  const int64_t m0 = blockIdx.x / d.chunks * kTile;
  const int64_t c0 = blockIdx.x % d.chunks * kDV;
  const int keys = tile_rows(d.N, m0);
  float acc[4][8] = {};
  for (int64_t bi = blockIdx.y * d.T; bi < (blockIdx.y + 1) * d.T; ++bi) {
    const S* fi = a.f + bi * d.N * d.Cq;
    const Rows<S> K{fi + m0 * d.Cq, keys, d.Cq};
    for (int64_t n0 = 0; n0 < d.N; n0 += kTile) {
      const Rows<S> Q{fi + n0 * d.Cq, tile_rows(d.N, n0), d.Cq};
      float s[4][4] = {};
      dot_tile(Q, K, buf, s);
      probs(s, Q.n, keys, a.lse + bi * d.N + n0, d.scale);
      stage(s, sP);  // sP[query][key]
      apply_v<true>(sP, Rows<S>{a.dO + (bi * d.N + n0) * d.Cv, Q.n, d.Cv}, c0, buf, acc);
    }
  }
  write_rows<false>(acc, a.dv + (blockIdx.y * d.N + m0) * d.Cv, keys, c0, d.Cv);
}

// With D = sD (scale dS, queries x keys): dq[j] += D K[:, chunk j] and dk = Dᵀ Q[:, chunk j],
// the latter added atomically to the key rows (dk_out = df at the tile's first key).
template <int QC, typename S>
__device__ __forceinline__ void df_products(const float* sD, Rows<S> Q, Rows<S> K, float* buf,
                                            float (&dq)[QC / 4][4][4], float* dk_out) {
  const int lim = Q.n > K.n ? Q.n : K.n;
#pragma unroll
  for (int j = 0; j < QC / 4; ++j) {
    if (j * kFC >= Q.ld) break;
    float dk[4][4] = {};
    for (int k0 = 0; k0 < lim; k0 += kFR) {
      __syncthreads();  // sD is staged; the previous readers of buf are done
      load_tile<false, kFR, kFC>(K, k0, j * kFC, buf);
      load_tile<false, kFR, kFC>(Q, k0, j * kFC, buf + kFR * kFC);
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kFR; ++k) {
        float dn[4], dm[4], fk[4], fq[4];
        for (int r = 0; r < 4; ++r) {
          dn[r] = sD[(ty() + 16 * r) * kLd + k0 + k];  // D[query ty + 16 r, key k0 + k]
          dm[r] = sD[(k0 + k) * kLd + ty() + 16 * r];  // D[query k0 + k, key ty + 16 r]
          fk[r] = buf[k * kFC + tx() + 16 * r];
          fq[r] = buf[(kFR + k) * kFC + tx() + 16 * r];
        }
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < 4; ++c) {
            dq[j][r][c] = fmaf(dn[r], fk[c], dq[j][r][c]);
            dk[r][c] = fmaf(dm[r], fq[c], dk[r][c]);
          }
      }
    }
    write_rows<true>(dk, dk_out, K.n, j * kFC, K.ld);
  }
}

// grid (query tiles, T, B): the query half of df for one query tile of (b, i), and the key
// halves of its pairs with every key tile.
template <typename S, int QC>
__global__ void __launch_bounds__(kThreads, QC <= 8 ? 2 : 1)
pap_df_kernel(BwdArgs<S> a, Dims d) {
  __shared__ float buf[kBuf];
  __shared__ float sD[kTile * kLd];
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t bi = blockIdx.z * d.T + blockIdx.y;
  const S* fi = a.f + bi * d.N * d.Cq;
  const Rows<S> Q{fi + n0 * d.Cq, tile_rows(d.N, n0), d.Cq};
  const Rows<S> G{a.dO + (bi * d.N + n0) * d.Cv, Q.n, d.Cv};
  float delta[4], dq[QC / 4][4][4] = {};
  for (int r = 0; r < 4; ++r)
    delta[r] = ty() + 16 * r < Q.n ? a.delta[bi * d.N + n0 + ty() + 16 * r] : 0.f;
  for (int64_t m0 = 0; m0 < d.N; m0 += kTile) {
    const Rows<S> K{fi + m0 * d.Cq, tile_rows(d.N, m0), d.Cq};
    float s[4][4] = {}, dp[4][4] = {};
    dot_tile(Q, K, buf, s);
    probs(s, Q.n, K.n, a.lse + bi * d.N + n0, d.scale);
    dot_tile(G, Rows<S>{a.v + (blockIdx.z * d.N + m0) * d.Cv, K.n, d.Cv}, buf, dp);
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) s[r][c] *= d.scale * (dp[r][c] - delta[r]);
    stage(s, sD);
    df_products<QC>(sD, Q, K, buf, dq, a.df + (bi * d.N + m0) * d.Cq);
  }
#pragma unroll
  for (int j = 0; j < QC / 4; ++j)
    write_rows<true>(dq[j], a.df + (bi * d.N + n0) * d.Cq, Q.n, j * kFC, d.Cq);
}

int64_t tiles(int64_t N) { return (N + kTile - 1) / kTile; }

// The checked sizes; chunks >= 1 so that chunk 0 writes lse even when Cv = 0.
Dims checked_dims(const char* where, int dtype, int64_t B, int64_t T, int64_t N, int64_t Cq,
                  int64_t Cv, double scale) {
  PYMTL_CHECK(dtype >= 0 && dtype <= 2,
              where << ": dtype code must be 0 (fp32), 1 (fp16) or 2 (bf16), got " << dtype);
  PYMTL_CHECK(B >= 0 && T >= 0 && N >= 0 && B <= 65535 && T <= 65535 && N <= (int64_t{1} << 33),
              where << ": sizes must be 0 <= B, T <= 65535 and 0 <= N <= 2^33 (CUDA grid), got B="
                    << B << ", T=" << T << ", N=" << N);
  PYMTL_CHECK(Cq >= 0 && Cq <= kPapCudaMaxCq && Cv >= 0 && Cv <= kPapCudaMaxCv,
              where << ": channels must be Cq in [0, " << kPapCudaMaxCq << "] and Cv in [0, "
                    << kPapCudaMaxCv << "], got Cq=" << Cq << ", Cv=" << Cv);
  return Dims{T, N, Cq, Cv, Cv > kDV ? (Cv + kDV - 1) / kDV : 1, static_cast<float>(scale)};
}

// Calls fn(S{}) with the element type S of dtype code 0 (fp32), 1 (fp16) or 2 (bf16).
template <typename Fn>
void by_dtype(int dtype, Fn fn) {
  if (dtype == 0) return fn(float{});
  if (dtype == 1) return fn(__half{});
  fn(__nv_bfloat16{});
}

template <typename S, int QC>
void df_launch(const BwdArgs<S>& a, int64_t B, const Dims& d, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(tiles(d.N)), static_cast<unsigned>(d.T),
                  static_cast<unsigned>(B));
  pap_df_kernel<S, QC><<<grid, kThreads, 0, s>>>(a, d);
  check_launch("pap_attn_bwd_cuda", "pap_df_kernel launch");
}

template <typename S>
void bwd_launch(const BwdArgs<S>& a, int64_t B, const Dims& d, cudaStream_t s) {
  if (d.Cv > 0) {
    const dim3 grid(static_cast<unsigned>(tiles(d.N) * d.chunks), static_cast<unsigned>(B));
    pap_dv_kernel<S><<<grid, kThreads, 0, s>>>(a, d);
    check_launch("pap_attn_bwd_cuda", "pap_dv_kernel launch");
  }
  if (d.Cq <= 64) return df_launch<S, 4>(a, B, d, s);
  if (d.Cq <= 128) return df_launch<S, 8>(a, B, d, s);
  df_launch<S, 16>(a, B, d, s);
}

}  // namespace

void pap_attn_fwd_cuda(int dtype, const void* f, const void* v, void* o, float* lse, int64_t B,
                       int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale,
                       std::uintptr_t stream) {
  const Dims d = checked_dims("pap_attn_fwd_cuda", dtype, B, T, N, Cq, Cv, scale);
  if (B == 0 || T == 0 || N == 0) return;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(tiles(N) * d.chunks), static_cast<unsigned>(T),
                  static_cast<unsigned>(B));
  by_dtype(dtype, [&](auto tag) {
    using S = decltype(tag);
    pap_fwd_kernel<S><<<grid, kThreads, 0, s>>>(static_cast<const S*>(f), static_cast<const S*>(v),
                                                static_cast<S*>(o), lse, d);
  });
  check_launch("pap_attn_fwd_cuda", "pap_fwd_kernel launch");
}

void pap_attn_bwd_cuda(int dtype, const void* f, const void* v, const float* lse, const void* dO,
                       const float* delta, float* df, float* dv, int64_t B, int64_t T, int64_t N,
                       int64_t Cq, int64_t Cv, double scale, std::uintptr_t stream) {
  const Dims d = checked_dims("pap_attn_bwd_cuda", dtype, B, T, N, Cq, Cv, scale);
  if (B == 0 || T == 0 || N == 0) return;
  by_dtype(dtype, [&](auto tag) {
    using S = decltype(tag);
    const BwdArgs<S> a{static_cast<const S*>(f), static_cast<const S*>(v), lse,
                       static_cast<const S*>(dO), delta, df, dv};
    bwd_launch<S>(a, B, d, reinterpret_cast<cudaStream_t>(stream));
  });
}

}  // namespace pymtl
