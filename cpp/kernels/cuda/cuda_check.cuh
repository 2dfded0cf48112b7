// Launch helpers shared by the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "egsde/common.h"

namespace egsde::cuda {

constexpr int kThreads = 256;

inline unsigned int blocks_for(index_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(err));
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace egsde::cuda
