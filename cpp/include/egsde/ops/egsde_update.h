// egsde_update: one fused pass of the EGSDE update, element by element:
//   mean = inv_sqrt_alpha * (y - eps_coef * eps)
//   mean = mean - ls_w * grad_s     (ls_w = ls * w; skipped when grad_s is null)
//   mean = mean - li_w * grad_i     (li_w = li * w; skipped when grad_i is null)
//   mean = mean + prev_coef * D_{k-1} + prev_coef2 * D_{k-2} + prev_coef3 * D_{k-3}, and the
//   history shifts: D_{k-1} <- D, D_{k-2} <- D_{k-1}, ...
//                                   (multistep solvers only, x0_prev non-null: the `history`
//                                    earlier data predictions [history, batch * per_image],
//                                    newest first; D = x0_y * y - x0_eps * eps - ls_x0 * grad_s -
//                                    li_x0 * grad_i, this update's data prediction; an earlier D
//                                    is read only where its coefficient != 0, so a first-order
//                                    update ignores a non-finite D left by a diverged run)
//   out  = mean + sigma * z         (z read from `noise` if given, else drawn with `key`;
//                                    sigma = 0 on the last update: the mask at t = 0)
// Inside the counter-driven step the coefficients and the draw come from the step's scalars in
// device memory (see `step`).
#pragma once

#include "egsde/common.h"
#include "egsde/philox.h"
#include "egsde/step_scalars.h"

namespace egsde {

// The most earlier data predictions a multistep solver reads (prev_coef, prev_coef2, prev_coef3).
constexpr int kMaxHistory = 3;

struct UpdateParams {
  const float* y = nullptr;
  const float* eps = nullptr;
  const float* grad_s = nullptr;
  const float* grad_i = nullptr;
  const float* noise = nullptr;  // injected z, or null to draw it
  float* out = nullptr;          // may alias y
  float* x0_prev = nullptr;      // multistep solvers: D_{k-1}.. in, D.. out (null: a single-step solver)
  int history = 1;               // the earlier data predictions x0_prev holds (1..kMaxHistory)
  index_t batch = 0, per_image = 0;
  float inv_sqrt_alpha = 1.0f, eps_coef = 0.0f, ls_w = 0.0f, li_w = 0.0f, sigma = 0.0f;
  float prev_coef = 0.0f, x0_y = 0.0f, x0_eps = 0.0f, ls_x0 = 0.0f, li_x0 = 0.0f;
  float prev_coef2 = 0.0f, prev_coef3 = 0.0f;
  NoiseKey key;
  // The current step's coefficients and draw of stream key.stream, read on the device (null: the
  // immediates above and key.draw). With `noise` set, `noise` is then the injected draws
  // [draws, batch, per_image] and the step's draw picks one.
  const StepScalars* step = nullptr;
};

// The call with its coefficients, key and noise resolved: as given, or the step's.
EGSDE_HD UpdateParams egsde_update_resolved(const UpdateParams& p) {
  UpdateParams q = p;
  if (p.step) {
    const StepRow& row = p.step->row;
    q.inv_sqrt_alpha = row.inv_sqrt_alpha;
    q.eps_coef = row.eps_coef;
    q.ls_w = row.ls_w;
    q.li_w = row.li_w;
    q.sigma = row.sigma;
    q.prev_coef = row.prev_coef;
    q.x0_y = row.x0_y;
    q.x0_eps = row.x0_eps;
    q.ls_x0 = row.ls_x0;
    q.li_x0 = row.li_x0;
    q.prev_coef2 = row.prev_coef2;
    q.prev_coef3 = row.prev_coef3;
    q.key = step_noise_key(*p.step, p.key);
    if (p.noise) q.noise = p.noise + static_cast<index_t>(q.key.draw) * p.batch * p.per_image;
    q.step = nullptr;
  }
  return q;
}

// The update of Philox block `block` (four elements) of image `b` of a resolved call: the body
// both backends run.
EGSDE_HD void egsde_update_block(const UpdateParams& p, index_t b, index_t block) {
  float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (p.noise == nullptr && p.sigma != 0.0f)
    philox_normal4(p.key, static_cast<std::uint32_t>(b), static_cast<std::uint64_t>(block), z);
  for (int lane = 0; lane < 4; ++lane) {
    const index_t k = block * 4 + lane;
    if (k >= p.per_image) break;
    const index_t i = b * p.per_image + k;
    const float y = p.y[i], eps = p.eps[i];  // read before out (which may alias y) is written
    float mean = p.inv_sqrt_alpha * (y - p.eps_coef * eps);
    if (p.grad_s) mean = mean - p.ls_w * p.grad_s[i];
    if (p.grad_i) mean = mean - p.li_w * p.grad_i[i];
    if (p.x0_prev) {
      float d = p.x0_y * y - p.x0_eps * eps;
      if (p.grad_s) d = d - p.ls_x0 * p.grad_s[i];
      if (p.grad_i) d = d - p.li_x0 * p.grad_i[i];
      const index_t n = p.batch * p.per_image;
      const float coefs[kMaxHistory] = {p.prev_coef, p.prev_coef2, p.prev_coef3};
      for (int j = 0; j < p.history; ++j)
        if (coefs[j] != 0.0f) mean = mean + coefs[j] * p.x0_prev[j * n + i];
      for (int j = p.history - 1; j > 0; --j) p.x0_prev[j * n + i] = p.x0_prev[(j - 1) * n + i];
      p.x0_prev[i] = d;
    }
    const float zi = p.noise ? p.noise[i] : z[lane];
    p.out[i] = p.sigma != 0.0f ? mean + p.sigma * zi : mean;
  }
}

namespace cpu {
void egsde_update(const UpdateParams& p);
}
namespace cuda {
void egsde_update(const UpdateParams& p, void* stream);
}

}  // namespace egsde
