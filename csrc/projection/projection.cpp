// CPU kernels of the PCGrad and GradVac projection solvers (see projection.h).
//
// Plain loops: each (k, i) runs its row routine into its own row of a [K, T, T] scratch of
// coefficient vectors, then w[k] is the sum of the rows i = 0..T-1 in that order, so the
// result does not depend on the thread count. OpenMP over (k, i) only when K T³ is large.
#include "projection/projection.h"

#include <algorithm>
#include <vector>

#include "common/checks.h"

namespace pymtl {
namespace {

// Below this many multiply-adds (about K T³) one thread is faster than waking the others.
constexpr int64_t kParallelMinWork = int64_t{1} << 18;

// Every row i of orders [T, T-1] must be a permutation of {0..T-1} \ {i}. The message has no
// op name: the Python wrapper adds it.
void check_orders(const int64_t* orders, int64_t T) {
  std::vector<char> seen(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    std::fill(seen.begin(), seen.end(), 0);
    seen[static_cast<size_t>(i)] = 1;
    for (int64_t m = 0; m + 1 < T; ++m) {
      const int64_t j = orders[i * (T - 1) + m];
      PYMTL_CHECK(j >= 0 && j < T && !seen[static_cast<size_t>(j)],
                  "orders[" << i << "] must be a permutation of the tasks other than " << i
                            << ", got " << j << " at position " << m);
      seen[static_cast<size_t>(j)] = 1;
    }
  }
}

// w[t] = sum_i C[i, t] over i ascending.  C [T, T], w [T]
void sum_rows(const double* C, int64_t T, double* w) {
  for (int64_t t = 0; t < T; ++t) w[t] = 0.0;
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t t = 0; t < T; ++t) w[t] += C[i * T + t];
  }
}

int threads_for(int64_t K, int64_t T) {
  return (K * T * T * T >= kParallelMinWork) ? max_threads() : 1;
}

}  // namespace

void pcgrad_weights_cpu(const double* G, int64_t T, const int64_t* orders, double* w) {
  PYMTL_CHECK(T >= 0, "pcgrad_weights: negative size T=" << T);
  if (T == 0) return;
  PYMTL_CHECK(G != nullptr && w != nullptr && (T == 1 || orders != nullptr),
              "pcgrad_weights: null pointer");
  check_orders(orders, T);
  std::vector<double> C(static_cast<size_t>(T * T));
  const int nthreads = threads_for(1, T);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    std::vector<double> gc(static_cast<size_t>(T));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < T; ++i) {
      pcgrad_row(G, T, i, orders + i * (T - 1), C.data() + i * T, gc.data());
    }
  }
  sum_rows(C.data(), T, w);
}

void gradvac_weights_cpu(const double* G, const double* target, const int64_t* orders,
                         int64_t K, int64_t T, double beta, double* w, double* new_target) {
  PYMTL_CHECK(K >= 0 && T >= 0, "gradvac_weights: negative size K=" << K << ", T=" << T);
  if (K == 0 || T == 0) return;
  PYMTL_CHECK(G != nullptr && target != nullptr && w != nullptr && new_target != nullptr &&
                  (T == 1 || orders != nullptr),
              "gradvac_weights: null pointer");
  check_orders(orders, T);
  const int64_t TT = T * T;
  std::copy(target, target + K * TT, new_target);  // untouched entries keep their value
  std::vector<double> C(static_cast<size_t>(K * TT));
  const int nthreads = threads_for(K, T);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    std::vector<double> gc(static_cast<size_t>(T));
#pragma omp for schedule(static)
    for (int64_t ki = 0; ki < K * T; ++ki) {
      const int64_t k = ki / T;
      const int64_t i = ki % T;
      gradvac_row(G + k * TT, T, i, orders + i * (T - 1), target + k * TT + i * T, beta,
                  C.data() + ki * T, gc.data(), new_target + k * TT + i * T);
    }
  }
  for (int64_t k = 0; k < K; ++k) sum_rows(C.data() + k * TT, T, w + k * T);
}

}  // namespace pymtl
