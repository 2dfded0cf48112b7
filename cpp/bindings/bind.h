// The parts of egsde_rt._core, each bound by its own file (module.cpp calls them in this order).
#pragma once

#include <pybind11/pybind11.h>

namespace egsde::bindings {

// conversion.cpp: NativeError, Device, TensorRef.
void bind_conversion(pybind11::module_& m);
// sampler.cpp: Runner, StepTable, SamplerConfig (and its enums), Sampler.
void bind_sampler(pybind11::module_& m);
// The `kernels` submodule k (tests, benchmarks), one op family a file (what they share: kernel_params.h).
// kernels_step.cpp: STEP_ROW_WORDS, STEP_SCALARS_WORDS, StepMix, step_rows, step_begin, axpby.
void bind_step_kernels(pybind11::module_& k);
// kernels_noise.cpp: philox_normal, philox_uint32.
void bind_noise_kernels(pybind11::module_& k);
// kernels_lowpass.cpp: LowpassParams, lowpass_workspace_floats, lowpass_apply, lowpass_energy_grad, lowpass_pull.
void bind_lowpass_kernels(pybind11::module_& k);
// kernels_update.cpp: MAX_HISTORY, UpdateParams, egsde_update.
void bind_update_kernels(pybind11::module_& k);

}  // namespace egsde::bindings
