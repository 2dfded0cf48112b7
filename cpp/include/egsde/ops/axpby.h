// axpby: out = a * x + b * y, elementwise. The sampler uses it for the start point and the
// perturbed source (sqrt(abar) x0 + sqrt(1 - abar) e), for copies (a = 1, b = 0) and for
// differences (a = 1, b = -1: the ILVR step and the neg_l2 low-pass gradient).
#pragma once

#include "egsde/common.h"

namespace egsde {

struct AxpbyParams {
  const float* x = nullptr;
  const float* y = nullptr;
  float* out = nullptr;  // may alias x or y
  index_t n = 0;
  float a = 1.0f;
  float b = 0.0f;
};

EGSDE_HD float axpby_at(const AxpbyParams& p, index_t i) { return p.a * p.x[i] + p.b * p.y[i]; }

namespace cpu {
void axpby(const AxpbyParams& p);
}
namespace cuda {
void axpby(const AxpbyParams& p, void* stream);
}

}  // namespace egsde
