// egsde_rt._core: the native core's Python face. This file only binds (buffer conversion lives
// in buffers.h).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <iterator>

#include "buffers.h"
#include "egsde/device.h"
#include "egsde/dispatch.h"
#include "egsde/sampler.h"

namespace py = pybind11;
using namespace egsde;
using bindings::ArrayArg;
using bindings::as_array;
using bindings::context_of;
using bindings::require_size;

namespace {

class PyRunner : public Runner {
 public:
  using Runner::Runner;
  void score(const TensorRef& y, const TensorRef& t, const TensorRef& eps_out) override {
    PYBIND11_OVERRIDE_PURE(void, Runner, score, y, t, eps_out);
  }
  void dse_grad(const TensorRef& y, const TensorRef& x_t, const TensorRef& t, const TensorRef& grad_out) override {
    PYBIND11_OVERRIDE_PURE(void, Runner, dse_grad, y, x_t, t, grad_out);
  }
};

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::vector<float> to_vector(const FloatArray& a) { return std::vector<float>(a.data(), a.data() + a.size()); }

// The low-pass matrices and workspace of a kernel call, checked against the image sizes.
struct LowpassArrays {
  ArrayArg down_h, up_h, down_w, up_w, workspace;
  LowpassParams params;
};

LowpassArrays lowpass_arrays(const py::handle& down_h, const py::handle& up_h, const py::handle& down_w,
                             const py::handle& up_w, const py::handle& workspace, index_t batch, index_t channels,
                             index_t height, index_t width, index_t low_h, index_t low_w) {
  LowpassArrays a{as_array(down_h, false, "down_h"), as_array(up_h, false, "up_h"), as_array(down_w, false, "down_w"),
                  as_array(up_w, false, "up_w"), as_array(workspace, true, "workspace"), {}};
  a.params = LowpassParams{a.down_h.data, a.up_h.data, a.down_w.data, a.up_w.data, batch, channels, height, width,
                           low_h, low_w, a.workspace.data};
  require_size(a.down_h, low_h * height, "down_h");
  require_size(a.up_h, height * low_h, "up_h");
  require_size(a.down_w, low_w * width, "down_w");
  require_size(a.up_w, width * low_w, "up_w");
  require_size(a.workspace, lowpass_workspace_floats(a.params), "workspace");
  return a;
}

// The arrays of a run (x0, host or on the sampler's device, and the optional injected host
// noise), as the sampler's buffers need them (the values are checked in Python).
struct RunInputs {
  const float* x0 = nullptr;
  const float* noise = nullptr;
  const float* perturb_noise = nullptr;
};

ArrayArg image_arg(const Sampler& s, const py::handle& image, bool writable, const char* name) {
  const ArrayArg a = as_array(image, writable, name);
  require(a.device == Device::CPU || a.device == s.config().device,
          std::string(name) + ": a CUDA array for a CPU sampler");
  require(a.size == s.numel(), std::string(name) + ": has " + std::to_string(a.size) + " elements, the sampler's "
                                  "images " + std::to_string(s.numel()));
  return a;
}

RunInputs run_inputs(const Sampler& s, const py::handle& x0, const py::object& noise,
                     const py::object& perturb_noise) {
  RunInputs in;
  in.x0 = image_arg(s, x0, false, "x0").data;
  if (!noise.is_none()) {
    const ArrayArg n = as_array(noise, false, "noise");
    require(n.device == Device::CPU, "noise: injected noise is a host array");
    require_size(n, s.injected_noise_floats(kStreamSampling), "noise");
    in.noise = n.data;
  }
  if (!perturb_noise.is_none()) {
    const ArrayArg n = as_array(perturb_noise, false, "perturb_noise");
    require(n.device == Device::CPU, "perturb_noise: injected noise is a host array");
    require_size(n, s.injected_noise_floats(kStreamPerturb), "perturb_noise");
    in.perturb_noise = n.data;
  }
  return in;
}

// The seeds of a run or a kernel call, converted (egsde_rt.noise.check_seeds checks them in
// Python): one integer for every image, or a uint64 array [batch] (host or device).
struct SeedsArg {
  std::vector<std::uint64_t> broadcast;
  const std::uint64_t* data = nullptr;
  Device device = Device::CPU;
};

SeedsArg seeds_arg(const py::handle& seed, index_t batch) {
  SeedsArg a;
  if (py::isinstance<py::int_>(seed)) {
    std::uint64_t value = 0;
    try {
      value = seed.cast<std::uint64_t>();
    } catch (const py::cast_error&) {
      throw Error("seed: must be an integer in [0, 2^64) (egsde_rt.noise.check_seeds)");
    }
    a.broadcast.assign(static_cast<size_t>(batch), value);
    a.data = a.broadcast.data();
    return a;
  }
  const bindings::ArrayOf<std::uint64_t> array = bindings::as_array_of<std::uint64_t>(seed, false, "seed");
  require(array.size == batch, "seed: needs an integer or one per image (" + std::to_string(batch) + "), got " +
                                   std::to_string(array.size));
  a.data = array.data;
  a.device = array.device;
  return a;
}

// The seeds of a sampler's run: host seeds, or seeds in the sampler's device memory.
SeedsArg sampler_seeds(const Sampler& s, const py::handle& seed) {
  SeedsArg a = seeds_arg(seed, s.config().batch);
  require(a.device == Device::CPU || a.device == s.config().device, "seed: a CUDA array for a CPU sampler");
  return a;
}

// The stream whose draw a kernel call reads from the step scalars must be one of the sampler's.
void require_noise_stream(std::uint32_t stream, const py::object& step) {
  require(step.is_none() || stream < static_cast<std::uint32_t>(kNoiseStreams),
          "stream: with step, the stream must be 0 (sampling) or 1 (perturbation)");
}

// A count of SamplerConfig (index_t) from Python: any integer (an int or a numpy integer, not a
// bool) in [0, 2^63), else a NativeError naming the field (never pybind11's bare TypeError of a
// failed conversion).
template <index_t SamplerConfig::*Field>
void def_count(py::class_<SamplerConfig>& cls, const char* name, const char* doc) {
  const std::string field(name);
  cls.def_property(
      name, [](const SamplerConfig& c) { return c.*Field; },
      [field](SamplerConfig& c, const py::object& value) {
        index_t v = -1;
        if (!py::isinstance<py::bool_>(value) && py::hasattr(value, "__index__")) {
          try {
            v = py::int_(value.attr("__index__")()).cast<index_t>();
          } catch (const py::error_already_set&) {
          } catch (const py::cast_error&) {
          }
        }
        require(v >= 0, "SamplerConfig." + field + ": must be an integer in [0, 2^63), got " +
                            std::string(py::repr(value)));
        c.*Field = v;
      },
      doc);
}

py::array_t<float> image_array(const SamplerConfig& c) {
  return py::array_t<float>({c.batch, c.channels, c.height, c.width});
}

// Sampler.run and run_profiled: convert the arrays, run with the GIL released (the runner and
// `progress` take it back for their calls), and return the result (None if cancelled). `out`:
// the array to write into (host, or on the sampler's device), or None for a new host array.
py::object run_sampler(Sampler& s, const py::handle& x0, Runner& runner, const py::handle& seed,
                       const ProgressFn& progress, const py::object& noise,
                       const py::object& perturb_noise, const py::object& out, StepTimes* times,
                       const ReplayFn& replay = nullptr) {
  const RunInputs in = run_inputs(s, x0, noise, perturb_noise);
  const SeedsArg seeds = sampler_seeds(s, seed);
  const py::object result = out.is_none() ? py::object(image_array(s.config())) : out;
  float* result_data = image_arg(s, result, true, "out").data;
  bool done = false;
  {
    py::gil_scoped_release release;
    done = s.run(in.x0, result_data, runner, seeds.data, progress, in.noise, in.perturb_noise, times, replay);
  }
  if (!done) return py::none();
  return result;
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

}  // namespace

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

