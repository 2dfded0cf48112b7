// axpby, CPU (the body is in the shared header).
#include "egsde/ops/axpby.h"
#include "parallel.h"

namespace egsde::cpu {

void axpby(const AxpbyParams& p) {
  const AxpbyParams q = axpby_resolved(p);  // once, not per element
#pragma omp parallel for simd schedule(static) if (worth_threads(q.n))
  for (index_t i = 0; i < q.n; ++i) q.out[i] = axpby_at(q, i);
}

}  // namespace egsde::cpu
