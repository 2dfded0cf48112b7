// egsde_update, CPU.
#include "egsde/ops/egsde_update.h"

namespace egsde::cpu {

void egsde_update(const UpdateParams& p) {
  const index_t blocks = (p.per_image + 3) / 4;
  const bool draw = p.noise == nullptr && p.sigma != 0.0f;
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t b = 0; b < p.batch; ++b) {
    for (index_t block = 0; block < blocks; ++block) {
      float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (draw) philox_normal4(p.key, static_cast<std::uint32_t>(b), static_cast<std::uint64_t>(block), z);
      for (index_t lane = 0; lane < 4; ++lane) {
        const index_t k = block * 4 + lane;
        if (k >= p.per_image) break;
        const index_t i = b * p.per_image + k;
        float mean = p.inv_sqrt_alpha * (p.y[i] - p.eps_coef * p.eps[i]);
        if (p.grad_s) mean = mean - p.ls_w * p.grad_s[i];
        if (p.grad_i) mean = mean - p.li_w * p.grad_i[i];
        const float zi = p.noise ? p.noise[i] : z[lane];
        p.out[i] = p.sigma != 0.0f ? mean + p.sigma * zi : mean;
      }
    }
  }
}

}  // namespace egsde::cpu
