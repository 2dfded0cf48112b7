// lowpass primitives, CPU: plane_gemm and the per-pixel cosine gradient.
#include <cmath>

#include "egsde/ops/lowpass.h"

namespace egsde::cpu {

void plane_gemm(const PlaneGemmParams& p) {
#pragma omp parallel for collapse(2) schedule(static)
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
  const float inv_pixels = 1.0f / static_cast<float>(p.pixels);
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t b = 0; b < p.batch; ++b) {
    for (index_t px = 0; px < p.pixels; ++px) {
      const index_t base = b * p.channels * p.pixels + px;
      float na = 0.0f, nb = 0.0f, dot = 0.0f;
      for (index_t c = 0; c < p.channels; ++c) {
        const float av = p.a[base + c * p.pixels], bv = p.b[base + c * p.pixels];
        na += av * av;
        nb += bv * bv;
        dot += av * bv;
      }
      na = std::fmax(std::sqrt(na), p.eps);
      nb = std::fmax(std::sqrt(nb), p.eps);
      const float cos = dot / (na * nb);
      for (index_t c = 0; c < p.channels; ++c) {
        const float a_hat = p.a[base + c * p.pixels] / na, b_hat = p.b[base + c * p.pixels] / nb;
        p.out[base + c * p.pixels] = -(a_hat - cos * b_hat) / nb * inv_pixels;
      }
    }
  }
}

}  // namespace egsde::cpu
