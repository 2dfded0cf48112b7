// egsde_update, CUDA: one thread per Philox block of four elements, noise drawn in registers
// (the body is in the shared header).
#include "cuda_check.cuh"
#include "egsde/ops/egsde_update.h"

namespace egsde::cuda {

__global__ void egsde_update_kernel(UpdateParams p, index_t blocks) {
  const index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g < p.batch * blocks) egsde_update_block(egsde_update_resolved(p), g / blocks, g % blocks);
}

void egsde_update(const UpdateParams& p, void* stream) {
  const index_t blocks = (p.per_image + 3) / 4;
  if (p.batch * blocks == 0) return;
  egsde_update_kernel<<<blocks_for(p.batch * blocks), kThreads, 0, as_stream(stream)>>>(p, blocks);
  check_launch("egsde_update");
}

}  // namespace egsde::cuda
