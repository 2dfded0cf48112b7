// philox_normal, CUDA: one thread per Philox block of four elements.
#include "cuda_check.cuh"
#include "egsde/ops/noise.h"

namespace egsde::cuda {

__global__ void philox_normal_kernel(PhiloxNormalParams p, index_t blocks) {
  const index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g < p.batch * blocks) philox_normal_block(philox_normal_resolved(p), g / blocks, g % blocks);
}

void philox_normal(const PhiloxNormalParams& p, void* stream) {
  const index_t blocks = (p.per_image + 3) / 4;
  if (p.batch * blocks == 0) return;
  philox_normal_kernel<<<blocks_for(p.batch * blocks), kThreads, 0, as_stream(stream)>>>(p, blocks);
  check_launch("philox_normal");
}

}  // namespace egsde::cuda
