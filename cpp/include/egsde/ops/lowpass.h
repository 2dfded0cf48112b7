// lowpass: the separable low-pass filter L(Y) = U_h D_h Y D_w^T U_w^T per plane, its energy
// gradients, factorised through the rank-(n/N) matrices (O(H W n/N) work per plane).
//
// Primitive: plane_gemm, out[p] = A[p] B[p] with arbitrary strides, where a plane stride of 0
// shares one matrix across planes. apply / energy_grad compose it; both backends implement
// plane_gemm and cosine_pixel_grad; the composition is shared (src/lowpass.cpp).
#pragma once

#include <cmath>

#include "egsde/common.h"

namespace egsde {

enum class EnergyKind { NegL2 = 0, Cosine = 1 };

struct MatrixView {
  const float* data = nullptr;
  index_t plane_stride = 0;  // 0: the same matrix for every plane
  index_t row_stride = 0;
  index_t col_stride = 1;
};

struct PlaneGemmParams {
  MatrixView a;  // [rows, inner]
  MatrixView b;  // [inner, cols]
  float* out = nullptr;  // [planes, rows, cols], contiguous
  index_t planes = 0, rows = 0, cols = 0, inner = 0;
};

// Per-pixel cosine gradient: with a = L(x), b = L(y) of shape [batch, channels, pixels],
// out = -(a_hat - cos * b_hat) / max(|b|, eps) / pixels (the derivative of -mean cos in b).
struct CosineGradParams {
  const float* a = nullptr;
  const float* b = nullptr;
  float* out = nullptr;
  index_t batch = 0, channels = 0, pixels = 0;
  float eps = 1e-10f;
};

// The cosine gradient at pixel `g` (flat over batch x pixels): the body both backends run.
EGSDE_HD void cosine_pixel_grad_at(const CosineGradParams& p, index_t g) {
  const index_t base = (g / p.pixels) * p.channels * p.pixels + g % p.pixels;
  float na = 0.0f, nb = 0.0f, dot = 0.0f;
  for (index_t c = 0; c < p.channels; ++c) {
    const float av = p.a[base + c * p.pixels], bv = p.b[base + c * p.pixels];
    na += av * av;
    nb += bv * bv;
    dot += av * bv;
  }
  na = fmaxf(sqrtf(na), p.eps);
  nb = fmaxf(sqrtf(nb), p.eps);
  const float cos = dot / (na * nb);
  const float inv_pixels = 1.0f / static_cast<float>(p.pixels);
  for (index_t c = 0; c < p.channels; ++c) {
    const float a_hat = p.a[base + c * p.pixels] / na, b_hat = p.b[base + c * p.pixels] / nb;
    p.out[base + c * p.pixels] = -(a_hat - cos * b_hat) / nb * inv_pixels;
  }
}

struct LowpassParams {
  const float* down_h = nullptr;  // [low_h, height]
  const float* up_h = nullptr;    // [height, low_h]
  const float* down_w = nullptr;  // [low_w, width]
  const float* up_w = nullptr;    // [width, low_w]
  index_t batch = 0, channels = 0, height = 0, width = 0, low_h = 0, low_w = 0;
  float* workspace = nullptr;  // lowpass_workspace_floats(*this) floats
};

index_t lowpass_workspace_floats(const LowpassParams& p);

namespace cpu {
void plane_gemm(const PlaneGemmParams& p);
void cosine_pixel_grad(const CosineGradParams& p);
}  // namespace cpu
namespace cuda {
void plane_gemm(const PlaneGemmParams& p, void* stream);
void cosine_pixel_grad(const CosineGradParams& p, void* stream);
}  // namespace cuda

// Composite operations (backend chosen by ctx); x, y, out are [batch, channels, height, width].
void lowpass_apply(const ExecutionContext& ctx, const LowpassParams& p, const float* x, float* out);
void lowpass_energy_grad(const ExecutionContext& ctx, const LowpassParams& p, EnergyKind kind,
                         const float* y, const float* x, float* grad);

}  // namespace egsde
