// The `kernels` submodule's step ops: the step table (step_rows), the step counter's gather
// (step_begin) and axpby, which mixes two arrays by a step's pair (StepMix). The sampler calls
// the ops itself; these bindings are for the tests and the kernel benchmark.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "bind.h"
#include "kernel_params.h"

namespace egsde::bindings {

void bind_step_kernels(py::module_& k) {
  k.attr("STEP_ROW_WORDS") = kStepRowWords;
  k.attr("STEP_SCALARS_WORDS") = kStepScalarsWords;
  py::enum_<StepMix>(k, "StepMix")
      .value("PERTURBED_SOURCE", StepMix::PerturbedSource)
      .value("ILVR_CORRECTION", StepMix::IlvrCorrection);
  k.def("step_rows", [](const StepTable& steps, float ls, float li, bool ilvr) {
    const std::vector<StepRow> rows = step_rows(steps, ls, li, ilvr);
    py::array_t<float> out({static_cast<index_t>(rows.size()), static_cast<index_t>(kStepRowWords)});
    std::memcpy(out.mutable_data(), rows.data(), rows.size() * sizeof(StepRow));
    return out;
  }, py::arg("steps"), py::arg("ls"), py::arg("li"), py::arg("ilvr"),
        "The sampler's device-side step table: float32 [K, STEP_ROW_WORDS] (t, inv_sqrt_alpha, eps_coef, "
        "ls_w, li_w, sigma, sqrt_abar, sqrt_one_minus_abar, ilvr).");
  k.def("step_begin", [](const py::handle& table, const py::handle& state, const py::handle& scalars,
                         const py::handle& t_now, index_t batch, index_t updates, std::uintptr_t cuda_stream) {
    const ArrayArg ta = as_array(table, false, "table"), sa = as_array(scalars, true, "scalars");
    const ArrayArg tn = as_array(t_now, true, "t_now");
    const ArrayOf<std::int64_t> st = as_array_of<std::int64_t>(state, true, "state");
    require(ta.size >= kStepRowWords && ta.size % kStepRowWords == 0, "table: needs [K, STEP_ROW_WORDS] floats");
    require_size(st, 1, "state");
    require_size(sa, kStepScalarsWords, "scalars");
    require_size(tn, batch, "t_now");
    require(updates >= 1, "updates: the run's updates (repeats * K) must be >= 1");
    const ExecutionContext ctx = context_on({ta.device, st.device, sa.device, tn.device}, cuda_stream);
    step_begin(ctx, StepBeginParams{reinterpret_cast<const StepRow*>(ta.data), ta.size / kStepRowWords, updates,
                                    reinterpret_cast<StepState*>(st.data), reinterpret_cast<StepScalars*>(sa.data),
                                    tn.data, batch});
  }, py::arg("table"), py::arg("state"), py::arg("scalars"), py::arg("t_now"), py::arg("batch"),
        py::arg("updates"), py::arg("cuda_stream") = 0,
        "Gather the step counter's row: state int64 [1] (the counter g, clamped into [0, updates), then "
        "advanced), scalars float32 [STEP_SCALARS_WORDS] (the row, then the 64-bit draws of streams 0 and 1, "
        "each as uint32 (low, high) words), t_now [batch]; updates: the run's (repeats * K).");
  k.def("axpby", [](const py::handle& x, const py::handle& y, const py::handle& out, float a, float b,
                    std::uintptr_t cuda_stream, const py::object& step, StepMix mix) {
    const ArrayArg xa = as_array(x, false, "x"), ya = as_array(y, false, "y"), oa = as_array(out, true, "out");
    require(xa.size == ya.size && xa.size == oa.size, "axpby: arrays differ in size");
    const ExecutionContext ctx = context_of({xa, ya, oa}, cuda_stream);
    AxpbyParams p{xa.data, ya.data, oa.data, oa.size, a, b};
    p.step = as_step_scalars(step_scalars_arg(step), ctx);
    p.mix = mix;
    axpby(ctx, p);
  }, py::arg("x"), py::arg("y"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("cuda_stream") = 0,
        py::arg("step") = py::none(), py::arg("mix") = StepMix::PerturbedSource,
        "out = a * x + b * y (with `step`: a and b the step's pair named by `mix`)");
}

}  // namespace egsde::bindings
