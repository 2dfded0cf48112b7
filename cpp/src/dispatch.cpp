// The single dispatch point of every op: CPU kernels always, CUDA kernels when built with them.
#include "egsde/dispatch.h"

namespace egsde {

bool built_with_cuda() {
#ifdef EGSDE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

#ifdef EGSDE_WITH_CUDA
#define EGSDE_DISPATCH(op, ctx, p)                   \
  do {                                               \
    if ((ctx).device == Device::CUDA) {              \
      cuda::op(p, (ctx).stream);                     \
    } else {                                         \
      cpu::op(p);                                    \
    }                                                \
  } while (0)
#else
#define EGSDE_DISPATCH(op, ctx, p)                                                  \
  do {                                                                              \
    require((ctx).device == Device::CPU, "egsde_rt was built without CUDA kernels"); \
    cpu::op(p);                                                                     \
  } while (0)
#endif

void philox_normal(const ExecutionContext& ctx, const PhiloxNormalParams& p) { EGSDE_DISPATCH(philox_normal, ctx, p); }
void axpby(const ExecutionContext& ctx, const AxpbyParams& p) { EGSDE_DISPATCH(axpby, ctx, p); }
void plane_gemm(const ExecutionContext& ctx, const PlaneGemmParams& p) { EGSDE_DISPATCH(plane_gemm, ctx, p); }
void cosine_pixel_grad(const ExecutionContext& ctx, const CosineGradParams& p) { EGSDE_DISPATCH(cosine_pixel_grad, ctx, p); }
void pull_scale(const ExecutionContext& ctx, const PullScaleParams& p) { EGSDE_DISPATCH(pull_scale, ctx, p); }
void egsde_update(const ExecutionContext& ctx, const UpdateParams& p) { EGSDE_DISPATCH(egsde_update, ctx, p); }
void step_begin(const ExecutionContext& ctx, const StepBeginParams& p) { EGSDE_DISPATCH(step_begin, ctx, p); }

}  // namespace egsde
