// egsde_update, CPU: every Philox block of every image (the body is in the shared header).
#include "egsde/ops/egsde_update.h"

namespace egsde::cpu {

void egsde_update(const UpdateParams& p) {
  const index_t blocks = (p.per_image + 3) / 4;
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t b = 0; b < p.batch; ++b) {
    for (index_t block = 0; block < blocks; ++block) egsde_update_block(p, b, block);
  }
}

}  // namespace egsde::cpu
