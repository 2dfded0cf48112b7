// Device memory owned by the native core, and what CUDA devices are present.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "egsde/common.h"

namespace egsde {

// Raw memory behind DeviceBuffer (device.cpp holds every CUDA runtime call).
namespace memory {
void* allocate(Device device, size_t bytes);  // zero-filled
void release(Device device, void* data) noexcept;
// Copies ordered on ctx's stream; both return once the host buffer may be reused (to_host waits).
// The other side (`host` / the destination of to_host) may also be device memory of ctx's device
// (the copy's direction is found from the pointers): what device tensors in and out need.
void to_device(const ExecutionContext& ctx, Device device, void* dst, const void* host, size_t bytes);
void to_host(const ExecutionContext& ctx, Device device, void* host, const void* src, size_t bytes);
// Zero-fills `bytes` of `dst`, ordered on ctx's stream (no host synchronisation).
void zero(const ExecutionContext& ctx, Device device, void* dst, size_t bytes);
}  // namespace memory

// Waits for the work queued on ctx's stream (no-op on the CPU).
void synchronize(const ExecutionContext& ctx);

// An array of plain values (floats, the step table's rows, the step counter) on the host or on
// the CUDA device, allocated once and reused.
template <class T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "DeviceBuffer holds plain values only");

 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device device, index_t size) : device_(device), size_(size) {
    require(size >= 0, "DeviceBuffer: negative size");
    if (size > 0) data_ = static_cast<T*>(memory::allocate(device, sizeof(T) * static_cast<size_t>(size)));
  }
  ~DeviceBuffer() { memory::release(device_, data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : device_(other.device_), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      memory::release(device_, data_);
      device_ = other.device_;
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  index_t size() const { return size_; }
  Device device() const { return device_; }

  // Copies ordered on ctx's stream; both return once the host buffer may be reused.
  void upload(const ExecutionContext& ctx, const T* host, index_t count, index_t offset = 0) {
    require(offset >= 0 && count >= 0 && offset + count <= size_, "DeviceBuffer::upload out of range");
    if (count > 0) memory::to_device(ctx, device_, data_ + offset, host, sizeof(T) * static_cast<size_t>(count));
  }
  void download(const ExecutionContext& ctx, T* host, index_t count, index_t offset = 0) const {
    require(offset >= 0 && count >= 0 && offset + count <= size_, "DeviceBuffer::download out of range");
    if (count > 0) memory::to_host(ctx, device_, host, data_ + offset, sizeof(T) * static_cast<size_t>(count));
  }
  // Every value set to zero bits, ordered on ctx's stream (no host synchronisation, no allocation).
  void zero(const ExecutionContext& ctx) {
    if (size_ > 0) memory::zero(ctx, device_, data_, sizeof(T) * static_cast<size_t>(size_));
  }

 private:
  Device device_ = Device::CPU;
  T* data_ = nullptr;
  index_t size_ = 0;
};

// The float arrays of the loop (images, noise, low-pass matrices and workspace).
using DeviceArray = DeviceBuffer<float>;

// Makes ctx's CUDA device (ctx.index) the calling thread's current device for its lifetime, and
// restores the previous one after: the sampler's allocations, kernels and the runners it calls all
// run on its own device, whichever device the caller had current. On the CPU, the calling
// thread's OpenMP team size is capped at ctx.threads (where not 0): the kernels' teams, and those
// of the runners it calls where they share the OpenMP runtime (PyTorch's), have at most
// ctx.threads threads (fewer where the caller set fewer: egsde_rt's Translator lowers it while
// other processes keep the machine's CPUs busy).
class DeviceScope {
 public:
  explicit DeviceScope(const ExecutionContext& ctx);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
  int previous_threads_ = 0;
};

// `count` values a kernel reads, in the memory of ctx's device: values already there (`on`
// equals ctx.device) are used as they are, without a copy (what benchmarks and CUDA-graph
// capture need); host values are uploaded into a buffer kept until the stream is done with it.
template <class T>
class StagedValues {
 public:
  StagedValues(const ExecutionContext& ctx, const T* values, index_t count, Device on) : ctx_(ctx), data_(values) {
    if (on == ctx.device) return;
    require(on == Device::CPU, "values on a CUDA device for a kernel on the host");
    buffer_ = DeviceBuffer<T>(ctx.device, count);
    buffer_.upload(ctx, values, count);
    data_ = buffer_.data();
  }
  ~StagedValues() {
    if (buffer_.size() == 0) return;
    try {
      synchronize(ctx_);
    } catch (...) {
    }
  }
  StagedValues(const StagedValues&) = delete;
  StagedValues& operator=(const StagedValues&) = delete;
  const T* data() const { return data_; }

 private:
  ExecutionContext ctx_;
  DeviceBuffer<T> buffer_;
  const T* data_ = nullptr;
};

// The number of usable CUDA devices; 0 (with `reason` set) when built without CUDA, without a
// driver or without a GPU. Never throws.
int cuda_device_count(std::string* reason);


}  // namespace egsde
