// egsde_update, CUDA: one thread per Philox block of four elements, noise drawn in registers.
#include "cuda_check.cuh"
#include "egsde/ops/egsde_update.h"

namespace egsde::cuda {

__global__ void egsde_update_kernel(UpdateParams p, index_t blocks) {
  const index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= p.batch * blocks) return;
  const index_t b = g / blocks, block = g % blocks;
  float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (p.noise == nullptr && p.sigma != 0.0f)
    philox_normal4(p.key, static_cast<std::uint32_t>(b), static_cast<std::uint64_t>(block), z);
  for (int lane = 0; lane < 4; ++lane) {
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

void egsde_update(const UpdateParams& p, void* stream) {
  const index_t blocks = (p.per_image + 3) / 4;
  if (p.batch * blocks == 0) return;
  egsde_update_kernel<<<blocks_for(p.batch * blocks), kThreads, 0, as_stream(stream)>>>(p, blocks);
  check_launch("egsde_update");
}

}  // namespace egsde::cuda
