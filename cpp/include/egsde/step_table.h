// The step table: per-update float32 scalars in sampling order (row 0 is the start time), computed
// in Python (egsde_rt.method.schedule.StepCoefficients; a solver is only the function giving its columns,
// egsde_rt.method.solvers) and handed over as is. Its columns are declared once, here:
// EGSDE_STEP_TABLE_COLUMNS generates StepTable's members, StepTable::check(), the Python binding
// and the ordered names egsde_rt._core.STEP_TABLE_COLUMNS that Python builds the table from (and
// tests StepCoefficients against). A new column is a line here, its values in the solver functions
// (egsde_rt.method.solvers) and, for the kernels to read it, a StepRow field (step_scalars.h: the field,
// kStepRowWords, step_rows in sampler.cpp and the word list of tests/native/test_native_kernels.py).
#pragma once

#include <vector>

#include "egsde/common.h"

// X(name): every column of the table, in order: the solver's (egsde_rt.method.solvers.StepColumns), then
// the schedule's (t and the perturbed source's mix). For update k (see StepCoefficients):
//   y' = inv_sqrt_alpha * (y - eps_coef * eps) - guidance_w * G
//        + prev_coef * D_{k-1} + prev_coef2 * D_{k-2} + prev_coef3 * D_{k-3} + sigma * z
//   D_k = x0_y * y - x0_eps * eps - x0_guidance * G  (multistep solvers: this update's data
//        prediction, kept for the next updates; SamplerConfig::history of them)
//   x_t = sqrt_abar * x0 + sqrt_one_minus_abar * e   (the perturbed source; row 0's is the start point)
// with t the model timestep and G = ls * grad_s + li * grad_i; lowpass_w: the guidance weight of
// the update's first-order step, the strength of the low-pass expert's stable pull (2 li lowpass_w).
#define EGSDE_STEP_TABLE_COLUMNS(X) \
  X(inv_sqrt_alpha)                 \
  X(eps_coef)                       \
  X(guidance_w)                     \
  X(sigma)                          \
  X(prev_coef)                      \
  X(x0_y)                           \
  X(x0_eps)                         \
  X(x0_guidance)                    \
  X(prev_coef2)                     \
  X(prev_coef3)                     \
  X(lowpass_w)                      \
  X(t)                              \
  X(sqrt_abar)                      \
  X(sqrt_one_minus_abar)

namespace egsde {

struct StepTable {
#define EGSDE_STEP_TABLE_MEMBER(name) std::vector<float> name;
  EGSDE_STEP_TABLE_COLUMNS(EGSDE_STEP_TABLE_MEMBER)
#undef EGSDE_STEP_TABLE_MEMBER
  index_t size() const { return static_cast<index_t>(t.size()); }
  // Not empty, and every column as long as t (an Error otherwise).
  void check() const;
};

// The column names in order (egsde_rt._core.STEP_TABLE_COLUMNS).
#define EGSDE_STEP_TABLE_NAME(name) #name,
inline constexpr const char* kStepTableColumns[] = {EGSDE_STEP_TABLE_COLUMNS(EGSDE_STEP_TABLE_NAME)};
#undef EGSDE_STEP_TABLE_NAME

}  // namespace egsde
