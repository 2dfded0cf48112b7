// philox_normal: fill [batch, per_image] floats with draw `key.draw` of the contract's Gaussians
// (or copy that draw from injected noise). Inside the counter-driven step the draw index comes
// from the step's scalars in device memory (see `step`).
#pragma once

#include "egsde/common.h"
#include "egsde/philox.h"
#include "egsde/step_scalars.h"

namespace egsde {

struct PhiloxNormalParams {
  float* out = nullptr;  // [batch, per_image]
  index_t batch = 0;
  index_t per_image = 0;
  NoiseKey key;
  // Injected draws [draws, batch, per_image] (parity tests): draw key.draw is copied, not drawn.
  const float* injected = nullptr;
  // The current step's draw of stream key.stream, read on the device (null: key.draw as given).
  const StepScalars* step = nullptr;
};

// The call with its key resolved: as given, or the step's.
EGSDE_HD PhiloxNormalParams philox_normal_resolved(const PhiloxNormalParams& p) {
  PhiloxNormalParams q = p;
  if (p.step) {
    q.key = step_noise_key(*p.step, p.key);
    q.step = nullptr;
  }
  return q;
}

// Writes the (up to) four Gaussians of Philox block `block` of image `b` (of a resolved call).
EGSDE_HD void philox_normal_block(const PhiloxNormalParams& p, index_t b, index_t block) {
  float z[4];
  if (p.injected) {
    const float* src = p.injected + (static_cast<index_t>(p.key.draw) * p.batch + b) * p.per_image + block * 4;
    for (int lane = 0; lane < 4; ++lane) z[lane] = block * 4 + lane < p.per_image ? src[lane] : 0.0f;
  } else {
    philox_normal4(p.key, static_cast<std::uint32_t>(b), static_cast<std::uint64_t>(block), z);
  }
  float* row = p.out + b * p.per_image;
  for (int lane = 0; lane < 4 && block * 4 + lane < p.per_image; ++lane) row[block * 4 + lane] = z[lane];
}

namespace cpu {
void philox_normal(const PhiloxNormalParams& p);
// The raw stream under the same counter layout: out[b, 4 * block + lane] = word `lane` of
// Philox4x32-10 at counter (block, draw >> 32, draw & 0xFFFFFFFF, stream) and key seeds[b];
// `per_image` rounded up to whole blocks.
void philox_uint32(std::uint32_t* out, index_t batch, index_t per_image, const NoiseKey& key);
}
namespace cuda {
void philox_normal(const PhiloxNormalParams& p, void* stream);
}

}  // namespace egsde
