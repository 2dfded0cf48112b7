// The C++ twin of python/egsde_rt/schedule.py: beta schedules and the per-update coefficients,
// computed with the same float32 operations (tested equal to the Python tables).
#pragma once

#include <string>
#include <vector>

#include "egsde/common.h"

namespace egsde {

struct ScheduleSpec {
  std::string kind = "linear";  // linear, quad, const, jsd, sigmoid
  double beta_start = 1e-4;
  double beta_end = 0.02;
  int num_timesteps = 1000;
  std::string var_type = "fixedsmall";  // fixedsmall, fixedlarge
};

// Per-update scalars in sampling order (row 0 is the start time); see StepCoefficients.
struct StepTable {
  std::vector<float> t, inv_sqrt_alpha, eps_coef, guidance_w, sigma, sqrt_abar, sqrt_one_minus_abar;
  int size() const { return static_cast<int>(t.size()); }
  void check() const;
};

std::vector<double> beta_schedule(const ScheduleSpec& spec);

// The table for start time M with `steps` respaced updates (0 or M: every timestep below M).
StepTable make_step_table(const ScheduleSpec& spec, int M, int steps);

}  // namespace egsde
