// step_begin, CUDA: a single thread (a few dozen words; the body is in the shared header).
#include "cuda_check.cuh"
#include "egsde/ops/step_begin.h"

namespace egsde::cuda {

__global__ void step_begin_kernel(StepBeginParams p) { step_begin_body(p); }

void step_begin(const StepBeginParams& p, void* stream) {
  step_begin_kernel<<<1, 1, 0, as_stream(stream)>>>(p);
  check_launch("step_begin");
}

}  // namespace egsde::cuda
