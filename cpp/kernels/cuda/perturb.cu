// perturb, CUDA.
#include "cuda_check.cuh"
#include "egsde/ops/perturb.h"

namespace egsde::cuda {

__global__ void perturb_kernel(PerturbParams p) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.n) p.out[i] = p.a * p.x[i] + p.b * p.e[i];
}

void perturb(const PerturbParams& p, void* stream) {
  if (p.n == 0) return;
  perturb_kernel<<<blocks_for(p.n), kThreads, 0, as_stream(stream)>>>(p);
  check_launch("perturb");
}

}  // namespace egsde::cuda
