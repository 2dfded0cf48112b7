// egsde_rt._core: the native core's Python face. This file only binds.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "egsde-rt native core";
  m.attr("__version__") = EGSDE_VERSION;
  m.attr("built_with_cuda") = false;
}
