// axpby: out = a * x + b * y, elementwise. The sampler uses it for the start point and the
// perturbed source (sqrt(abar) x0 + sqrt(1 - abar) e), for copies (a = 1, b = 0) and for
// differences (a = 1, b = -1: the ILVR step and the neg_l2 low-pass gradient). Inside the
// counter-driven step a and b come from the step's scalars in device memory (see `step`).
#pragma once

#include "egsde/common.h"
#include "egsde/step_scalars.h"

namespace egsde {

// Which of the step's coefficient pairs an axpby reads when AxpbyParams::step is set.
enum class StepMix {
  PerturbedSource = 0,  // a = sqrt_abar, b = sqrt_one_minus_abar: x_t = sqrt(abar) x0 + sqrt(1 - abar) e
  IlvrCorrection = 1,   // a = 1, b = -ilvr: y - L(y - x_t) while t > 0, y itself at t = 0
};

struct AxpbyParams {
  const float* x = nullptr;
  const float* y = nullptr;
  float* out = nullptr;  // may alias x or y
  index_t n = 0;
  float a = 1.0f;
  float b = 0.0f;  // 0: y is not read (the BLAS convention), so a dropped term is dropped exactly
  const StepScalars* step = nullptr;  // a and b of the current step, read on the device (null: a, b)
  StepMix mix = StepMix::PerturbedSource;
};

// The call with a and b resolved: the immediates, or the step's pair named by `mix`.
EGSDE_HD AxpbyParams axpby_resolved(const AxpbyParams& p) {
  AxpbyParams q = p;
  if (p.step) {
    const StepRow& row = p.step->row;
    q.a = p.mix == StepMix::PerturbedSource ? row.sqrt_abar : 1.0f;
    q.b = p.mix == StepMix::PerturbedSource ? row.sqrt_one_minus_abar : -row.ilvr;
    q.step = nullptr;
  }
  return q;
}

// Element i of a resolved call.
EGSDE_HD float axpby_at(const AxpbyParams& p, index_t i) {
  return p.b != 0.0f ? p.a * p.x[i] + p.b * p.y[i] : p.a * p.x[i];
}

namespace cpu {
void axpby(const AxpbyParams& p);
}
namespace cuda {
void axpby(const AxpbyParams& p, void* stream);
}

}  // namespace egsde