  // Native failures raise egsde_rt.errors.NativeError (an EgsdeError), defined in Python so that it
  // can be caught without importing the native core.
  static py::handle native_error = py::object(py::module_::import("egsde_rt.errors").attr("NativeError")).release();
  m.attr("NativeError") = native_error;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::set_error(native_error, e.what());
    }
  });

  py::enum_<Device>(m, "Device").value("CPU", Device::CPU).value("CUDA", Device::CUDA);
  py::enum_<EnergyKind>(m, "EnergyKind").value("NEG_L2", EnergyKind::NegL2).value("COSINE", EnergyKind::Cosine);
  py::enum_<LowpassForm>(m, "LowpassForm")
      .value("GRADIENT", LowpassForm::Gradient)
      .value("IMPLICIT", LowpassForm::Implicit)
      .value("EXACT", LowpassForm::Exact);

  py::class_<TensorRef>(m, "TensorRef", "A view of a sampler buffer, valid during a runner call.")
      .def_property_readonly("ptr", [](const TensorRef& t) { return reinterpret_cast<std::uintptr_t>(t.data); })
      .def_property_readonly("shape", [](const TensorRef& t) { return py::tuple(py::cast(t.shape)); })
      .def_property_readonly("device", [](const TensorRef& t) { return t.device == Device::CUDA ? "cuda" : "cpu"; })
      .def_property_readonly("stream", [](const TensorRef& t) { return reinterpret_cast<std::uintptr_t>(t.stream); })
      .def_property_readonly("__array_interface__", [](const TensorRef& t) {
        require(t.device == Device::CPU, "a CUDA buffer has no __array_interface__");
        return bindings::array_interface(t, false);
      })
      .def_property_readonly("__cuda_array_interface__", [](const TensorRef& t) {
        require(t.device == Device::CUDA, "a host buffer has no __cuda_array_interface__");
        return bindings::array_interface(t, true);
      });

  py::class_<Runner, PyRunner>(m, "Runner", "Network backend interface called by the sampler.")
      .def(py::init<>())
      .def("score", &Runner::score, py::arg("y"), py::arg("t"), py::arg("eps_out"))
      .def("dse_grad", &Runner::dse_grad, py::arg("y"), py::arg("x_t"), py::arg("t"), py::arg("grad_out"));

  py::class_<StepTable> step_table(m, "StepTable", "The per-update columns (egsde/step_table.h), float32 lists.");
  step_table.def(py::init<>()).def("__len__", &StepTable::size);
