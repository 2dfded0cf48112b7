// perturb: out = a * x + b * e elementwise (the perturbed source x_t = sqrt(abar) x0 +
// sqrt(1 - abar) e; with a = 1, b = -1 it is also the difference the ILVR step needs).
#pragma once

#include "egsde/common.h"

namespace egsde {

struct PerturbParams {
  const float* x = nullptr;
  const float* e = nullptr;
  float* out = nullptr;  // may alias x or e
  index_t n = 0;
  float a = 1.0f;
  float b = 0.0f;
};

namespace cpu {
void perturb(const PerturbParams& p);
}
namespace cuda {
void perturb(const PerturbParams& p, void* stream);
}

}  // namespace egsde
