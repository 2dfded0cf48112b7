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
// `index`: the CUDA device's ordinal (DeviceScope makes it current; unused on the CPU);
// `threads`: on the CPU, the most OpenMP threads of the kernels (DeviceScope caps it; 0: no cap).
struct ExecutionContext {
  Device device = Device::CPU;
  void* stream = nullptr;
  int index = 0;
  int threads = 0;
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void require(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

// a * b for sizes and counts (a, b >= 0), refused where the product does not fit in index_t.
inline index_t checked_mul(index_t a, index_t b, const std::string& what) {
  index_t product = 0;
  require(!__builtin_mul_overflow(a, b, &product), what + ": too large (does not fit in 64 bits)");
  return product;
}

}  // namespace egsde
