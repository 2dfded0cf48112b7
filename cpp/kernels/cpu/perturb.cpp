// perturb, CPU.
#include "egsde/ops/perturb.h"

namespace egsde::cpu {

void perturb(const PerturbParams& p) {
#pragma omp parallel for simd schedule(static)
  for (index_t i = 0; i < p.n; ++i) p.out[i] = p.a * p.x[i] + p.b * p.e[i];
}

}  // namespace egsde::cpu
