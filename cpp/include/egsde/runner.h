// The interface a network backend implements: the sampler calls it with views of its own
// buffers (host memory for a CPU sampler, device memory for a CUDA one), valid during the call.
#pragma once

#include <vector>

#include "egsde/common.h"

namespace egsde {

struct TensorRef {
  float* data = nullptr;
  std::vector<index_t> shape;
  Device device = Device::CPU;
  void* stream = nullptr;  // the CUDA stream the sampler orders its work on
  index_t numel() const {
    index_t n = 1;
    for (index_t s : shape) n *= s;
    return n;
  }
};

class Runner {
 public:
  virtual ~Runner() = default;
  // eps_out = eps(y, t) of the score network (3 channels).
  virtual void score(const TensorRef& y, const TensorRef& t, const TensorRef& eps_out) = 0;
  // grad_out = d/dy sum_batch S1(F(y, t), F(x_t, t)) of the domain-specific expert.
  virtual void dse_grad(const TensorRef& y, const TensorRef& x_t, const TensorRef& t, const TensorRef& grad_out) = 0;
  // A distilled engine's one network: eps_out = the guided eps of a student (models/student.py),
  // from y, the perturbed source x_t and t. A runner without a student refuses (Error).
  virtual void student(const TensorRef& y, const TensorRef& x_t, const TensorRef& t, const TensorRef& eps_out) {
    (void)y, (void)x_t, (void)t, (void)eps_out;
    throw Error("this runner has no student network (a distilled engine's runner has one)");
  }
};

}  // namespace egsde