#define EGSDE_BIND_COLUMN(name) step_table.def_readwrite(#name, &StepTable::name);
  EGSDE_STEP_TABLE_COLUMNS(EGSDE_BIND_COLUMN)
#undef EGSDE_BIND_COLUMN
  py::tuple column_names(std::size(kStepTableColumns));
  for (size_t i = 0; i < std::size(kStepTableColumns); ++i) column_names[i] = kStepTableColumns[i];
  m.attr("STEP_TABLE_COLUMNS") = column_names;

  py::class_<SamplerConfig> sampler_config(m, "SamplerConfig", "What a Sampler is built for (see egsde/sampler.h).");
  def_count<&SamplerConfig::batch>(sampler_config, "batch", "images per run");
  def_count<&SamplerConfig::channels>(sampler_config, "channels", "channels per image");
  def_count<&SamplerConfig::height>(sampler_config, "height", "image height");
  def_count<&SamplerConfig::width>(sampler_config, "width", "image width");
  def_count<&SamplerConfig::repeats>(sampler_config, "repeats",
                                     "the official sample_step repeats (64-bit; the sampler refuses a run whose "
                                     "counts do not fit in 64 bits)");
  sampler_config
      .def(py::init<>())
      .def_readwrite("device", &SamplerConfig::device)
      .def_readwrite("device_index", &SamplerConfig::device_index, "the CUDA device's ordinal (cuda:N)")
      .def_property("stream", [](const SamplerConfig& c) { return reinterpret_cast<std::uintptr_t>(c.stream); },
                    [](SamplerConfig& c, std::uintptr_t s) { c.stream = reinterpret_cast<void*>(s); },
                    "the caller's CUDA stream as an integer handle (0: the default stream)")
      .def_readwrite("steps", &SamplerConfig::steps)
      .def_readwrite("history", &SamplerConfig::history,
                     "how many earlier data predictions the sampler keeps (0..3; a multistep solver's, "
                     "egsde_rt.solvers.Solver.history): needed by a table with a nonzero prev_coef (1), "
                     "prev_coef2 (2) or prev_coef3 (3)")
      .def_readwrite("ls", &SamplerConfig::ls)
      .def_readwrite("li", &SamplerConfig::li)
      .def_readwrite("s2", &SamplerConfig::s2)
      .def_readwrite("lowpass_form", &SamplerConfig::lowpass_form)
      .def_readwrite("fresh_perturb", &SamplerConfig::fresh_perturb)
      .def_readwrite("ilvr", &SamplerConfig::ilvr)
      .def("set_lowpass", [](SamplerConfig& c, const FloatArray& down_h, const FloatArray& up_h,
                             const FloatArray& down_w, const FloatArray& up_w) {
             require(down_h.ndim() == 2 && up_h.ndim() == 2 && down_w.ndim() == 2 && up_w.ndim() == 2,
                     "set_lowpass: the resize matrices must be 2-D");
             c.low_h = down_h.shape(0);
             c.low_w = down_w.shape(0);
             c.down_h = to_vector(down_h);
             c.up_h = to_vector(up_h);
             c.down_w = to_vector(down_w);
             c.up_w = to_vector(up_w);
           }, py::arg("down_h"), py::arg("up_h"), py::arg("down_w"), py::arg("up_w"),
           "The low-pass resize matrices D_h [low_h, H], U_h [H, low_h], D_w [low_w, W], U_w [W, low_w].")
      .def("set_lowpass_eigen", [](SamplerConfig& c, const FloatArray& eig_h, const FloatArray& lambda_h,
                                   const FloatArray& eig_w, const FloatArray& lambda_w) {
             require(eig_h.ndim() == 2 && eig_w.ndim() == 2 && lambda_h.ndim() == 1 && lambda_w.ndim() == 1,
                     "set_lowpass_eigen: eigenvectors 2-D, eigenvalues 1-D");
             require(eig_h.shape(1) == lambda_h.shape(0) && eig_w.shape(1) == lambda_w.shape(0),
                     "set_lowpass_eigen: the eigenvectors are the columns: Q_h [H, low_h] with lambda_h [low_h], "
                     "Q_w [W, low_w] with lambda_w [low_w]");
             c.eig_h = to_vector(eig_h);
             c.lambda_h = to_vector(lambda_h);
             c.eig_w = to_vector(eig_w);
             c.lambda_w = to_vector(lambda_w);
           }, py::arg("eig_h"), py::arg("lambda_h"), py::arg("eig_w"), py::arg("lambda_w"),
           "The stable low-pass forms' eigenpairs of A = L^T L per axis: Q_h [H, low_h], lambda_h [low_h], "
           "Q_w [W, low_w], lambda_w [low_w] (egsde_rt.lowpass.lowpass_eigen).")
      .def_readonly("low_h", &SamplerConfig::low_h)
      .def_readonly("low_w", &SamplerConfig::low_w);

  // dynamic_attr: the Python bridge keeps a sampler's captured CUDA graph on the sampler itself.
  py::class_<Sampler>(m, "Sampler", py::dynamic_attr())
      .def(py::init<SamplerConfig>(), py::arg("config"))
      .def_property_readonly("config", &Sampler::config, "a copy of the configuration it was built for")
      .def_property_readonly("total_updates", &Sampler::total_updates)
      .def("run", [](Sampler& s, const py::handle& x0, Runner& runner, const py::object& seed,
                     const ProgressFn& progress, const py::object& noise,
                     const py::object& perturb_noise, const py::object& out, const ReplayFn& replay) {
             return run_sampler(s, x0, runner, seed, progress, noise, perturb_noise, out, nullptr, replay);
           },
           py::arg("x0"), py::arg("runner"), py::arg("seed") = 0, py::arg("progress") = nullptr,
           py::arg("noise") = py::none(), py::arg("perturb_noise") = py::none(), py::arg("out") = py::none(),
           py::arg("replay") = nullptr,
           "Run the loop with `seed` (an integer for every image, or uint64 [B]) with the GIL released; x0 "
           "and `out` on the host or the sampler's device; returns the unclamped result [B, C, H, W] (`out`, "
           "or a new host array), or None if progress cancelled it. `replay()`: runs every update but the "
           "first in place of step(runner) (the captured path's graph replay).")
      .def("run_profiled", [](Sampler& s, const py::handle& x0, Runner& runner, const py::object& seed,
                              const ProgressFn& progress) {
             StepTimes times;
             py::object out = run_sampler(s, x0, runner, seed, progress, py::none(), py::none(), py::none(), &times);
             py::dict phases;
             phases["step"] = times.step;
             for (int p = 0; p < kPhaseCount; ++p) phases[phase_name(static_cast<Phase>(p))] = times.phases[p];
             return py::make_tuple(out, phases);
           },
           py::arg("x0"), py::arg("runner"), py::arg("seed") = 0, py::arg("progress") = nullptr,
           "run() with every update's phases timed inside the loop: (result or None, {phase: [ms per "
           "update]}) with phases step, score, dse_grad, lowpass_grad, update_noise.")
      .def("begin", [](Sampler& s, const py::handle& x0, const py::object& seed, const py::object& noise,
                       const py::object& perturb_noise) {
             const RunInputs in = run_inputs(s, x0, noise, perturb_noise);
             const SeedsArg seeds = sampler_seeds(s, seed);
             py::gil_scoped_release release;
             s.begin(in.x0, seeds.data, in.noise, in.perturb_noise);
           },
           py::arg("x0"), py::arg("seed") = 0, py::arg("noise") = py::none(), py::arg("perturb_noise") = py::none(),
           "Stage 1 of a run: copy x0 (host, or on the sampler's device: no host round trip) and the seeds "
           "(and injected noise) in, set the step counter to 0.")
      .def("start_repeat", &Sampler::start_repeat, py::arg("r"), py::call_guard<py::gil_scoped_release>(),
           "Stage 2, per repeat: the counter to r*K, the repeat's e and its start point.")
      .def("step", &Sampler::step, py::arg("runner"), py::call_guard<py::gil_scoped_release>(),
           "Stage 3, K times per repeat: the update the device-side step counter names (no host "
           "synchronisation, no allocation; capturable as one CUDA graph; the GIL released).")
      .def("finish", [](Sampler& s, const py::object& out) {
             const py::object result = out.is_none() ? py::object(image_array(s.config())) : out;
             float* data = image_arg(s, result, true, "out").data;
             {
               py::gil_scoped_release release;
               s.finish(data);
             }
             return result;
           }, py::arg("out") = py::none(),
           "Stage 4: wait for the stream; the unclamped result [B, C, H, W] copied into `out` (host, or on the "
           "sampler's device) or a new host array.")
      .def_property_readonly("step_counter", [](const Sampler& s) {
             py::gil_scoped_release release;
             return s.step_counter();
           }, "The global index r*K + k of the next update (waits for the stream).")
      .def("seek", &Sampler::seek, py::arg("update"), py::call_guard<py::gil_scoped_release>(),
           "Set the step counter (tests): the next step runs update `update`, row update % K.");

  // The kernels, one binding each, on host (numpy) or device (__cuda_array_interface__) arrays.
  py::module_ k = m.def_submodule("kernels", "The kernels on numpy or CUDA arrays (tests, benchmarks).");
  k.attr("STEP_ROW_WORDS") = kStepRowWords;
  k.attr("MAX_HISTORY") = kMaxHistory;
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
                         const py::handle& t_now, index_t batch, std::uintptr_t cuda_stream) {
    const ArrayArg ta = as_array(table, false, "table"), sa = as_array(scalars, true, "scalars");
    const ArrayArg tn = as_array(t_now, true, "t_now");
    const bindings::ArrayOf<std::int64_t> st = bindings::as_array_of<std::int64_t>(state, true, "state");
    require(ta.size >= kStepRowWords && ta.size % kStepRowWords == 0, "table: needs [K, STEP_ROW_WORDS] floats");
    require_size(st, 1, "state");
    require_size(sa, kStepScalarsWords, "scalars");
    require_size(tn, batch, "t_now");
    const ExecutionContext ctx = bindings::context_on({ta.device, st.device, sa.device, tn.device}, cuda_stream);
    step_begin(ctx, StepBeginParams{reinterpret_cast<const StepRow*>(ta.data), ta.size / kStepRowWords,
                                    reinterpret_cast<StepState*>(st.data), reinterpret_cast<StepScalars*>(sa.data),
                                    tn.data, batch});
  }, py::arg("table"), py::arg("state"), py::arg("scalars"), py::arg("t_now"), py::arg("batch"),
        py::arg("cuda_stream") = 0,
        "Gather the step counter's row: state int64 [1] (the counter g, advanced), scalars float32 "
        "[STEP_SCALARS_WORDS] (the row, then the 64-bit draws of streams 0 and 1, each as uint32 (low, high) "
        "words), t_now [batch].");
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
  k.def("lowpass_workspace_floats", [](index_t batch, index_t channels, index_t height, index_t width, index_t low_h,
                                       index_t low_w) {
    return lowpass_workspace_floats(LowpassParams{nullptr, nullptr, nullptr, nullptr, batch, channels, height, width,
                                                  low_h, low_w, nullptr});
  });
  k.def("lowpass_apply", [](const py::handle& x, const py::handle& out, const py::handle& down_h,
                            const py::handle& up_h, const py::handle& down_w, const py::handle& up_w,
                            const py::handle& workspace, index_t batch, index_t channels, index_t height,
                            index_t width, index_t low_h, index_t low_w, std::uintptr_t cuda_stream) {
    const ArrayArg xa = as_array(x, false, "x"), oa = as_array(out, true, "out");
    const LowpassArrays m = lowpass_arrays(down_h, up_h, down_w, up_w, workspace, batch, channels, height, width,
                                           low_h, low_w);
    require_size(xa, m.params.batch * channels * height * width, "x");
    require_size(oa, m.params.batch * channels * height * width, "out");
    const ExecutionContext ctx = context_of({xa, oa, m.down_h, m.up_h, m.down_w, m.up_w, m.workspace}, cuda_stream);
    lowpass_apply(ctx, m.params, xa.data, oa.data);
  }, py::arg("x"), py::arg("out"), py::arg("down_h"), py::arg("up_h"), py::arg("down_w"), py::arg("up_w"),
        py::arg("workspace"), py::arg("batch"), py::arg("channels"), py::arg("height"), py::arg("width"),
        py::arg("low_h"), py::arg("low_w"), py::arg("cuda_stream") = 0);
  k.def("lowpass_energy_grad", [](const py::handle& y, const py::handle& x, const py::handle& grad, EnergyKind kind,
                                  const py::handle& down_h, const py::handle& up_h, const py::handle& down_w,
                                  const py::handle& up_w, const py::handle& workspace, index_t batch,
                                  index_t channels, index_t height, index_t width, index_t low_h, index_t low_w,
                                  std::uintptr_t cuda_stream) {
    const ArrayArg ya = as_array(y, false, "y"), xa = as_array(x, false, "x"), ga = as_array(grad, true, "grad");
    const LowpassArrays m = lowpass_arrays(down_h, up_h, down_w, up_w, workspace, batch, channels, height, width,
                                           low_h, low_w);
    const index_t n = batch * channels * height * width;
    require_size(ya, n, "y");
    require_size(xa, n, "x");
    require_size(ga, n, "grad");
    const ExecutionContext ctx =
        context_of({ya, xa, ga, m.down_h, m.up_h, m.down_w, m.up_w, m.workspace}, cuda_stream);
    lowpass_energy_grad(ctx, m.params, kind, ya.data, xa.data, ga.data);
  }, py::arg("y"), py::arg("x"), py::arg("grad"), py::arg("kind"), py::arg("down_h"), py::arg("up_h"),
        py::arg("down_w"), py::arg("up_w"), py::arg("workspace"), py::arg("batch"), py::arg("channels"),
        py::arg("height"), py::arg("width"), py::arg("low_h"), py::arg("low_w"), py::arg("cuda_stream") = 0);
  k.def("lowpass_pull", [](const py::handle& y, const py::handle& x, LowpassForm form, float c,
                           const py::handle& eig_h, const py::handle& lambda_h, const py::handle& eig_w,
                           const py::handle& lambda_w, const py::handle& down_h, const py::handle& up_h,
                           const py::handle& down_w, const py::handle& up_w, const py::handle& workspace,
                           index_t batch, index_t channels, index_t height, index_t width, index_t low_h, index_t low_w,
                           std::uintptr_t cuda_stream, const py::object& step) {
    const ArrayArg ya = as_array(y, true, "y"), xa = as_array(x, false, "x");
    LowpassArrays m = lowpass_arrays(down_h, up_h, down_w, up_w, workspace, batch, channels, height, width, low_h,
                                     low_w);
    const ArrayArg qh = as_array(eig_h, false, "eig_h"), lh = as_array(lambda_h, false, "lambda_h");
    const ArrayArg qw = as_array(eig_w, false, "eig_w"), lw = as_array(lambda_w, false, "lambda_w");
    require_size(qh, height * low_h, "eig_h");
    require_size(lh, low_h, "lambda_h");
    require_size(qw, width * low_w, "eig_w");
    require_size(lw, low_w, "lambda_w");
    const index_t n = batch * channels * height * width;
    require_size(ya, n, "y");
    require_size(xa, n, "x");
    m.params.eig_h = qh.data;
    m.params.lambda_h = lh.data;
    m.params.eig_w = qw.data;
    m.params.lambda_w = lw.data;
    const ExecutionContext ctx =
        context_of({ya, xa, qh, lh, qw, lw, m.down_h, m.up_h, m.down_w, m.up_w, m.workspace}, cuda_stream);
    lowpass_pull(ctx, m.params, form, ya.data, xa.data, c, as_step_scalars(step_scalars_arg(step), ctx));
  }, py::arg("y"), py::arg("x"), py::arg("form"), py::arg("c"), py::arg("eig_h"), py::arg("lambda_h"),
        py::arg("eig_w"), py::arg("lambda_w"), py::arg("down_h"), py::arg("up_h"), py::arg("down_w"), py::arg("up_w"),
        py::arg("workspace"), py::arg("batch"), py::arg("channels"), py::arg("height"), py::arg("width"),
        py::arg("low_h"), py::arg("low_w"), py::arg("cuda_stream") = 0, py::arg("step") = py::none(),
        "y <- x + f(c A)(y - x) in place (the stable low-pass pull; with `step`: c = 2 li_pull of the step's row).");
  k.def("egsde_update", [](const py::handle& y, const py::handle& eps, const py::object& grad_s,
                           const py::object& grad_i, const py::object& noise, const py::handle& out, index_t batch,
                           index_t per_image, float inv_sqrt_alpha, float eps_coef, float ls_w, float li_w,
                           float sigma, const py::object& seed, std::uint32_t stream, std::uint64_t draw,
                           std::uintptr_t cuda_stream, const py::object& step, const py::object& x0_prev,
                           float prev_coef, float x0_y, float x0_eps, float ls_x0, float li_x0,
                           float prev_coef2, float prev_coef3) {
    require(batch >= 1 && per_image >= 1, "egsde_update: batch and per_image must be >= 1");
    const index_t n = checked_mul(batch, per_image, "egsde_update: batch * per_image");
    const ArrayArg ya = as_array(y, false, "y"), ea = as_array(eps, false, "eps"), oa = as_array(out, true, "out");
    require_size(ya, n, "y");
    require_size(ea, n, "eps");
    require_size(oa, n, "out");
    UpdateParams u;
    u.y = ya.data;
    u.eps = ea.data;
    u.out = oa.data;
    auto optional = [n](const py::object& o, const char* name) -> ArrayArg {
      if (o.is_none()) return ArrayArg{};
      ArrayArg a = as_array(o, false, name);
      require_size(a, n, name);
      return a;
    };
    const ArrayArg gs = optional(grad_s, "grad_s"), gi = optional(grad_i, "grad_i"), nz = optional(noise, "noise");
    ArrayArg prev;
    if (!x0_prev.is_none()) {
      prev = as_array(x0_prev, true, "x0_prev");
      require(prev.size >= n && prev.size % n == 0 && prev.size / n <= kMaxHistory,
              "x0_prev: the earlier data predictions [history (1..3), batch, per_image]");
      u.history = static_cast<int>(prev.size / n);
    }
    require((prev_coef2 == 0.0f || u.history >= 2) && (prev_coef3 == 0.0f || u.history >= 3),
            "egsde_update: prev_coef2 / prev_coef3 read D_{k-2} / D_{k-3}: x0_prev needs that many earlier data "
            "predictions [history, batch, per_image]");
    u.x0_prev = prev.data;
    u.prev_coef2 = prev_coef2;
    u.prev_coef3 = prev_coef3;
    u.prev_coef = prev_coef;
    u.x0_y = x0_y;
    u.x0_eps = x0_eps;
    u.ls_x0 = ls_x0;
    u.li_x0 = li_x0;
    u.grad_s = gs.data;
    u.grad_i = gi.data;
    u.noise = nz.data;
    u.batch = batch;
    u.per_image = per_image;
    u.inv_sqrt_alpha = inv_sqrt_alpha;
    u.eps_coef = eps_coef;
    u.ls_w = ls_w;
    u.li_w = li_w;
    u.sigma = sigma;
    const ExecutionContext ctx = context_of({ya, ea, oa}, cuda_stream);
    require_noise_stream(stream, step);
    const SeedsArg seed_values = seeds_arg(seed, batch);
    const StagedValues<std::uint64_t> seeds(ctx, seed_values.data, batch, seed_values.device);
    u.key = NoiseKey{seeds.data(), stream, draw};
    u.step = as_step_scalars(step_scalars_arg(step), ctx);
    if (u.step && u.noise) require(nz.size % n == 0, "noise: with step, the injected draws [draws, batch, per_image]");
    require(!prev.data || prev.device == ctx.device, "x0_prev: on another device than the arrays");
    egsde_update(ctx, u);
  }, py::arg("y"), py::arg("eps"), py::arg("grad_s"), py::arg("grad_i"), py::arg("noise"), py::arg("out"),
        py::arg("batch"), py::arg("per_image"), py::arg("inv_sqrt_alpha"), py::arg("eps_coef"), py::arg("ls_w"),
        py::arg("li_w"), py::arg("sigma"), py::arg("seed") = 0, py::arg("stream") = 0, py::arg("draw") = 0,
        py::arg("cuda_stream") = 0, py::arg("step") = py::none(), py::arg("x0_prev") = py::none(),
        py::arg("prev_coef") = 0.0f, py::arg("x0_y") = 0.0f, py::arg("x0_eps") = 0.0f, py::arg("ls_x0") = 0.0f,
        py::arg("li_x0") = 0.0f, py::arg("prev_coef2") = 0.0f, py::arg("prev_coef3") = 0.0f,
        "The fused update, images seeded by `seed` (an integer for every image, or one per image; with "
        "`step`: the step's coefficients and draw; `noise` then holds the injected draws [draws, batch, "
        "per_image]); `x0_prev`: a multistep solver's earlier data predictions [history, batch, per_image], "
        "newest first, shifted and this update's D put first).");
}
