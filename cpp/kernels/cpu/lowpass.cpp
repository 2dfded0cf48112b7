// lowpass primitives, CPU: plane_gemm, the per-pixel cosine gradient and the stable pull's scaling.
#include "egsde/ops/lowpass.h"
#include "parallel.h"

namespace egsde::cpu {

void plane_gemm(const PlaneGemmParams& p) {
#pragma omp parallel for collapse(2) schedule(static) if (worth_threads(p.planes * p.rows * p.cols * p.inner))
  for (index_t plane = 0; plane < p.planes; ++plane) {
    for (index_t i = 0; i < p.rows; ++i) {
      const float* a = p.a.data + plane * p.a.plane_stride + i * p.a.row_stride;
      const float* b = p.b.data + plane * p.b.plane_stride;
      float* out = p.out + (plane * p.rows + i) * p.cols;
      for (index_t j = 0; j < p.cols; ++j) out[j] = 0.0f;
      for (index_t k = 0; k < p.inner; ++k) {
        const float aik = a[k * p.a.col_stride];
        if (aik == 0.0f) continue;  // the resize matrices are banded
        const float* bk = b + k * p.b.row_stride;
        for (index_t j = 0; j < p.cols; ++j) out[j] += aik * bk[j * p.b.col_stride];
      }
    }
  }
}

void cosine_pixel_grad(const CosineGradParams& p) {
#pragma omp parallel for schedule(static) if (worth_threads(p.batch * p.channels * p.pixels))
  for (index_t g = 0; g < p.batch * p.pixels; ++g) cosine_pixel_grad_at(p, g);
}

void pull_scale(const PullScaleParams& p) {
  const index_t n = p.planes * p.low_h * p.low_w;
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (index_t g = 0; g < n; ++g) pull_scale_at(p, g);
}

}  // namespace egsde::cpu
