// lowpass primitives, CUDA: plane_gemm (one thread per output element) and the per-pixel
// cosine gradient (one thread per pixel), the stable pull's scaling (one thread per element).
#include "cuda_check.cuh"
#include "egsde/ops/lowpass.h"

namespace egsde::cuda {

__global__ void plane_gemm_kernel(PlaneGemmParams p) {
  const index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const index_t per_plane = p.rows * p.cols;
  if (g >= p.planes * per_plane) return;
  const index_t plane = g / per_plane, i = (g % per_plane) / p.cols, j = g % p.cols;
  const float* a = p.a.data + plane * p.a.plane_stride + i * p.a.row_stride;
  const float* b = p.b.data + plane * p.b.plane_stride + j * p.b.col_stride;
  float acc = 0.0f;
  for (index_t k = 0; k < p.inner; ++k) acc += a[k * p.a.col_stride] * b[k * p.b.row_stride];
  p.out[g] = acc;
}

void plane_gemm(const PlaneGemmParams& p, void* stream) {
  const index_t n = p.planes * p.rows * p.cols;
  if (n == 0) return;
  plane_gemm_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(p);
  check_launch("plane_gemm");
}

__global__ void cosine_pixel_grad_kernel(CosineGradParams p) {
  const index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g < p.batch * p.pixels) cosine_pixel_grad_at(p, g);
}

void cosine_pixel_grad(const CosineGradParams& p, void* stream) {
  const index_t n = p.batch * p.pixels;
  if (n == 0) return;
  cosine_pixel_grad_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(p);
  check_launch("cosine_pixel_grad");
}

__global__ void pull_scale_kernel(PullScaleParams p) {
  const index_t g = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g < p.planes * p.low_h * p.low_w) pull_scale_at(p, g);
}

void pull_scale(const PullScaleParams& p, void* stream) {
  const index_t n = p.planes * p.low_h * p.low_w;
  if (n == 0) return;
  pull_scale_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(p);
  check_launch("pull_scale");
}

}  // namespace egsde::cuda
