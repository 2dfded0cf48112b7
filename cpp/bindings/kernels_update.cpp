// The `kernels` submodule's fused update: UpdateParams (the arrays, the coefficients and the noise
// stream and draw) and egsde_update, with a multistep solver's earlier data predictions.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind.h"
#include "kernel_params.h"

namespace egsde::bindings {
namespace {

using PyUpdateParams = Params<UpdateParams>;

void bind_update_params(py::module_& k) {
  auto cls = params_class<UpdateParams>(
      k, "UpdateParams",
      "The fused update's parameters (egsde/ops/egsde_update.h): float32 arrays [batch, per_image] on the host or "
      "the device, held by the struct (grad_s, grad_i, noise: optional; x0_prev: a multistep solver's earlier data "
      "predictions [history, batch, per_image], newest first, shifted and this update's D put first), the "
      "coefficients, and the noise stream and draw (the seeds are egsde_update's).");
  def_array(cls, "y", &UpdateParams::y, "the current sample");
  def_array(cls, "eps", &UpdateParams::eps, "the score network's output");
  def_array(cls, "grad_s", &UpdateParams::grad_s, "the domain-specific expert's gradient (None: skipped)");
  def_array(cls, "grad_i", &UpdateParams::grad_i, "the low-pass expert's gradient (None: skipped)");
  def_array(cls, "noise", &UpdateParams::noise,
            "injected z (None: drawn; with `step`: the injected draws [draws, batch, per_image])");
  def_array(cls, "out", &UpdateParams::out, "the result (may be y)");
  def_array(cls, "x0_prev", &UpdateParams::x0_prev, "multistep solvers: the earlier data predictions (None: none)");
  cls.def_readwrite("batch", &UpdateParams::batch)
      .def_readwrite("per_image", &UpdateParams::per_image)
      .def_readwrite("inv_sqrt_alpha", &UpdateParams::inv_sqrt_alpha)
      .def_readwrite("eps_coef", &UpdateParams::eps_coef)
      .def_readwrite("ls_w", &UpdateParams::ls_w)
      .def_readwrite("li_w", &UpdateParams::li_w)
      .def_readwrite("sigma", &UpdateParams::sigma)
      .def_readwrite("prev_coef", &UpdateParams::prev_coef)
      .def_readwrite("x0_y", &UpdateParams::x0_y)
      .def_readwrite("x0_eps", &UpdateParams::x0_eps)
      .def_readwrite("ls_x0", &UpdateParams::ls_x0)
      .def_readwrite("li_x0", &UpdateParams::li_x0)
      .def_readwrite("prev_coef2", &UpdateParams::prev_coef2)
      .def_readwrite("prev_coef3", &UpdateParams::prev_coef3)
      .def_property("stream", [](const PyUpdateParams& p) { return p.key.stream; },
                    [](PyUpdateParams& p, std::uint32_t stream) { p.key.stream = stream; }, "the noise stream")
      .def_property("draw", [](const PyUpdateParams& p) { return p.key.draw; },
                    [](PyUpdateParams& p, std::uint64_t draw) { p.key.draw = draw; }, "the noise draw");
}

}  // namespace

void bind_update_kernels(py::module_& k) {
  k.attr("MAX_HISTORY") = kMaxHistory;
  bind_update_params(k);
  k.def("egsde_update", [](const PyUpdateParams& p, const py::object& seed, std::uintptr_t cuda_stream,
                           const py::object& step) {
    require(p.batch >= 1 && p.per_image >= 1, "egsde_update: batch and per_image must be >= 1");
    const index_t n = checked_mul(p.batch, p.per_image, "egsde_update: batch * per_image");
    const ArrayArg ya = p.required("y", n), ea = p.required("eps", n), oa = p.required("out", n);
    p.array("grad_s", n);  // the optional arrays: their sizes checked where set
    p.array("grad_i", n);
    const ArrayArg nz = p.array("noise", n);
    UpdateParams u = p;
    const ArrayArg prev = p.array("x0_prev");
    if (p.arrays.count("x0_prev") != 0) {
      require(prev.size >= n && prev.size % n == 0 && prev.size / n <= kMaxHistory,
              "x0_prev: the earlier data predictions [history (1..3), batch, per_image]");
      u.history = static_cast<int>(prev.size / n);
    }
    require((u.prev_coef2 == 0.0f || u.history >= 2) && (u.prev_coef3 == 0.0f || u.history >= 3),
            "egsde_update: prev_coef2 / prev_coef3 read D_{k-2} / D_{k-3}: x0_prev needs that many earlier data "
            "predictions [history, batch, per_image]");
    const ExecutionContext ctx = context_of({ya, ea, oa}, cuda_stream);
    require_noise_stream(u.key.stream, step);
    const SeedsArg seed_values = seeds_arg(seed, u.batch);
    const StagedValues<std::uint64_t> seeds(ctx, seed_values.data, u.batch, seed_values.device);
    u.key.seeds = seeds.data();
    u.step = as_step_scalars(step_scalars_arg(step), ctx);
    if (u.step && u.noise) require(nz.size % n == 0, "noise: with step, the injected draws [draws, batch, per_image]");
    require(!prev.data || prev.device == ctx.device, "x0_prev: on another device than the arrays");
    egsde_update(ctx, u);
  }, py::arg("params"), py::arg("seed") = 0, py::arg("cuda_stream") = 0, py::arg("step") = py::none(),
        "The fused update of `params`, images seeded by `seed` (an integer for every image, or one per image); "
        "with `step`: the step's coefficients and draw (`params.noise` then holds the injected draws).");
}

}  // namespace egsde::bindings
