// axpby, CUDA: one thread per element, each resolving a and b (the body is in the shared header).
#include "cuda_check.cuh"
#include "egsde/ops/axpby.h"

namespace egsde::cuda {

__global__ void axpby_kernel(AxpbyParams p) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.n) p.out[i] = axpby_at(axpby_resolved(p), i);
}

void axpby(const AxpbyParams& p, void* stream) {
  if (p.n == 0) return;
  axpby_kernel<<<blocks_for(p.n), kThreads, 0, as_stream(stream)>>>(p);
  check_launch("axpby");
}

}  // namespace egsde::cuda
