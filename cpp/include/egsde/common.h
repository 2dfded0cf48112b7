// Shared definitions of the native core: host/device qualifiers, sizes, devices, errors.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define EGSDE_HD __host__ __device__ __forceinline__
#else
#define EGSDE_HD inline
#endif

namespace egsde {

using index_t = std::int64_t;

enum class Device { CPU = 0, CUDA = 1 };

// Where a kernel runs and on which CUDA stream (an opaque cudaStream_t; null = default stream);
// `index`: the CUDA device's ordinal (DeviceScope makes it current; unused on the CPU).
struct ExecutionContext {
  Device device = Device::CPU;
  void* stream = nullptr;
  int index = 0;
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void require(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace egsde
