// The C++ twin of schedule.py (same float32 operations, same order).
#include "egsde/schedule.h"

#include <algorithm>
#include <cmath>

namespace egsde {

std::vector<double> beta_schedule(const ScheduleSpec& spec) {
  const int n = spec.num_timesteps;
  require(n >= 1, "num_timesteps must be >= 1");
  std::vector<double> betas(static_cast<size_t>(n));
  // As numpy.linspace: start + i * step, the last element exactly `stop`.
  auto linspace = [n](double a, double b, int i) {
    if (n == 1) return a;
    if (i == n - 1) return b;
    return a + i * ((b - a) / (n - 1));
  };
  for (int i = 0; i < n; ++i) {
    if (spec.kind == "linear") {
      betas[i] = linspace(spec.beta_start, spec.beta_end, i);
    } else if (spec.kind == "quad") {
      const double r = linspace(std::sqrt(spec.beta_start), std::sqrt(spec.beta_end), i);
      betas[i] = r * r;
    } else if (spec.kind == "const") {
      betas[i] = spec.beta_end;
    } else if (spec.kind == "jsd") {
      betas[i] = 1.0 / linspace(n, 1, i);
    } else if (spec.kind == "sigmoid") {
      const double s = 1.0 / (std::exp(-linspace(-6.0, 6.0, i)) + 1.0);
      betas[i] = s * (spec.beta_end - spec.beta_start) + spec.beta_start;
    } else {
      throw Error("unknown beta schedule '" + spec.kind + "'");
    }
  }
  return betas;
}

void StepTable::check() const {
  const size_t n = t.size();
  require(n > 0, "step table is empty");
  for (const auto* v : {&inv_sqrt_alpha, &eps_coef, &guidance_w, &sigma, &sqrt_abar, &sqrt_one_minus_abar})
    require(v->size() == n, "step table columns differ in length");
}

StepTable make_step_table(const ScheduleSpec& spec, int M, int steps) {
  const std::vector<double> all = beta_schedule(spec);
  require(M >= 1 && M <= spec.num_timesteps, "M must be in 1..num_timesteps");
  require(steps >= 0 && steps <= M, "steps must be in 0..M");
  require(spec.var_type == "fixedsmall" || spec.var_type == "fixedlarge", "unknown var_type '" + spec.var_type + "'");
  std::vector<double> betas64;
  std::vector<float> timesteps;
  if (steps == 0 || steps == M) {
    betas64.assign(all.begin(), all.begin() + M);
    for (int i = 0; i < M; ++i) timesteps.push_back(static_cast<float>(i));
  } else {
    double abar64 = 1.0, prev = 1.0;
    int next = 0;
    std::vector<double> cumulative;
    for (double b : all) cumulative.push_back(abar64 *= (1.0 - b));
    for (int j = 0; j < steps; ++j) {
      const int kept = steps == 1 ? M - 1 : static_cast<int>(std::nearbyint(static_cast<double>(j) * (M - 1) / (steps - 1)));
      require(kept >= next, "respacing produced a repeated timestep");
      next = kept + 1;
      betas64.push_back(1.0 - cumulative[kept] / prev);
      prev = cumulative[kept];
      timesteps.push_back(static_cast<float>(kept));
    }
  }
  const size_t n = betas64.size();
  std::vector<float> betas(n), alphas(n), abar(n), logvar(n);
  // torch's float32 cumprod (the official code's) accumulates in double and rounds each entry.
  double running = 1.0;
  for (size_t i = 0; i < n; ++i) {
    betas[i] = static_cast<float>(betas64[i]);
    alphas[i] = 1.0f - betas[i];
    running *= static_cast<double>(alphas[i]);
    abar[i] = static_cast<float>(running);
  }
  for (size_t i = 0; i < n; ++i) {
    if (spec.var_type == "fixedsmall") {
      const float abar_prev = i == 0 ? 1.0f : abar[i - 1];
      const float variance = betas[i] * (1.0f - abar_prev) / (1.0f - abar[i]);
      logvar[i] = std::log(std::max(variance, 1e-20f));
    } else {
      logvar[i] = std::log(betas[i]);
    }
  }
  StepTable table;
  for (size_t r = 0; r < n; ++r) {  // sampling order: from the last table index down to 0
    const size_t i = n - 1 - r;
    table.t.push_back(timesteps[i]);
    table.inv_sqrt_alpha.push_back(1.0f / std::sqrt(alphas[i]));
    table.eps_coef.push_back(betas[i] / std::sqrt(1.0f - abar[i]));
    table.guidance_w.push_back(betas[i] / std::sqrt(alphas[i]));
    table.sigma.push_back(i == 0 ? 0.0f : std::exp(0.5f * logvar[i]));
    table.sqrt_abar.push_back(std::sqrt(abar[i]));
    table.sqrt_one_minus_abar.push_back(std::sqrt(1.0f - abar[i]));
  }
  return table;
}

}  // namespace egsde
