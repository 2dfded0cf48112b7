// egsde_update, CPU: every Philox block of every image (the body is in the shared header).
#include "egsde/ops/egsde_update.h"
#include "parallel.h"

namespace egsde::cpu {

void egsde_update(const UpdateParams& p) {
  const UpdateParams q = egsde_update_resolved(p);  // once, not per block
  const index_t blocks = (q.per_image + 3) / 4;
#pragma omp parallel for collapse(2) schedule(static) if (worth_threads(q.batch * q.per_image))
  for (index_t b = 0; b < q.batch; ++b) {
    for (index_t block = 0; block < blocks; ++block) egsde_update_block(q, b, block);
  }
}

}  // namespace egsde::cpu
