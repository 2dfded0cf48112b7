// The single dispatch point: each op by execution context (CPU, or CUDA when built with it).
#pragma once

#include "egsde/common.h"
#include "egsde/ops/axpby.h"
#include "egsde/ops/egsde_update.h"
#include "egsde/ops/lowpass.h"
#include "egsde/ops/noise.h"
#include "egsde/ops/step_begin.h"

namespace egsde {

bool built_with_cuda();

void philox_normal(const ExecutionContext& ctx, const PhiloxNormalParams& p);
void axpby(const ExecutionContext& ctx, const AxpbyParams& p);
void plane_gemm(const ExecutionContext& ctx, const PlaneGemmParams& p);
void cosine_pixel_grad(const ExecutionContext& ctx, const CosineGradParams& p);
void pull_scale(const ExecutionContext& ctx, const PullScaleParams& p);
void egsde_update(const ExecutionContext& ctx, const UpdateParams& p);
void step_begin(const ExecutionContext& ctx, const StepBeginParams& p);

}  // namespace egsde
