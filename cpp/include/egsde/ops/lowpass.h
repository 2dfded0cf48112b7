// lowpass: the separable low-pass filter L(Y) = U_h D_h Y D_w^T U_w^T per plane, its energy
// gradients, factorised through the rank-(n/N) matrices (O(H W n/N) work per plane).
//
// Primitive: plane_gemm, out[p] = A[p] B[p] with arbitrary strides, where a plane stride of 0
// shares one matrix across planes. apply / energy_grad compose it; both backends implement
// plane_gemm and cosine_pixel_grad; the composition is shared (src/lowpass.cpp).
//
// The stable forms of the squared-distance expert (python/egsde_rt/method/lowpass.py): lowpass_pull
// replaces y by x + f(c A)(y - x), A = L^T L, f(z) = 1 / (1 + z) (implicit) or exp(-z) (exact),
// through A's eigenpairs per axis: y += Q_h (F o (Q_h^T (y - x) Q_w)) Q_w^T with
// F_ij = f(c lambda_i mu_j) - 1 (pull_scale, the one op of its own; the rest is plane_gemm).
#pragma once

#include <cmath>

#include "egsde/common.h"
#include "egsde/step_scalars.h"

namespace egsde {

enum class EnergyKind { NegL2 = 0, Cosine = 1 };
// How an update applies the low-pass expert (settings.lowpass): its gradient inside the update,
// or the stable pull after it.
enum class LowpassForm { Gradient = 0, Implicit = 1, Exact = 2 };

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
  // The stable forms only: A's eigenvectors Q_h [height, low_h], Q_w [width, low_w] and
  // eigenvalues lambda_h [low_h], lambda_w [low_w] (lowpass_eigen in Python).
  const float* eig_h = nullptr;
  const float* eig_w = nullptr;
  const float* lambda_h = nullptr;
  const float* lambda_w = nullptr;
};

// low[p, i, j] *= F(c lambda_h[i] lambda_w[j]) with F(z) = -z / (1 + z) (implicit) or
// expm1(-z) (exact). With `step`, c = 2 li_pull of the step's row: 2 li times the guidance weight
// of the update's first-order step (the lowpass_w column).
struct PullScaleParams {
  float* low = nullptr;  // [planes, low_h, low_w]
  const float* lambda_h = nullptr;
  const float* lambda_w = nullptr;
  index_t planes = 0, low_h = 0, low_w = 0;
  LowpassForm form = LowpassForm::Implicit;
  float c = 0.0f;
  const StepScalars* step = nullptr;
};

// The scaling of element `g` (flat over planes x low_h x low_w): the body both backends run.
EGSDE_HD void pull_scale_at(const PullScaleParams& p, index_t g) {
  const float c = p.step ? 2.0f * p.step->row.li_pull : p.c;
  const index_t ij = g % (p.low_h * p.low_w);
  const float z = c * p.lambda_h[ij / p.low_w] * p.lambda_w[ij % p.low_w];
  p.low[g] *= p.form == LowpassForm::Exact ? expm1f(-z) : -z / (1.0f + z);
}

index_t lowpass_workspace_floats(const LowpassParams& p);

namespace cpu {
void plane_gemm(const PlaneGemmParams& p);
void cosine_pixel_grad(const CosineGradParams& p);
void pull_scale(const PullScaleParams& p);
}  // namespace cpu
namespace cuda {
void plane_gemm(const PlaneGemmParams& p, void* stream);
void cosine_pixel_grad(const CosineGradParams& p, void* stream);
void pull_scale(const PullScaleParams& p, void* stream);
}  // namespace cuda

// Composite operations (backend chosen by ctx); x, y, out are [batch, channels, height, width].
void lowpass_apply(const ExecutionContext& ctx, const LowpassParams& p, const float* x, float* out);
void lowpass_energy_grad(const ExecutionContext& ctx, const LowpassParams& p, EnergyKind kind,
                         const float* y, const float* x, float* grad);
// y <- x + f(c A)(y - x) in place (form Implicit or Exact; c, or the step's as in PullScaleParams).
void lowpass_pull(const ExecutionContext& ctx, const LowpassParams& p, LowpassForm form, float* y, const float* x,
                  float c, const StepScalars* step = nullptr);

}  // namespace egsde
