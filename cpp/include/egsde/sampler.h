// The EGSDE sampling loop (the method as the official code runs it; see python/egsde_rt/reference.py):
// owns every buffer and the step table (in device memory, read through a device-side step
// counter), allocates nothing per step, calls the network runner and the kernels, all ordered
// on the caller's stream.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "egsde/common.h"
#include "egsde/device.h"
#include "egsde/ops/lowpass.h"
#include "egsde/phase_clock.h"
#include "egsde/runner.h"
#include "egsde/step_scalars.h"
#include "egsde/step_table.h"

namespace egsde {

// The most CPU threads a sampler's calls may use (egsde_rt.cpu_threads.MAX_THREADS).
constexpr index_t kMaxThreads = 256;

struct SamplerConfig {
  Device device = Device::CPU;
  void* stream = nullptr;  // the caller's CUDA stream (null: the default stream); unused on the CPU
  int device_index = 0;    // the CUDA device (cuda:N) the buffers live on and the work runs on
  // The CPU: the most OpenMP threads of the kernels and of the runners that share the runtime, for
  // every call (DeviceScope caps the caller's team at it; 0: no cap). egsde_rt.cpu_threads chooses it.
  index_t threads = 0;
  index_t batch = 1, channels = 3, height = 0, width = 0;
  StepTable steps;  // the columns of every update (step_table.h)
  // A multistep solver's history (egsde_rt.method.solvers.Solver.history, 0..kMaxHistory): how many
  // earlier data predictions D_{k-1}, D_{k-2}, ... the sampler keeps. A table that reads more
  // (a nonzero prev_coef, prev_coef2, prev_coef3 beyond it) is refused.
  index_t history = 0;
  float ls = 0.0f, li = 0.0f;
  EnergyKind s2 = EnergyKind::NegL2;
  // Gradient: the expert's gradient inside the update (the official form). Implicit / Exact:
  // the update without it, then the stable pull (lowpass_pull, s2 NegL2 only), which needs the
  // eigenpairs below.
  LowpassForm lowpass_form = LowpassForm::Gradient;
  index_t repeats = 1;
  bool fresh_perturb = false;
  bool ilvr = false;
  // A distilled engine: each update is one runner.student evaluation (the guided eps, the expert
  // folded in), then the update with no expert gradient: ls must be 0, and li too unless the
  // low-pass expert is in a stable form (its pull stays native).
  bool student = false;
  // The low-pass resize factors (row-major float32): D_h [low_h, height], U_h [height, low_h],
  // D_w [low_w, width], U_w [width, low_w].
  index_t low_h = 0, low_w = 0;
  std::vector<float> down_h, up_h, down_w, up_w;
  // The stable forms: A's eigenvectors Q_h [height, low_h], Q_w [width, low_w] (row-major) and
  // eigenvalues lambda_h [low_h], lambda_w [low_w].
  std::vector<float> eig_h, eig_w, lambda_h, lambda_w;
  bool pulls() const { return li != 0.0f && lowpass_form != LowpassForm::Gradient; }
};

// The device-side step table: row k of `steps` with ls and li folded in and the ILVR flag.
std::vector<StepRow> step_rows(const StepTable& steps, float ls, float li, bool ilvr);

// Called after each update with (done, total); returning false cancels the run.
using ProgressFn = std::function<bool(index_t, index_t)>;
// Runs one update in place of step(runner): the captured path's replay of a CUDA graph of one step.
using ReplayFn = std::function<void()>;

class Sampler {
 public:
  explicit Sampler(SamplerConfig config);

  const SamplerConfig& config() const { return config_; }
  index_t numel() const { return numel_; }
  // R * K (checked at construction: it and the draw indices fit in index_t).
  index_t total_updates() const { return config_.steps.size() * config_.repeats; }
  // The floats of a run's injected noise of `stream`: [R * (K + 1), B, C, H, W] (stream 0) or
  // [R * K, B, C, H, W] (stream 1); refused (Error) where that does not fit in index_t.
  index_t injected_noise_floats(std::uint32_t stream) const;

