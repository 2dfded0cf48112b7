// The `kernels` submodule's low-pass ops: LowpassParams (the image sizes, resize matrices,
// workspace and eigenpairs), lowpass_apply, lowpass_energy_grad and the stable pull (lowpass_pull).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "bind.h"
#include "kernel_params.h"

namespace egsde::bindings {
namespace {

using PyLowpassParams = Params<LowpassParams>;

void bind_lowpass_params(py::module_& k) {
  auto cls = params_class<LowpassParams>(
      k, "LowpassParams",
      "The low-pass filter of a kernel call (egsde/ops/lowpass.h): the image sizes, the resize matrices, the "
      "workspace (lowpass_workspace_floats floats) and, for lowpass_pull, A's eigenpairs; float32 arrays on the "
      "host or the device, held by the struct.");
  cls.def_readwrite("batch", &LowpassParams::batch)
      .def_readwrite("channels", &LowpassParams::channels)
      .def_readwrite("height", &LowpassParams::height)
      .def_readwrite("width", &LowpassParams::width)
      .def_readwrite("low_h", &LowpassParams::low_h)
      .def_readwrite("low_w", &LowpassParams::low_w);
  def_array(cls, "down_h", &LowpassParams::down_h, "D_h [low_h, height]");
  def_array(cls, "up_h", &LowpassParams::up_h, "U_h [height, low_h]");
  def_array(cls, "down_w", &LowpassParams::down_w, "D_w [low_w, width]");
  def_array(cls, "up_w", &LowpassParams::up_w, "U_w [width, low_w]");
  def_array(cls, "workspace", &LowpassParams::workspace, "lowpass_workspace_floats(params) floats (written)");
  def_array(cls, "eig_h", &LowpassParams::eig_h, "lowpass_pull: Q_h [height, low_h]");
  def_array(cls, "lambda_h", &LowpassParams::lambda_h, "lowpass_pull: lambda_h [low_h]");
  def_array(cls, "eig_w", &LowpassParams::eig_w, "lowpass_pull: Q_w [width, low_w]");
  def_array(cls, "lambda_w", &LowpassParams::lambda_w, "lowpass_pull: lambda_w [low_w]");
}

// The arrays of a low-pass call's parameters, checked against its sizes (with the eigenpairs for
// the pull): the ones its device check covers.
std::vector<ArrayArg> lowpass_arrays(const PyLowpassParams& p, bool eigenpairs) {
  std::vector<ArrayArg> arrays{p.required("down_h", p.low_h * p.height), p.required("up_h", p.height * p.low_h),
                               p.required("down_w", p.low_w * p.width), p.required("up_w", p.width * p.low_w),
                               p.required("workspace", lowpass_workspace_floats(p))};
  if (eigenpairs) {
    for (const ArrayArg& a : {p.required("eig_h", p.height * p.low_h), p.required("lambda_h", p.low_h),
                              p.required("eig_w", p.width * p.low_w), p.required("lambda_w", p.low_w)})
      arrays.push_back(a);
  }
  return arrays;
}

// The images of a low-pass call: float32 arrays of batch * channels * height * width elements,
// added to `arrays` for the device check.
ArrayArg lowpass_image(const PyLowpassParams& p, const py::handle& image, bool writable, const char* name,
                       std::vector<ArrayArg>& arrays) {
  const ArrayArg a = as_array(image, writable, name);
  require_size(a, p.batch * p.channels * p.height * p.width, name);
  arrays.push_back(a);
  return a;
}

}  // namespace

void bind_lowpass_kernels(py::module_& k) {
  bind_lowpass_params(k);
  k.def("lowpass_workspace_floats", [](const PyLowpassParams& p) { return lowpass_workspace_floats(p); },
        py::arg("params"), "The workspace floats a low-pass call of these sizes needs.");
  k.def("lowpass_apply", [](const PyLowpassParams& p, const py::handle& x, const py::handle& out,
                            std::uintptr_t cuda_stream) {
    std::vector<ArrayArg> arrays = lowpass_arrays(p, false);
    const ArrayArg xa = lowpass_image(p, x, false, "x", arrays), oa = lowpass_image(p, out, true, "out", arrays);
    lowpass_apply(context_of(arrays, cuda_stream), p, xa.data, oa.data);
  }, py::arg("params"), py::arg("x"), py::arg("out"), py::arg("cuda_stream") = 0, "out = L(x)");
  k.def("lowpass_energy_grad", [](const PyLowpassParams& p, const py::handle& y, const py::handle& x,
                                  const py::handle& grad, EnergyKind kind, std::uintptr_t cuda_stream) {
    std::vector<ArrayArg> arrays = lowpass_arrays(p, false);
    const ArrayArg ya = lowpass_image(p, y, false, "y", arrays), xa = lowpass_image(p, x, false, "x", arrays);
    const ArrayArg ga = lowpass_image(p, grad, true, "grad", arrays);
    lowpass_energy_grad(context_of(arrays, cuda_stream), p, kind, ya.data, xa.data, ga.data);
  }, py::arg("params"), py::arg("y"), py::arg("x"), py::arg("grad"), py::arg("kind"), py::arg("cuda_stream") = 0,
        "grad = the gradient in y of the low-pass energy of `kind` between y and x");
  k.def("lowpass_pull", [](const PyLowpassParams& p, const py::handle& y, const py::handle& x, LowpassForm form,
                           float c, std::uintptr_t cuda_stream, const py::object& step) {
    std::vector<ArrayArg> arrays = lowpass_arrays(p, true);
    const ArrayArg ya = lowpass_image(p, y, true, "y", arrays), xa = lowpass_image(p, x, false, "x", arrays);
    const ExecutionContext ctx = context_of(arrays, cuda_stream);
    lowpass_pull(ctx, p, form, ya.data, xa.data, c, as_step_scalars(step_scalars_arg(step), ctx));
  }, py::arg("params"), py::arg("y"), py::arg("x"), py::arg("form"), py::arg("c"), py::arg("cuda_stream") = 0,
        py::arg("step") = py::none(),
        "y <- x + f(c A)(y - x) in place (the stable low-pass pull; with `step`: c = 2 li_pull of the step's row).");
}

}  // namespace egsde::bindings
