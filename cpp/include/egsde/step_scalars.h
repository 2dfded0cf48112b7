// The per-step scalars of the counter-driven sampling step, as the kernels read them from memory
// on the sampler's device: one row of the step table (uploaded once) and the noise draws of the
// current update, gathered at the start of each step by the step_begin op (ops/step_begin.h).
// Nothing in a step is a host-side immediate that changes between steps, so one captured CUDA
// graph of the step serves every update (and the CPU runs the same code on host memory).
#pragma once

#include <cstddef>
#include <cstdint>

#include "egsde/common.h"
#include "egsde/philox.h"

namespace egsde {

// One update's scalars, precomputed on the host at construction (plain float32 values, the same
// ones the immediate-value loop used): the schedule's row k with ls and li folded in.
struct StepRow {
  float t = 0.0f;                    // the model timestep (the runners' t input)
  float inv_sqrt_alpha = 1.0f, eps_coef = 0.0f;
  float ls_w = 0.0f, li_w = 0.0f;    // ls * guidance_w, li * guidance_w
  float sigma = 0.0f;                // 0 on the last update: the mask at t = 0
  float sqrt_abar = 1.0f, sqrt_one_minus_abar = 0.0f;  // the perturbed source's mix
  float ilvr = 0.0f;                 // 1 where the ILVR correction applies (ilvr and t > 0), else 0
  // Multistep solvers (egsde_rt.method.solvers): the earlier updates' data predictions D_{k-1} (and
  // D_{k-2}, D_{k-3}: prev_coef2, prev_coef3 below) enter with prev_coef, and this update's
  // D = x0_y * y - x0_eps * eps - ls_x0 * grad_s - li_x0 * grad_i is kept for the next ones. All 0
  // for single-step solvers.
  float prev_coef = 0.0f, x0_y = 0.0f, x0_eps = 0.0f;
  float ls_x0 = 0.0f, li_x0 = 0.0f;  // ls * x0_guidance, li * x0_guidance
  float prev_coef2 = 0.0f, prev_coef3 = 0.0f;
  float li_pull = 0.0f;  // li * lowpass_w: the stable low-pass pull's strength is 2 li_pull
};

// What the kernels of one step read (written by step_begin): the row of update k = g % K and the
// noise draws of update g = r * K + k under the contract (method/noise.py). The per-image seeds are a
// device buffer of the sampler (written at the start of a run), so a run with other seeds
// replays the same graph.
struct StepScalars {
  StepRow row;
  // The 64-bit draw of each stream as (low, high) 32-bit words (4-byte words like the rest, so
  // the struct needs no 8-byte alignment): stream 0 r * (K + 1) + k + 1 (z), stream 1 r * K + k.
  std::uint32_t draw[kNoiseStreams][2];
};

// What a run keeps on the device between steps: the step counter.
struct StepState {
  std::int64_t update = 0;  // g: the global index of the next update (r * K + k over repeats)
};

// The kernels' bindings and tests see StepRow and StepScalars as arrays of 4-byte words.
constexpr int kStepRowWords = 17;
constexpr int kStepScalarsWords = kStepRowWords + 2 * kNoiseStreams;
static_assert(sizeof(StepRow) == kStepRowWords * 4 && offsetof(StepRow, ilvr) == 8 * 4, "StepRow layout");
static_assert(sizeof(StepScalars) == kStepScalarsWords * 4 && offsetof(StepScalars, draw) == kStepRowWords * 4,
              "StepScalars layout");
static_assert(sizeof(StepState) == 8, "StepState layout");

// Stores `draw` as stream `stream`'s (low, high) words.
EGSDE_HD void set_step_draw(StepScalars& s, std::uint32_t stream, std::uint64_t draw) {
  s.draw[stream][0] = static_cast<std::uint32_t>(draw);
  s.draw[stream][1] = static_cast<std::uint32_t>(draw >> 32);
}

// `key` (its seeds and stream) with the current update's draw of its stream.
EGSDE_HD NoiseKey step_noise_key(const StepScalars& s, NoiseKey key) {
  const std::uint32_t* words = s.draw[key.stream];
  key.draw = static_cast<std::uint64_t>(words[0]) | static_cast<std::uint64_t>(words[1]) << 32;
  return key;
}

}  // namespace egsde
