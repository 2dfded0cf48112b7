// The sampler's bindings: the Runner interface (a Python trampoline), the step table, the
// sampler's configuration and the Sampler with its staged run. The arrays a run reads and
// writes are converted here; the loop runs with the GIL released.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <iterator>
#include <string>
#include <vector>

#include "bind.h"
#include "conversion.h"
#include "egsde/sampler.h"

namespace egsde::bindings {
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
  void student(const TensorRef& y, const TensorRef& x_t, const TensorRef& t, const TensorRef& eps_out) override {
    PYBIND11_OVERRIDE(void, Runner, student, y, x_t, t, eps_out);
  }
};

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::vector<float> to_vector(const FloatArray& a) { return std::vector<float>(a.data(), a.data() + a.size()); }

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

// The seeds of a sampler's run: host seeds, or seeds in the sampler's device memory.
SeedsArg sampler_seeds(const Sampler& s, const py::handle& seed) {
  SeedsArg a = seeds_arg(seed, s.config().batch);
  require(a.device == Device::CPU || a.device == s.config().device, "seed: a CUDA array for a CPU sampler");
  return a;
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

// StepTable (its columns) and SamplerConfig.
void bind_config(py::module_& m) {
  py::class_<StepTable> step_table(m, "StepTable", "The per-update columns (egsde/step_table.h), float32 lists.");
  step_table.def(py::init<>()).def("__len__", &StepTable::size);
#define EGSDE_BIND_COLUMN(name) step_table.def_readwrite(#name, &StepTable::name);
  EGSDE_STEP_TABLE_COLUMNS(EGSDE_BIND_COLUMN)
#undef EGSDE_BIND_COLUMN
  py::tuple column_names(std::size(kStepTableColumns));
  for (size_t i = 0; i < std::size(kStepTableColumns); ++i) column_names[i] = kStepTableColumns[i];
  m.attr("STEP_TABLE_COLUMNS") = column_names;
  m.attr("MAX_THREADS") = kMaxThreads;

  py::class_<SamplerConfig> sampler_config(m, "SamplerConfig", "What a Sampler is built for (see egsde/sampler.h).");
  def_count<&SamplerConfig::batch>(sampler_config, "batch", "images per run");
  def_count<&SamplerConfig::channels>(sampler_config, "channels", "channels per image");
  def_count<&SamplerConfig::height>(sampler_config, "height", "image height");
  def_count<&SamplerConfig::width>(sampler_config, "width", "image width");
  def_count<&SamplerConfig::threads>(sampler_config, "threads",
                                     "CPU: the most OpenMP threads of every call, the runners' included where they "
                                     "share the runtime (0: no cap; at most MAX_THREADS)");
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
                     "egsde_rt.method.solvers.Solver.history): needed by a table with a nonzero prev_coef (1), "
                     "prev_coef2 (2) or prev_coef3 (3)")
      .def_readwrite("ls", &SamplerConfig::ls)
      .def_readwrite("li", &SamplerConfig::li)
      .def_readwrite("s2", &SamplerConfig::s2)
      .def_readwrite("lowpass_form", &SamplerConfig::lowpass_form)
      .def_readwrite("fresh_perturb", &SamplerConfig::fresh_perturb)
      .def_readwrite("ilvr", &SamplerConfig::ilvr)
      .def_readwrite("student", &SamplerConfig::student,
                     "a distilled engine: runner.student each update, no expert (ls 0; li 0 unless a stable form)")
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
           "Q_w [W, low_w], lambda_w [low_w] (egsde_rt.method.lowpass.lowpass_eigen).")
      .def_readonly("low_h", &SamplerConfig::low_h)
      .def_readonly("low_w", &SamplerConfig::low_w);
}

}  // namespace

void bind_sampler(py::module_& m) {
  py::enum_<EnergyKind>(m, "EnergyKind").value("NEG_L2", EnergyKind::NegL2).value("COSINE", EnergyKind::Cosine);
  py::enum_<LowpassForm>(m, "LowpassForm")
      .value("GRADIENT", LowpassForm::Gradient)
      .value("IMPLICIT", LowpassForm::Implicit)
      .value("EXACT", LowpassForm::Exact);

  py::class_<Runner, PyRunner>(m, "Runner", "Network backend interface called by the sampler.")
      .def(py::init<>())
      .def("score", &Runner::score, py::arg("y"), py::arg("t"), py::arg("eps_out"))
      .def("dse_grad", &Runner::dse_grad, py::arg("y"), py::arg("x_t"), py::arg("t"), py::arg("grad_out"))
      .def("student", &Runner::student, py::arg("y"), py::arg("x_t"), py::arg("t"), py::arg("eps_out"));

  bind_config(m);

  // No dynamic attributes: the Python bridge keeps what it caches per sampler beside it
  // (egsde_rt.runtime.native_sampler).
  py::class_<Sampler>(m, "Sampler")
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
}

}  // namespace egsde::bindings