  // x0 and out are arrays [batch, channels, height, width] in host memory or (CUDA sampler) in
  // the memory of the sampler's device; `seeds` [batch] are the images' seeds (host or device).
  // Every public call runs with the sampler's device current (DeviceScope); the runner is called
  // the same way. Noise comes from the Philox contract with image b's seed seeds[b], or from the injected host arrays `sampling_noise`
  // [repeats*(K+1), ...] and `perturb_noise` [repeats*K, ...] (the latter for fresh_perturb).
  // Returns false if `progress` cancelled the run (out is then left unchanged). With `times`,
  // the phases of every update are timed inside the loop (see phase_clock.h).
  // Made of the stages below: begin, then per repeat start_repeat and K steps, then finish. With
  // `replay`, every update but the run's first (which warms the runner up) is replay() instead of
  // step(runner) (not with `times`: a replayed graph has no phases to time).
  bool run(const float* x0, float* out, Runner& runner, const std::uint64_t* seeds, const ProgressFn& progress,
           const float* sampling_noise = nullptr, const float* perturb_noise = nullptr,
           StepTimes* times = nullptr, const ReplayFn& replay = nullptr);

  // The loop in stages, all ordered on config.stream. A run is begin(); for r < repeats:
  // start_repeat(r), then K = steps.size() calls of step(); finish(out).
  // begin: uploads x0 and the per-image seeds [batch] (and the injected noise of this run, if
  // any) and sets the step counter to 0.
  void begin(const float* x0, const std::uint64_t* seeds, const float* sampling_noise = nullptr,
             const float* perturb_noise = nullptr);
  // start_repeat: the counter to r * K, clears the multistep solvers' previous data prediction
  // (so nothing of an earlier repeat or run, e.g. a diverged one's non-finite D, carries over),
  // draws the repeat's e and forms the start point (from x0 for r = 0, from y after).
  void start_repeat(index_t r);
  // step: the next update, whichever it is: every per-step value (t, the coefficients, the
  // noise draws, the ILVR flag, injected-noise offsets) is read by the kernels from the step
  // table through the device-side counter. Issues the same launches with the same arguments
  // every time, with no host synchronisation and no allocation, so a CUDA graph captured from
  // one call replays any update. A step past the run (repeats * updates issued) is refused (Error):
  // it would read the injected noise past its end; a replay past it repeats the last update.
  void step(Runner& runner);
  // finish: waits for the stream and copies y into out (host or device memory).
  void finish(float* out);
  // The step counter g = r * K + k of the next update (waits for the stream).
  index_t step_counter() const;
  // Moves the step counter to `update` in [0, total_updates) (start_repeat; tests: the next step
  // runs row update % K).
  void seek(index_t update);

 private:
  TensorRef ref(float* data, std::vector<index_t> shape) const;

  SamplerConfig config_;
  ExecutionContext ctx_;
  index_t numel_ = 0;
  bool begun_ = false, injected_ = false;
  // The host's count of the updates issued (seek sets it, step advances it): step() past the run
  // (total_updates) is refused here; a replayed graph, which the host does not count, is clamped
  // on the device (step_begin).
  index_t issued_ = 0;
  DeviceArray x0_, y_, e_, e_fresh_, x_t_, eps_, grad_s_, grad_i_, scratch_;
  DeviceArray x0_prev_;  // multistep solvers: the earlier data predictions [history, numel], newest first
  DeviceArray down_h_, up_h_, down_w_, up_w_, lowpass_workspace_;
  DeviceArray eig_h_, eig_w_, lambda_h_, lambda_w_;  // the stable forms only
  DeviceArray injected_sampling_, injected_perturb_;
  // The counter-driven step: the table (uploaded once), the counter, the per-image seeds, the
  // current step's scalars and the runners' t input (the same pointers every step).
  DeviceBuffer<StepRow> step_table_;
  DeviceBuffer<StepState> state_;
  DeviceBuffer<std::uint64_t> seeds_;
  DeviceBuffer<StepScalars> scalars_;
  DeviceArray t_now_;
  TensorRef y_ref_, x_t_ref_, eps_ref_, grad_s_ref_, t_now_ref_;  // built once: no allocation per step
  LowpassParams lowpass_;
  PhaseClock clock_;
};

}  // namespace egsde
