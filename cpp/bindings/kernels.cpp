// The `kernels` submodule: each op of the core on numpy (host) or __cuda_array_interface__
// (device) arrays, for the tests and the kernel benchmark (the sampler calls the ops itself).
// The ops with many parameters take their parameter struct, bound as a Python class
// (kernels.UpdateParams, kernels.LowpassParams): scalar fields as they are, pointer fields set
// from arrays, which the struct holds (see Params).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "bind.h"
#include "conversion.h"
#include "egsde/device.h"
#include "egsde/dispatch.h"
#include "egsde/sampler.h"

namespace egsde::bindings {
namespace {

// An array a pointer field of a parameter struct was set from: the object (kept alive with the
// struct) and its data, element count and device, as converted when it was set.
struct HeldArray {
  py::object object;
  ArrayArg array;
};

// A kernel's parameter struct P as Python sees it: P itself (what the op receives), and the
// arrays its pointer fields were set from, by field name, for the kernel's size and device checks.
template <class P>
struct Params : P {
  std::map<std::string, HeldArray> arrays;

  // The array set as field `name` (none: an empty ArrayArg), with at least n elements.
  ArrayArg array(const std::string& name, index_t n = 0) const {
    const auto it = arrays.find(name);
    if (it == arrays.end()) return ArrayArg{};
    require_size(it->second.array, n, name.c_str());
    return it->second.array;
  }

  // The array set as field `name`, which the op needs.
  ArrayArg required(const std::string& name, index_t n) const {
    require(arrays.count(name) != 0, name + ": not set (a float32 array of at least " + std::to_string(n) +
                                         " elements)");
    return array(name, n);
  }
};

// The class of Params<P>: a default constructor that also takes any fields as keywords,
// e.g. LowpassParams(batch=1, down_h=d, ...).
template <class P>
py::class_<Params<P>> params_class(py::module_& k, const char* name, const char* doc) {
  py::class_<Params<P>> cls(k, name, doc);
  const std::string type(name);
  cls.def(py::init([type](const py::kwargs& fields) {
    py::object self = py::cast(Params<P>());
    for (const auto& [field, value] : fields) {
      const std::string key = py::str(field);
      require(key.rfind('_', 0) != 0 && py::hasattr(self, field), type + ": no field '" + key + "'");
      py::setattr(self, field, value);
    }
    return self.cast<Params<P>>();
  }));
  return cls;
}

// Pointer field `field` as the property `name`: set from a float32 array (writable where the
// field is not const; None unsets it), read back as that array.
template <class P, class T>
void def_array(py::class_<Params<P>>& cls, const char* name, T* P::*field, const char* doc) {
  static_assert(std::is_same_v<std::remove_const_t<T>, float>, "float32 array fields only");
  const std::string key(name);
  cls.def_property(
      name,
      [key](const Params<P>& p) -> py::object {
        const auto it = p.arrays.find(key);
        return it == p.arrays.end() ? py::none() : it->second.object;
      },
      [key, field](Params<P>& p, const py::object& value) {
        if (value.is_none()) {
          p.*field = nullptr;
          p.arrays.erase(key);
          return;
        }
        const ArrayArg a = as_array(value, !std::is_const_v<T>, key.c_str());
        p.*field = a.data;
        p.arrays[key] = HeldArray{value, a};
      },
      doc);
}

// The stream whose draw a kernel call reads from the step scalars must be one of the sampler's.
void require_noise_stream(std::uint32_t stream, const py::object& step) {
  require(step.is_none() || stream < static_cast<std::uint32_t>(kNoiseStreams),
          "stream: with step, the stream must be 0 (sampling) or 1 (perturbation)");
}

// The optional `step` argument of a kernel: one StepScalars as float32 words (from kernels.step_begin).
ArrayArg step_scalars_arg(const py::object& step) {
  if (step.is_none()) return ArrayArg{};
  ArrayArg a = as_array(step, false, "step");
  require_size(a, kStepScalarsWords, "step");
  return a;
}

const StepScalars* as_step_scalars(const ArrayArg& a, const ExecutionContext& ctx) {
  if (!a.data) return nullptr;
  require(a.device == ctx.device, "step: the step scalars are on another device than the arrays");
  return reinterpret_cast<const StepScalars*>(a.data);
}

// The ops with a few arguments each: the step table and step_begin, the noise, axpby.
void bind_step_noise_axpby(py::module_& k) {
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
  k.def("philox_normal", [](const py::handle& out, index_t batch, index_t per_image, const py::object& seed,
                            std::uint32_t stream, std::uint64_t draw, std::uintptr_t cuda_stream,
                            const py::object& step, const py::object& injected) {
    const ArrayArg o = as_array(out, true, "out");
    require_size(o, batch * per_image, "out");
    const ExecutionContext ctx = context_of({o}, cuda_stream);
    require_noise_stream(stream, step);
    const SeedsArg seed_values = seeds_arg(seed, batch);
    const StagedValues<std::uint64_t> seeds(ctx, seed_values.data, batch, seed_values.device);
    PhiloxNormalParams p{o.data, batch, per_image, NoiseKey{seeds.data(), stream, draw}};
    p.step = as_step_scalars(step_scalars_arg(step), ctx);
    if (!injected.is_none()) {
      const ArrayArg inj = as_array(injected, false, "injected");
      require(inj.device == ctx.device && inj.size % (batch * per_image) == 0,
              "injected: needs [draws, batch, per_image] floats on the device of out");
      p.injected = inj.data;
    }
    philox_normal(ctx, p);
  }, py::arg("out"), py::arg("batch"), py::arg("per_image"), py::arg("seed"), py::arg("stream"), py::arg("draw"),
        py::arg("cuda_stream") = 0, py::arg("step") = py::none(), py::arg("injected") = py::none(),
        "Draw `draw` of `stream` for images with seeds `seed` (an integer for every image, or one per image; "
        "with `step`: the step's draw); with `injected`, copy that draw.");
  k.def("philox_uint32", [](index_t batch, index_t per_image, const py::object& seed, std::uint32_t stream,
                            std::uint64_t draw) {
    const index_t blocks = (per_image + 3) / 4;
    py::array_t<std::uint32_t> out({batch, blocks * 4});
    const SeedsArg seeds = seeds_arg(seed, batch);
    require(seeds.device == Device::CPU, "seed: philox_uint32 runs on the CPU: host seeds");
    cpu::philox_uint32(out.mutable_data(), batch, per_image, NoiseKey{seeds.data, stream, draw});
    return out;
  }, py::arg("batch"), py::arg("per_image"), py::arg("seed"), py::arg("stream"), py::arg("draw"),
        "The raw Philox stream on the CPU: uint32 [batch, ceil(per_image / 4) * 4].");
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

using PyLowpassParams = Params<LowpassParams>;
using PyUpdateParams = Params<UpdateParams>;

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

void bind_lowpass(py::module_& k) {
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

void bind_update(py::module_& k) {
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

}  // namespace

void bind_kernels(py::module_& m) {
  py::module_ k = m.def_submodule("kernels", "The kernels on numpy or CUDA arrays (tests, benchmarks).");
  k.attr("STEP_ROW_WORDS") = kStepRowWords;
  k.attr("MAX_HISTORY") = kMaxHistory;
  k.attr("STEP_SCALARS_WORDS") = kStepScalarsWords;
  bind_step_noise_axpby(k);
  bind_lowpass(k);
  bind_update(k);
}

}  // namespace egsde::bindings
