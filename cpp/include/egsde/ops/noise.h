// philox_normal: fill [batch, per_image] floats with the contract's Gaussians.
#pragma once

#include "egsde/common.h"
#include "egsde/philox.h"

namespace egsde {

struct PhiloxNormalParams {
  float* out = nullptr;  // [batch, per_image]
  index_t batch = 0;
  index_t per_image = 0;
  NoiseKey key;
};

// Writes the (up to) four Gaussians of Philox block `block` of image `b`.
EGSDE_HD void philox_normal_block(const PhiloxNormalParams& p, index_t b, index_t block) {
  float z[4];
  philox_normal4(p.key, static_cast<std::uint32_t>(b), static_cast<std::uint64_t>(block), z);
  float* row = p.out + b * p.per_image;
  for (int lane = 0; lane < 4 && block * 4 + lane < p.per_image; ++lane) row[block * 4 + lane] = z[lane];
}

namespace cpu {
void philox_normal(const PhiloxNormalParams& p);
// The raw stream under the same counter layout: out[b, 4 * block + lane] = word `lane` of
// Philox4x32-10 at counter (block, b, draw, stream); `per_image` rounded up to whole blocks.
void philox_uint32(std::uint32_t* out, index_t batch, index_t per_image, const NoiseKey& key);
}
namespace cuda {
void philox_normal(const PhiloxNormalParams& p, void* stream);
}

}  // namespace egsde
