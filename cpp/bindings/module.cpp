// egsde_rt._core: the native core's Python face. The bindings only bind, one concept per file:
// conversion.cpp (errors, devices, buffer views), sampler.cpp (the sampler and its configuration),
// and the `kernels` submodule by op family: kernels_step.cpp, kernels_noise.cpp, kernels_lowpass.cpp,
// kernels_update.cpp (bind.h lists what each binds); the conversions they share are in conversion.h,
// the kernels' parameter structs in kernel_params.h.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bind.h"
#include "egsde/device.h"
#include "egsde/dispatch.h"

namespace py = pybind11;
using namespace egsde;

PYBIND11_MODULE(_core, m) {
  m.doc() = "egsde-rt native core: the EGSDE sampling loop and its CPU/CUDA kernels";
  m.attr("__version__") = EGSDE_VERSION;
  m.attr("built_with_cuda") = built_with_cuda();
  m.def("cuda_device_count", []() { return cuda_device_count(nullptr); },
        "Number of usable CUDA devices (0 without CUDA, a driver or a GPU; never raises).");
  m.def("cuda_status", []() {
    std::string reason;
    const int n = cuda_device_count(&reason);
    return n > 0 ? std::to_string(n) + " CUDA device(s)" : reason;
  }, "Why CUDA is or is not usable, in words.");
  m.def("cuda_stream_synchronize", [](std::uintptr_t stream) {
    synchronize(ExecutionContext{built_with_cuda() ? Device::CUDA : Device::CPU, reinterpret_cast<void*>(stream)});
  }, py::arg("stream"), "Wait for the work queued on a CUDA stream (a no-op without CUDA).");

  bindings::bind_conversion(m);
  bindings::bind_sampler(m);
  py::module_ kernels = m.def_submodule("kernels", "The kernels on numpy or CUDA arrays (tests, benchmarks).");
  bindings::bind_step_kernels(kernels);  // first: StepMix, a default argument of later ops
  bindings::bind_noise_kernels(kernels);
  bindings::bind_lowpass_kernels(kernels);
  bindings::bind_update_kernels(kernels);
}
