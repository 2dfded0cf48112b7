// The parts of egsde_rt._core, each bound by its own file (module.cpp calls them in this order).
#pragma once

#include <pybind11/pybind11.h>

namespace egsde::bindings {

// conversion.cpp: NativeError, Device, TensorRef.
void bind_conversion(pybind11::module_& m);
// sampler.cpp: Runner, StepTable, SamplerConfig (and its enums), Sampler.
void bind_sampler(pybind11::module_& m);
// kernels.cpp: the `kernels` submodule (tests, benchmarks) and the kernels' parameter structs.
void bind_kernels(pybind11::module_& m);

}  // namespace egsde::bindings
