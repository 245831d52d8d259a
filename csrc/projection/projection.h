// Gram-space projection solvers of PCGrad and GradVac (SPEC-methods §2.8, §2.9).
//
//   G           [K, T, T] fp64  Gram matrices, one per parameter group (PCGrad: K = 1)
//   orders      [T, T-1] int64  row i: the tasks j != i in the order pc_i meets them
//   target      [K, T, T] fp64  GradVac's cosine targets φ̂ (read only)
//   new_target  [K, T, T] fp64  the targets after the step (written in full)
//   w           [K, T] fp64     w[k] = sum_i c_i of group k, summed over i ascending
//
// pc_i = Jᵀ c_i with c_i = e_i at the start; each (k, i) is an independent computation that
// keeps c and Gc = G c (so that (Gc)_j = ⟨pc_i, g_j⟩). Every j appears once in orders[i], so
// c_j changes at most once, from 0 to δ, and Gc += δ G[:, j] is exactly the sum G c in
// another order. The row routines below are shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace pymtl {

constexpr double kMinSquaredNorm = 1e-20;  // ε-guard on ‖g_j‖² and ‖pc_i‖²
constexpr double kMaxTarget = 1.0 - 1e-8;  // |φ̂| cap inside the GradVac update
constexpr int64_t kProjectionCudaMaxTasks = 64;

// c = e_i, gc = G e_i.  G [T, T]; c, gc [T]
PYMTL_HD inline void projection_start(const double* G, int64_t T, int64_t i, double* c,
                                      double* gc) {
  for (int64_t l = 0; l < T; ++l) {
    c[l] = 0.0;
    gc[l] = G[l * T + i];
  }
  c[i] = 1.0;
}

// c_j += delta, and Gc follows.
PYMTL_HD inline void projection_step(const double* G, int64_t T, int64_t j, double delta,
                                     double* c, double* gc) {
  c[j] += delta;
  for (int64_t l = 0; l < T; ++l) gc[l] += delta * G[l * T + j];
}

// PCGrad's c_i: for j in order (T - 1 entries), if ⟨pc_i, g_j⟩ < 0 and G_jj >= ε, remove
// the projection on g_j. Entries that are not a valid j != i are ignored (the CPU entry
// point rejects them first).
PYMTL_HD inline void pcgrad_row(const double* G, int64_t T, int64_t i, const int64_t* order,
                                double* c, double* gc) {
  projection_start(G, T, i, c, gc);
  for (int64_t m = 0; m + 1 < T; ++m) {
    const int64_t j = order[m];
    if (j < 0 || j >= T || j == i) continue;
    const double dot = gc[j];
    const double gjj = G[j * T + j];
    if (dot < 0.0 && gjj >= kMinSquaredNorm) projection_step(G, T, j, -dot / gjj, c, gc);
  }
}

// GradVac's c_i; writes the updated targets of row i (entries j in order) to new_row.
//   target_row, new_row [T]
PYMTL_HD inline void gradvac_row(const double* G, int64_t T, int64_t i, const int64_t* order,
                                 const double* target_row, double beta, double* c, double* gc,
                                 double* new_row) {
  projection_start(G, T, i, c, gc);
  for (int64_t m = 0; m + 1 < T; ++m) {
    const int64_t j = order[m];
    if (j < 0 || j >= T || j == i) continue;
    double pc_sq = 0.0;
    for (int64_t l = 0; l < T; ++l) pc_sq += c[l] * gc[l];
    const double g_sq = G[j * T + j];
    if (pc_sq < kMinSquaredNorm || g_sq < kMinSquaredNorm) continue;  // no cosine: skipped
    const double pc_norm = sqrt(pc_sq);
    const double g_norm = sqrt(g_sq);
    const double rho = fmin(fmax(gc[j] / (pc_norm * g_norm), -1.0), 1.0);
    const double old = target_row[j];
    if (rho < old) {
      const double phi = fmin(fmax(old, -kMaxTarget), kMaxTarget);
      const double root = sqrt(1.0 - phi * phi);
      const double delta =
          pc_norm * (phi * sqrt(1.0 - rho * rho) - rho * root) / (g_norm * root);
      projection_step(G, T, j, delta, c, gc);
    }
    new_row[j] = (1.0 - beta) * old + beta * rho;
  }
}

// CPU entry points. orders is checked (a permutation of the j != i in every row).
void pcgrad_weights_cpu(const double* G, int64_t T, const int64_t* orders, double* w);
void gradvac_weights_cpu(const double* G, const double* target, const int64_t* orders,
                         int64_t K, int64_t T, double beta, double* w, double* new_target);

#ifdef PYMTL_HAVE_CUDA
// One block per group, one thread per task i; T <= kProjectionCudaMaxTasks. Everything stays
// on the GPU (no host synchronisation). stream is a cudaStream_t as an integer.
void pcgrad_weights_cuda(const double* G, int64_t T, const int64_t* orders, double* w,
                         std::uintptr_t stream);
void gradvac_weights_cuda(const double* G, const double* target, const int64_t* orders,
                          int64_t K, int64_t T, double beta, double* w, double* new_target,
                          std::uintptr_t stream);
#endif

}  // namespace pymtl
