// Device memory and device discovery. CUDA runtime calls only when built with CUDA.
#include "egsde/device.h"

#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef EGSDE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "cuda_status.h"
#endif

namespace egsde {

#ifdef EGSDE_WITH_CUDA
namespace {
// Every failure is cleared where it happens (see cuda_status.h), so no later check blames a kernel.
void check_cuda(cudaError_t err, const char* what) { cuda_status::check(err, what); }
}  // namespace
#endif

namespace memory {

void* allocate(Device device, size_t bytes) {
  if (bytes == 0) return nullptr;
  if (device == Device::CPU) {
    void* data = std::calloc(bytes, 1);
    if (!data) throw Error("out of host memory");
    return data;
  }
#ifdef EGSDE_WITH_CUDA
  void* data = nullptr;
  check_cuda(cudaMalloc(&data, bytes), "cudaMalloc");
  check_cuda(cudaMemset(data, 0, bytes), "cudaMemset");
  // cudaMemset runs on the legacy default stream, which does not order against non-blocking
  // streams (PyTorch's): finish the zero fill before any stream-ordered copy can touch the memory.
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  return data;
#else
  throw Error("egsde_rt was built without CUDA: no device memory");
#endif
}

void release(Device device, void* data) noexcept {
  if (!data) return;
  if (device == Device::CPU) {
    std::free(data);
    return;
  }
#ifdef EGSDE_WITH_CUDA
  // Called from destructors: a failure (e.g. a free inside a stream capture) is reported and cleared.
  cuda_status::report(cudaFree(data), "cudaFree");
#endif
}

void to_device(const ExecutionContext& ctx, Device device, void* dst, const void* host, size_t bytes) {
  if (device == Device::CPU) {
    std::memcpy(dst, host, bytes);
    return;
  }
#ifdef EGSDE_WITH_CUDA
  // From pageable memory the call returns once the host buffer has been staged.
  check_cuda(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(ctx.stream)),
             "cudaMemcpyAsync (upload)");
#else
  (void)ctx;
#endif
}

void to_host(const ExecutionContext& ctx, Device device, void* host, const void* src, size_t bytes) {
  if (device == Device::CPU) {
    std::memcpy(host, src, bytes);
    return;
  }
#ifdef EGSDE_WITH_CUDA
  check_cuda(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(ctx.stream)),
             "cudaMemcpyAsync (download)");
  synchronize(ctx);
#else
  (void)ctx;
#endif
}

void zero(const ExecutionContext& ctx, Device device, void* dst, size_t bytes) {
  if (device == Device::CPU) {
    std::memset(dst, 0, bytes);
    return;
  }
#ifdef EGSDE_WITH_CUDA
  check_cuda(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(ctx.stream)), "cudaMemsetAsync");
#else
  (void)ctx;
#endif
}

}  // namespace memory

int cuda_device_count(std::string* reason) {
#ifdef EGSDE_WITH_CUDA
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (reason) *reason = std::string("CUDA unavailable: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  if (count == 0 && reason) *reason = "no CUDA device found";
  return count;
#else
  if (reason) *reason = "egsde_rt was built without CUDA (no CUDA compiler at build time)";
  return 0;
#endif
}

DeviceScope::DeviceScope(const ExecutionContext& ctx) {
#ifdef _OPENMP
  if (ctx.device == Device::CPU && ctx.threads > 0 && omp_get_max_threads() > ctx.threads) {
    previous_threads_ = omp_get_max_threads();
    omp_set_num_threads(ctx.threads);
  }
#endif
#ifdef EGSDE_WITH_CUDA
  if (ctx.device != Device::CUDA) return;
  int current = 0;
  check_cuda(cudaGetDevice(&current), "cudaGetDevice");
  if (current == ctx.index) return;
  check_cuda(cudaSetDevice(ctx.index), "cudaSetDevice");
  previous_ = current;
#else
  (void)ctx;
#endif
}

DeviceScope::~DeviceScope() {
#ifdef _OPENMP
  if (previous_threads_ > 0) omp_set_num_threads(previous_threads_);
#endif
#ifdef EGSDE_WITH_CUDA
  if (previous_ >= 0) cuda_status::report(cudaSetDevice(previous_), "cudaSetDevice");
#endif
}

void synchronize(const ExecutionContext& ctx) {
#ifdef EGSDE_WITH_CUDA
  if (ctx.device == Device::CUDA)
    check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(ctx.stream)), "cudaStreamSynchronize");
#else
  (void)ctx;
#endif
}

}  // namespace egsde
