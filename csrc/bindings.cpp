// pymtl._C: the only pybind11 translation unit. No kernels here: each op family lives in
// csrc/<op>/ and is exposed as functions taking tensor addresses (Python ints) and sizes.
// The Python wrappers in pymtl/ops/ own allocation, validation and the torch.library
// registration; every call below releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "combine/combine.h"
#include "common/checks.h"
#include "graddrop/graddrop.h"
#include "gram/gram.h"
#include "pap/pap.h"
#include "projection/projection.h"

namespace py = pybind11;

namespace {

template <typename T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

void bind_gram(py::module_& m) {
  m.def(
      "gram_cpu_f32",
      [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld, std::uintptr_t G) {
        py::gil_scoped_release nogil;
        pymtl::gram_cpu_f32(as_ptr<const float>(J), T, P, ld, as_ptr<float>(G));
      },
      py::arg("J"), py::arg("T"), py::arg("P"), py::arg("ld"), py::arg("G"),
      "G[T, T] = J Jᵀ for fp32 J[T, P] with row stride ld (addresses as ints).");
  m.def(
      "gram_cpu_f64",
      [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld, std::uintptr_t G) {
        py::gil_scoped_release nogil;
        pymtl::gram_cpu_f64(as_ptr<const double>(J), T, P, ld, as_ptr<double>(G));
      },
      py::arg("J"), py::arg("T"), py::arg("P"), py::arg("ld"), py::arg("G"),
      "G[T, T] = J Jᵀ for fp64 J[T, P] with row stride ld (addresses as ints).");
  m.def("gram_cuda_splits", &pymtl::gram_cuda_splits, py::arg("P"),
        "Column splits of the CUDA gram kernel: its fp64 workspace is [splits, T, T].");
#ifdef PYMTL_HAVE_CUDA
  m.def(
      "gram_cuda_f32",
      [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld, std::uintptr_t G,
         std::uintptr_t work, std::uintptr_t stream) {
        py::gil_scoped_release nogil;
        pymtl::gram_cuda_f32(as_ptr<const float>(J), T, P, ld, as_ptr<float>(G),
                             as_ptr<double>(work), stream);
      },
      py::arg("J"), py::arg("T"), py::arg("P"), py::arg("ld"), py::arg("G"), py::arg("work"),
      py::arg("stream"));
  m.def(
      "gram_cuda_f64",
      [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld, std::uintptr_t G,
         std::uintptr_t work, std::uintptr_t stream) {
        py::gil_scoped_release nogil;
        pymtl::gram_cuda_f64(as_ptr<const double>(J), T, P, ld, as_ptr<double>(G),
                             as_ptr<double>(work), stream);
      },
      py::arg("J"), py::arg("T"), py::arg("P"), py::arg("ld"), py::arg("G"), py::arg("work"),
      py::arg("stream"));
#endif
}


// combine: d [P] = per-group Jᵀ w. J [T, P] with row stride ld, w [K, T], bounds [K + 1].
void bind_combine(py::module_& m) {
  m.def("combine_cpu_f32", [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld,
                              std::uintptr_t w, int64_t K, std::uintptr_t bounds,
                              std::uintptr_t d) {
    py::gil_scoped_release nogil;
    pymtl::combine_cpu_f32(as_ptr<const float>(J), T, P, ld, as_ptr<const float>(w), K,
                           as_ptr<const int64_t>(bounds), as_ptr<float>(d));
  });
  m.def("combine_cpu_f64", [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld,
                              std::uintptr_t w, int64_t K, std::uintptr_t bounds,
                              std::uintptr_t d) {
    py::gil_scoped_release nogil;
    pymtl::combine_cpu_f64(as_ptr<const double>(J), T, P, ld, as_ptr<const double>(w), K,
                           as_ptr<const int64_t>(bounds), as_ptr<double>(d));
  });
#ifdef PYMTL_HAVE_CUDA
  m.def("combine_cuda_f32", [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld,
                               std::uintptr_t w, int64_t K, std::uintptr_t bounds,
                               std::uintptr_t d, std::uintptr_t stream) {
    py::gil_scoped_release nogil;
    pymtl::combine_cuda_f32(as_ptr<const float>(J), T, P, ld, as_ptr<const float>(w), K,
                            as_ptr<const int64_t>(bounds), as_ptr<float>(d), stream);
  });
  m.def("combine_cuda_f64", [](std::uintptr_t J, int64_t T, int64_t P, int64_t ld,
                               std::uintptr_t w, int64_t K, std::uintptr_t bounds,
                               std::uintptr_t d, std::uintptr_t stream) {
    py::gil_scoped_release nogil;
    pymtl::combine_cuda_f64(as_ptr<const double>(J), T, P, ld, as_ptr<const double>(w), K,
                            as_ptr<const int64_t>(bounds), as_ptr<double>(d), stream);
  });
#endif
}

// PCGrad / GradVac solvers: G [K, T, T] fp64, orders [T, T-1] int64, target [K, T, T],
// w [K, T], new_target [K, T, T] (PCGrad: K = 1).
void bind_projection(py::module_& m) {
  m.attr("projection_cuda_max_tasks") = pymtl::kProjectionCudaMaxTasks;
  m.def("pcgrad_weights_cpu",
        [](std::uintptr_t G, int64_t T, std::uintptr_t orders, std::uintptr_t w) {
          py::gil_scoped_release nogil;
          pymtl::pcgrad_weights_cpu(as_ptr<const double>(G), T, as_ptr<const int64_t>(orders),
                                    as_ptr<double>(w));
        });
  m.def("gradvac_weights_cpu",
        [](std::uintptr_t G, std::uintptr_t target, std::uintptr_t orders, int64_t K, int64_t T,
           double beta, std::uintptr_t w, std::uintptr_t new_target) {
          py::gil_scoped_release nogil;
          pymtl::gradvac_weights_cpu(as_ptr<const double>(G), as_ptr<const double>(target),
                                     as_ptr<const int64_t>(orders), K, T, beta, as_ptr<double>(w),
                                     as_ptr<double>(new_target));
        });
#ifdef PYMTL_HAVE_CUDA
  m.def("pcgrad_weights_cuda", [](std::uintptr_t G, int64_t T, std::uintptr_t orders,
                                  std::uintptr_t w, std::uintptr_t stream) {
    py::gil_scoped_release nogil;
    pymtl::pcgrad_weights_cuda(as_ptr<const double>(G), T, as_ptr<const int64_t>(orders),
                               as_ptr<double>(w), stream);
  });
  m.def("gradvac_weights_cuda",
        [](std::uintptr_t G, std::uintptr_t target, std::uintptr_t orders, int64_t K, int64_t T,
           double beta, std::uintptr_t w, std::uintptr_t new_target, std::uintptr_t stream) {
          py::gil_scoped_release nogil;
          pymtl::gradvac_weights_cuda(as_ptr<const double>(G), as_ptr<const double>(target),
                                      as_ptr<const int64_t>(orders), K, T, beta,
                                      as_ptr<double>(w), as_ptr<double>(new_target), stream);
        });
#endif
}

// GradDrop: J [T, B, N], z [B, N], S [T, N], u [N], d [B, N]; CUDA scratch coef [T, N].
template <typename S>
void def_graddrop_cpu(py::module_& m, const char* suffix,
                      void (*sum)(const S*, const S*, int64_t, int64_t, int64_t, S*),
                      void (*comb)(const S*, const S*, const S*, double, int64_t, int64_t,
                                   int64_t, S*)) {
  m.def((std::string("graddrop_signed_sum_cpu_") + suffix).c_str(),
        [sum](std::uintptr_t J, std::uintptr_t z, int64_t T, int64_t B, int64_t N,
              std::uintptr_t S_out) {
          py::gil_scoped_release nogil;
          sum(as_ptr<const S>(J), as_ptr<const S>(z), T, B, N, as_ptr<S>(S_out));
        });
  m.def((std::string("graddrop_combine_cpu_") + suffix).c_str(),
        [comb](std::uintptr_t J, std::uintptr_t S_in, std::uintptr_t u, double leak, int64_t T,
               int64_t B, int64_t N, std::uintptr_t d) {
          py::gil_scoped_release nogil;
          comb(as_ptr<const S>(J), as_ptr<const S>(S_in), as_ptr<const S>(u), leak, T, B, N,
               as_ptr<S>(d));
        });
}

#ifdef PYMTL_HAVE_CUDA
template <typename S>
void def_graddrop_cuda(py::module_& m, const char* suffix,
                       void (*sum)(const S*, const S*, int64_t, int64_t, int64_t, S*,
                                   std::uintptr_t),
                       void (*comb)(const S*, const S*, const S*, double, int64_t, int64_t,
                                    int64_t, S*, S*, std::uintptr_t)) {
  m.def((std::string("graddrop_signed_sum_cuda_") + suffix).c_str(),
        [sum](std::uintptr_t J, std::uintptr_t z, int64_t T, int64_t B, int64_t N,
              std::uintptr_t S_out, std::uintptr_t stream) {
          py::gil_scoped_release nogil;
          sum(as_ptr<const S>(J), as_ptr<const S>(z), T, B, N, as_ptr<S>(S_out), stream);
        });
  m.def((std::string("graddrop_combine_cuda_") + suffix).c_str(),
        [comb](std::uintptr_t J, std::uintptr_t S_in, std::uintptr_t u, double leak, int64_t T,
               int64_t B, int64_t N, std::uintptr_t coef, std::uintptr_t d,
               std::uintptr_t stream) {
          py::gil_scoped_release nogil;
          comb(as_ptr<const S>(J), as_ptr<const S>(S_in), as_ptr<const S>(u), leak, T, B, N,
               as_ptr<S>(coef), as_ptr<S>(d), stream);
        });
}
#endif

void bind_graddrop(py::module_& m) {
  def_graddrop_cpu<float>(m, "f32", &pymtl::graddrop_signed_sum_cpu_f32,
                          &pymtl::graddrop_combine_cpu_f32);
  def_graddrop_cpu<double>(m, "f64", &pymtl::graddrop_signed_sum_cpu_f64,
                           &pymtl::graddrop_combine_cpu_f64);
#ifdef PYMTL_HAVE_CUDA
  def_graddrop_cuda<float>(m, "f32", &pymtl::graddrop_signed_sum_cuda_f32,
                           &pymtl::graddrop_combine_cuda_f32);
  def_graddrop_cuda<double>(m, "f64", &pymtl::graddrop_signed_sum_cuda_f64,
                            &pymtl::graddrop_combine_cuda_f64);
#endif
}

// pap_attention (PAP-Net's shared-key attention): f [B, T, N, Cq], v [B, N, Cv],
// o [B, T, N, Cv], lse and delta [B, T, N]; the backward writes df [B, T, N, Cq], dv [B, N, Cv].
template <typename S>
void def_pap_cpu(py::module_& m, const char* suffix,
                 void (*fwd)(const S*, const S*, S*, S*, int64_t, int64_t, int64_t, int64_t,
                             int64_t, double),
                 void (*bwd)(const S*, const S*, const S*, const S*, const S*, S*, S*, int64_t,
                             int64_t, int64_t, int64_t, int64_t, double)) {
  m.def((std::string("pap_attn_fwd_cpu_") + suffix).c_str(),
        [fwd](std::uintptr_t f, std::uintptr_t v, std::uintptr_t o, std::uintptr_t lse,
              int64_t B, int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale) {
          py::gil_scoped_release nogil;
          fwd(as_ptr<const S>(f), as_ptr<const S>(v), as_ptr<S>(o), as_ptr<S>(lse), B, T, N, Cq,
              Cv, scale);
        },
        py::arg("f"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("B"), py::arg("T"),
        py::arg("N"), py::arg("Cq"), py::arg("Cv"), py::arg("scale"));
  m.def((std::string("pap_attn_bwd_cpu_") + suffix).c_str(),
        [bwd](std::uintptr_t f, std::uintptr_t v, std::uintptr_t lse, std::uintptr_t dO,
              std::uintptr_t delta, std::uintptr_t df, std::uintptr_t dv, int64_t B, int64_t T,
              int64_t N, int64_t Cq, int64_t Cv, double scale) {
          py::gil_scoped_release nogil;
          bwd(as_ptr<const S>(f), as_ptr<const S>(v), as_ptr<const S>(lse), as_ptr<const S>(dO),
              as_ptr<const S>(delta), as_ptr<S>(df), as_ptr<S>(dv), B, T, N, Cq, Cv, scale);
        },
        py::arg("f"), py::arg("v"), py::arg("lse"), py::arg("dO"), py::arg("delta"),
        py::arg("df"), py::arg("dv"), py::arg("B"), py::arg("T"), py::arg("N"), py::arg("Cq"),
        py::arg("Cv"), py::arg("scale"));
}

void bind_pap(py::module_& m) {
  m.attr("pap_cuda_max_cq") = pymtl::kPapCudaMaxCq;
  m.attr("pap_cuda_max_cv") = pymtl::kPapCudaMaxCv;
  def_pap_cpu<float>(m, "f32", &pymtl::pap_attn_fwd_cpu_f32, &pymtl::pap_attn_bwd_cpu_f32);
  def_pap_cpu<double>(m, "f64", &pymtl::pap_attn_fwd_cpu_f64, &pymtl::pap_attn_bwd_cpu_f64);
#ifdef PYMTL_HAVE_CUDA
  // dtype: 0 fp32, 1 fp16, 2 bf16 (f, v, o, dO); lse, delta, df, dv fp32; df, dv zero-filled.
  m.def(
      "pap_attn_fwd_cuda",
      [](int dtype, std::uintptr_t f, std::uintptr_t v, std::uintptr_t o, std::uintptr_t lse,
         int64_t B, int64_t T, int64_t N, int64_t Cq, int64_t Cv, double scale,
         std::uintptr_t stream) {
        py::gil_scoped_release nogil;
        pymtl::pap_attn_fwd_cuda(dtype, as_ptr<const void>(f), as_ptr<const void>(v),
                                 as_ptr<void>(o), as_ptr<float>(lse), B, T, N, Cq, Cv, scale,
                                 stream);
      },
      py::arg("dtype"), py::arg("f"), py::arg("v"), py::arg("o"), py::arg("lse"), py::arg("B"),
      py::arg("T"), py::arg("N"), py::arg("Cq"), py::arg("Cv"), py::arg("scale"),
      py::arg("stream"));
  m.def(
      "pap_attn_bwd_cuda",
      [](int dtype, std::uintptr_t f, std::uintptr_t v, std::uintptr_t lse, std::uintptr_t dO,
         std::uintptr_t delta, std::uintptr_t df, std::uintptr_t dv, int64_t B, int64_t T,
         int64_t N, int64_t Cq, int64_t Cv, double scale, std::uintptr_t stream) {
        py::gil_scoped_release nogil;
        pymtl::pap_attn_bwd_cuda(dtype, as_ptr<const void>(f), as_ptr<const void>(v),
                                 as_ptr<const float>(lse), as_ptr<const void>(dO),
                                 as_ptr<const float>(delta), as_ptr<float>(df),
                                 as_ptr<float>(dv), B, T, N, Cq, Cv, scale, stream);
      },
      py::arg("dtype"), py::arg("f"), py::arg("v"), py::arg("lse"), py::arg("dO"),
      py::arg("delta"), py::arg("df"), py::arg("dv"), py::arg("B"), py::arg("T"), py::arg("N"),
      py::arg("Cq"), py::arg("Cv"), py::arg("scale"), py::arg("stream"));
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pymtl compiled kernels (CPU always, CUDA when built with a CUDA compiler)";
#ifdef PYMTL_HAVE_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
#ifdef PYMTL_HAVE_OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
  m.def("max_threads", &pymtl::max_threads, "OpenMP threads the CPU kernels may use.");
  bind_gram(m);
  bind_combine(m);
  bind_projection(m);
  bind_graddrop(m);
  bind_pap(m);
}
