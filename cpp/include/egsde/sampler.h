// The EGSDE sampling loop (the method as the official code runs it; see python/egsde_rt/reference.py):
// owns every buffer and the step table, allocates nothing per step, calls the network runner
// and the kernels, all ordered on the caller's stream.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "egsde/common.h"
#include "egsde/device.h"
#include "egsde/ops/lowpass.h"
#include "egsde/phase_clock.h"
#include "egsde/runner.h"

namespace egsde {

// Per-update scalars in sampling order (row 0 is the start time). Computed in Python
// (egsde_rt.schedule.StepCoefficients, the one source of the schedule) and handed over as is.
struct StepTable {
  std::vector<float> t, inv_sqrt_alpha, eps_coef, guidance_w, sigma, sqrt_abar, sqrt_one_minus_abar;
  int size() const { return static_cast<int>(t.size()); }
  void check() const;
};

struct SamplerConfig {
  Device device = Device::CPU;
  void* stream = nullptr;  // the caller's CUDA stream (null: the default stream); unused on the CPU
  index_t batch = 1, channels = 3, height = 0, width = 0;
  StepTable steps;
  float ls = 0.0f, li = 0.0f;
  EnergyKind s2 = EnergyKind::NegL2;
  int repeats = 1;
  bool fresh_perturb = false;
  bool ilvr = false;
  // The low-pass resize factors (row-major float32): D_h [low_h, height], U_h [height, low_h],
  // D_w [low_w, width], U_w [width, low_w].
  index_t low_h = 0, low_w = 0;
  std::vector<float> down_h, up_h, down_w, up_w;
};

// Called after each update with (done, total); returning false cancels the run.
using ProgressFn = std::function<bool(int, int)>;

class Sampler {
 public:
  explicit Sampler(SamplerConfig config);

  const SamplerConfig& config() const { return config_; }
  index_t numel() const { return numel_; }
  int total_updates() const { return config_.steps.size() * config_.repeats; }

  // x0 and out are host arrays [batch, channels, height, width]. Noise comes from the Philox
  // contract with `seed`, or from the injected host arrays `sampling_noise`
  // [repeats*(K+1), ...] and `perturb_noise` [repeats*K, ...] (the latter for fresh_perturb).
  // Returns false if `progress` cancelled the run (out is then left unchanged). With `times`,
  // the phases of every update are timed inside the loop (see phase_clock.h).
  bool run(const float* x0, float* out, Runner& runner, std::uint64_t seed, const ProgressFn& progress,
           const float* sampling_noise = nullptr, const float* perturb_noise = nullptr,
           StepTimes* times = nullptr);

 private:
  TensorRef ref(float* data, std::vector<index_t> shape) const;
  void draw(std::uint32_t stream, std::uint32_t index, DeviceArray& dst, const DeviceArray* injected);

  SamplerConfig config_;
  ExecutionContext ctx_;
  index_t numel_ = 0;
  std::uint64_t seed_ = 0;
  DeviceArray x0_, y_, e_, e_fresh_, x_t_, eps_, grad_s_, grad_i_, scratch_, t_table_;
  DeviceArray down_h_, up_h_, down_w_, up_w_, lowpass_workspace_;
  DeviceArray injected_sampling_, injected_perturb_;
  LowpassParams lowpass_;
  PhaseClock clock_;
};

}  // namespace egsde
