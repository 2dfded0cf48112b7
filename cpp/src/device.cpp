// Device memory and device discovery. CUDA runtime calls only when built with CUDA.
#include "egsde/device.h"

#include <cstring>
#include <utility>

#ifdef EGSDE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace egsde {

#ifdef EGSDE_WITH_CUDA
namespace {
void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(err));
}
}  // namespace
#endif

DeviceArray::DeviceArray(Device device, index_t size) : device_(device), size_(size) {
  require(size >= 0, "DeviceArray: negative size");
  if (size == 0) return;
  if (device == Device::CPU) {
    data_ = new float[static_cast<size_t>(size)]();
    return;
  }
#ifdef EGSDE_WITH_CUDA
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&data_), sizeof(float) * static_cast<size_t>(size)), "cudaMalloc");
  check_cuda(cudaMemset(data_, 0, sizeof(float) * static_cast<size_t>(size)), "cudaMemset");
#else
  throw Error("egsde_rt was built without CUDA: no device memory");
#endif
}

DeviceArray::~DeviceArray() { release(); }

DeviceArray::DeviceArray(DeviceArray&& other) noexcept
    : device_(other.device_), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

DeviceArray& DeviceArray::operator=(DeviceArray&& other) noexcept {
  if (this != &other) {
    release();
    device_ = other.device_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void DeviceArray::release() noexcept {
  if (!data_) return;
  if (device_ == Device::CPU) {
    delete[] data_;
  } else {
#ifdef EGSDE_WITH_CUDA
    cudaFree(data_);
#endif
  }
  data_ = nullptr;
}

void DeviceArray::upload(const ExecutionContext& ctx, const float* host, index_t count, index_t offset) {
  require(offset >= 0 && count >= 0 && offset + count <= size_, "DeviceArray::upload out of range");
  if (count == 0) return;
  if (device_ == Device::CPU) {
    std::memcpy(data_ + offset, host, sizeof(float) * static_cast<size_t>(count));
    return;
  }
#ifdef EGSDE_WITH_CUDA
  // From pageable memory the call returns once the host buffer has been staged.
  check_cuda(cudaMemcpyAsync(data_ + offset, host, sizeof(float) * static_cast<size_t>(count),
                             cudaMemcpyHostToDevice, static_cast<cudaStream_t>(ctx.stream)),
             "cudaMemcpyAsync to device");
#else
  (void)ctx;
#endif
}

void DeviceArray::download(const ExecutionContext& ctx, float* host, index_t count, index_t offset) const {
  require(offset >= 0 && count >= 0 && offset + count <= size_, "DeviceArray::download out of range");
  if (count == 0) return;
  if (device_ == Device::CPU) {
    std::memcpy(host, data_ + offset, sizeof(float) * static_cast<size_t>(count));
    return;
  }
#ifdef EGSDE_WITH_CUDA
  check_cuda(cudaMemcpyAsync(host, data_ + offset, sizeof(float) * static_cast<size_t>(count),
                             cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(ctx.stream)),
             "cudaMemcpyAsync to host");
  synchronize(ctx);
#else
  (void)ctx;
#endif
}

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

void synchronize(const ExecutionContext& ctx) {
#ifdef EGSDE_WITH_CUDA
  if (ctx.device == Device::CUDA)
    check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(ctx.stream)), "cudaStreamSynchronize");
#else
  (void)ctx;
#endif
}

}  // namespace egsde
