// philox_normal, CPU (the body is in the shared header).
#include "egsde/ops/noise.h"
#include "parallel.h"

namespace egsde::cpu {

void philox_normal(const PhiloxNormalParams& p) {
  const PhiloxNormalParams q = philox_normal_resolved(p);  // once, not per block
  const index_t blocks = (q.per_image + 3) / 4;
#pragma omp parallel for collapse(2) schedule(static) if (worth_threads(q.batch * q.per_image))
  for (index_t b = 0; b < q.batch; ++b) {
    for (index_t block = 0; block < blocks; ++block) philox_normal_block(q, b, block);
  }
}

void philox_uint32(std::uint32_t* out, index_t batch, index_t per_image, const NoiseKey& key) {
  const index_t blocks = (per_image + 3) / 4;
  for (index_t b = 0; b < batch; ++b) {
    for (index_t block = 0; block < blocks; ++block) {
      const Philox4 r = philox_block(key.seeds[b], key, static_cast<std::uint64_t>(block));
      for (int lane = 0; lane < 4; ++lane) out[(b * blocks + block) * 4 + lane] = r.x[lane];
    }
  }
}

}  // namespace egsde::cpu
