// pymtl._C: the only pybind11 translation unit. No kernels here: each op family lives in
// csrc/<op>/ and is exposed as functions taking tensor addresses (Python ints) and sizes.
// The Python wrappers in pymtl/ops/ own allocation, validation and the torch.library
// registration; every call below releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/checks.h"
#include "gram/gram.h"

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
}
