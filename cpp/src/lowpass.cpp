// The low-pass filter composed from plane_gemm (see egsde/ops/lowpass.h), for either backend.
//   apply:   L(X)   = U_h (D_h X D_w^T) U_w^T
//   adjoint: L^T(G) = D_h^T (U_h^T G U_w) D_w
//   pull:    Y     += Q_h (F o (Q_h^T (Y - X) Q_w)) Q_w^T
#include "egsde/ops/lowpass.h"

#include "egsde/dispatch.h"

namespace egsde {
namespace {

struct Workspace {
  float *t1, *t2, *t3, *full1, *full2;  // [P,lh,W], [P,lh,lw], [P,H,lw], [P,H,W], [P,H,W]
};

Workspace split(const LowpassParams& p) {
  const index_t planes = p.batch * p.channels;
  Workspace w{};
  w.t1 = p.workspace;
  w.t2 = w.t1 + planes * p.low_h * p.width;
  w.t3 = w.t2 + planes * p.low_h * p.low_w;
  w.full1 = w.t3 + planes * p.height * p.low_w;
  w.full2 = w.full1 + planes * p.height * p.width;
  return w;
}

// out[P, rows, cols] = A B with A = (data, plane_stride, row_stride, col_stride), B likewise.
void gemm(const ExecutionContext& ctx, index_t planes, index_t rows, index_t cols, index_t inner,
          MatrixView a, MatrixView b, float* out) {
  PlaneGemmParams g;
  g.a = a;
  g.b = b;
  g.out = out;
  g.planes = planes;
  g.rows = rows;
  g.cols = cols;
  g.inner = inner;
  plane_gemm(ctx, g);
}

MatrixView shared(const float* m, index_t row_stride, index_t col_stride) { return {m, 0, row_stride, col_stride}; }
MatrixView planes_of(const float* x, index_t plane_stride, index_t row_stride) { return {x, plane_stride, row_stride, 1}; }

void check(const LowpassParams& p) {
  require(p.down_h && p.up_h && p.down_w && p.up_w, "lowpass: the resize matrices are not set");
  require(p.workspace != nullptr, "lowpass: no workspace");
  require(p.low_h > 0 && p.low_w > 0 && p.height > 0 && p.width > 0, "lowpass: empty shape");
}

void adjoint(const ExecutionContext& ctx, const LowpassParams& p, const Workspace& w, const float* g, float* out) {
  const index_t P = p.batch * p.channels, H = p.height, W = p.width, lh = p.low_h, lw = p.low_w;
  gemm(ctx, P, lh, W, H, shared(p.up_h, 1, lh), planes_of(g, H * W, W), w.t1);             // U_h^T G
  gemm(ctx, P, lh, lw, W, planes_of(w.t1, lh * W, W), shared(p.up_w, lw, 1), w.t2);        // .. U_w
  gemm(ctx, P, H, lw, lh, shared(p.down_h, 1, H), planes_of(w.t2, lh * lw, lw), w.t3);     // D_h^T ..
  gemm(ctx, P, H, W, lw, planes_of(w.t3, H * lw, lw), shared(p.down_w, W, 1), out);        // .. D_w
}

}  // namespace

index_t lowpass_workspace_floats(const LowpassParams& p) {
  const index_t planes = p.batch * p.channels;
  return planes * (p.low_h * p.width + p.low_h * p.low_w + p.height * p.low_w + 2 * p.height * p.width);
}

void lowpass_apply(const ExecutionContext& ctx, const LowpassParams& p, const float* x, float* out) {
  check(p);
  const Workspace w = split(p);
  const index_t P = p.batch * p.channels, H = p.height, W = p.width, lh = p.low_h, lw = p.low_w;
  gemm(ctx, P, lh, W, H, shared(p.down_h, H, 1), planes_of(x, H * W, W), w.t1);            // D_h X
  gemm(ctx, P, lh, lw, W, planes_of(w.t1, lh * W, W), shared(p.down_w, 1, W), w.t2);       // .. D_w^T
  gemm(ctx, P, H, lw, lh, shared(p.up_h, lh, 1), planes_of(w.t2, lh * lw, lw), w.t3);      // U_h ..
  gemm(ctx, P, H, W, lw, planes_of(w.t3, H * lw, lw), shared(p.up_w, 1, lw), out);         // .. U_w^T
}

void lowpass_energy_grad(const ExecutionContext& ctx, const LowpassParams& p, EnergyKind kind,
                         const float* y, const float* x, float* grad) {
  check(p);
  const Workspace w = split(p);
  const index_t n = p.batch * p.channels * p.height * p.width;
  if (kind == EnergyKind::NegL2) {  // 2 L^T L (y - x)
    axpby(ctx, AxpbyParams{y, x, w.full1, n, 1.0f, -1.0f});
    lowpass_apply(ctx, p, w.full1, w.full2);
    adjoint(ctx, p, w, w.full2, grad);
    axpby(ctx, AxpbyParams{grad, grad, grad, n, 2.0f, 0.0f});
    return;
  }
  // cosine: -1/P L^T((a_hat - cos b_hat) / |b|) with a = L(x), b = L(y)
  lowpass_apply(ctx, p, x, w.full1);
  lowpass_apply(ctx, p, y, w.full2);
  CosineGradParams c;
  c.a = w.full1;
  c.b = w.full2;
  c.out = grad;
  c.batch = p.batch;
  c.channels = p.channels;
  c.pixels = p.height * p.width;
  cosine_pixel_grad(ctx, c);
  adjoint(ctx, p, w, grad, grad);
}

void lowpass_pull(const ExecutionContext& ctx, const LowpassParams& p, LowpassForm form, float* y, const float* x,
                  float c, const StepScalars* step) {
  check(p);
  require(form != LowpassForm::Gradient, "lowpass_pull: the gradient form has no pull");
  require(p.eig_h && p.eig_w && p.lambda_h && p.lambda_w, "lowpass_pull: the eigenpairs are not set");
  const Workspace w = split(p);
  const index_t P = p.batch * p.channels, H = p.height, W = p.width, lh = p.low_h, lw = p.low_w;
  const index_t n = P * H * W;
  axpby(ctx, AxpbyParams{y, x, w.full1, n, 1.0f, -1.0f});                                        // V = Y - X
  gemm(ctx, P, lh, W, H, shared(p.eig_h, 1, lh), planes_of(w.full1, H * W, W), w.t1);          // Q_h^T V
  gemm(ctx, P, lh, lw, W, planes_of(w.t1, lh * W, W), shared(p.eig_w, lw, 1), w.t2);           // .. Q_w
  pull_scale(ctx, PullScaleParams{w.t2, p.lambda_h, p.lambda_w, P, lh, lw, form, c, step});    // F o ..
  gemm(ctx, P, H, lw, lh, shared(p.eig_h, lh, 1), planes_of(w.t2, lh * lw, lw), w.t3);         // Q_h ..
  gemm(ctx, P, H, W, lw, planes_of(w.t3, H * lw, lw), shared(p.eig_w, 1, lw), w.full2);        // .. Q_w^T
  axpby(ctx, AxpbyParams{y, w.full2, y, n, 1.0f, 1.0f});
}

}  // namespace egsde
