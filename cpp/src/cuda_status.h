// CUDA runtime return codes, handled where they happen (device.cpp and phase_clock.cpp).
//
// A failed runtime call leaves its error pending: the next cudaGetLastError (check_launch after
// a kernel) would return it and blame an unrelated kernel. So every failure is cleared here
// (cudaGetLastError) and then thrown, or, where nothing may throw (a destructor, a release),
// reported on stderr. A sticky error (a corrupted context) cannot be cleared; it is reported
// by every later call, which is the truth.
#pragma once

#ifdef EGSDE_WITH_CUDA
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "egsde/common.h"

namespace egsde::cuda_status {

// Throws egsde::Error("what: reason") for a failed call, after clearing the pending error.
inline void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  throw Error(std::string(what) + ": " + cudaGetErrorString(err));
}

// For calls that must not throw: a failure is reported on stderr and cleared.
inline void report(cudaError_t err, const char* what) noexcept {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  std::fprintf(stderr, "egsde_rt: %s failed: %s\n", what, cudaGetErrorString(err));
}

}  // namespace egsde::cuda_status
#endif
