// When a CPU kernel is worth an OpenMP team. Below kParallelMinWork (elements, or multiply-adds
// for plane_gemm) a kernel runs on the calling thread: on a few cores, waking a team for a 32x32
// image costs more than the work, and the team competes with the network runtime's own threads.
#pragma once

#include "egsde/common.h"

namespace egsde::cpu {

constexpr index_t kParallelMinWork = index_t{1} << 15;

inline bool worth_threads(index_t work) { return work >= kParallelMinWork; }

}  // namespace egsde::cpu
