// Device memory owned by the native core, and what CUDA devices are present.
#pragma once

#include <string>

#include "egsde/common.h"

namespace egsde {

// A float array on the host or on the CUDA device, allocated once and reused.
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(Device device, index_t size);
  ~DeviceArray();
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& other) noexcept;
  DeviceArray& operator=(DeviceArray&& other) noexcept;

  float* data() { return data_; }
  const float* data() const { return data_; }
  index_t size() const { return size_; }
  Device device() const { return device_; }

  // Copies ordered on ctx's stream; both return once the host buffer may be reused.
  void upload(const ExecutionContext& ctx, const float* host, index_t count, index_t offset = 0);
  void download(const ExecutionContext& ctx, float* host, index_t count, index_t offset = 0) const;

 private:
  void release() noexcept;
  Device device_ = Device::CPU;
  float* data_ = nullptr;
  index_t size_ = 0;
};

// The number of usable CUDA devices; 0 (with `reason` set) when built without CUDA, without a
// driver or without a GPU. Never throws.
int cuda_device_count(std::string* reason);

// Waits for the work queued on ctx's stream (no-op on the CPU).
void synchronize(const ExecutionContext& ctx);

}  // namespace egsde
