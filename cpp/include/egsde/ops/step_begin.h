// step_begin: the first op of every sampling step. It reads the step counter g from device
// memory, gathers row k = g % K of the step table and the noise draws of update g into the
// StepScalars the step's kernels read, writes t[k] into every image's entry of t_now (the
// runners' t input, the same buffer every step) and advances the counter to g + 1. So the host
// issues the same launches with the same arguments for every update: no host-side k. A counter
// outside the run [0, updates) is clamped into it (a graph replayed past the run's end repeats its
// last update instead of reading the noise past its end).
#pragma once

#include "egsde/common.h"
#include "egsde/step_scalars.h"

namespace egsde {

struct StepBeginParams {
  const StepRow* table = nullptr;  // [steps]
  index_t steps = 0;               // K, the updates per repeat
  index_t updates = 0;             // R * K, the updates of the run (the counter's bound)
  StepState* state = nullptr;      // the counter (advanced)
  StepScalars* scalars = nullptr;  // out
  float* t_now = nullptr;          // out, [batch]
  index_t batch = 0;
};

// The whole op (one thread: a few dozen words). The draws are 64-bit, computed in unsigned
// arithmetic (no signed overflow for any counter).
EGSDE_HD void step_begin_body(const StepBeginParams& p) {
  const std::int64_t last = p.updates - 1;
  const std::int64_t g = p.state->update < 0 ? 0 : p.state->update > last ? last : p.state->update;
  const std::int64_t K = p.steps;
  const std::uint64_t r = static_cast<std::uint64_t>(g / K), k = static_cast<std::uint64_t>(g % K);
  const std::uint64_t K1 = static_cast<std::uint64_t>(K) + 1;
  StepScalars s;
  s.row = p.table[k];
  set_step_draw(s, kStreamSampling, r * K1 + k + 1);
  set_step_draw(s, kStreamPerturb, static_cast<std::uint64_t>(g));  // r * K + k
  *p.scalars = s;
  for (index_t b = 0; b < p.batch; ++b) p.t_now[b] = s.row.t;
  p.state->update = g + 1;
}

namespace cpu {
void step_begin(const StepBeginParams& p);
}
namespace cuda {
void step_begin(const StepBeginParams& p, void* stream);
}

}  // namespace egsde
