// axpby, CPU (the body is in the shared header).
#include "egsde/ops/axpby.h"

namespace egsde::cpu {

void axpby(const AxpbyParams& p) {
#pragma omp parallel for simd schedule(static)
  for (index_t i = 0; i < p.n; ++i) p.out[i] = axpby_at(p, i);
}

}  // namespace egsde::cpu
