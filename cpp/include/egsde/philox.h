// The noise contract (see python/egsde_rt/method/noise.py): Philox4x32-10 and Box-Muller, usable on
// the host and in CUDA kernels. Element k of an image with seed q, 64-bit draw d, stream s:
// counter (k / 4, d >> 32, d & 0xFFFFFFFF, s) (for every draw below 2^32 the counter
// (k / 4, 0, d, s)), key (q & 0xFFFFFFFF, q >> 32); lanes 0/1 pair words 0/1, lanes 2/3 words
// 2/3; u = (x + 0.5) / 2^32 and the Gaussian in double, rounded once to float. Each image of a
// batch has its own seed, and its noise depends on nothing else (not its batch position).
#pragma once

#include <cmath>
#include <cstdint>

#include "egsde/common.h"

namespace egsde {

constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;

struct Philox4 {
  std::uint32_t x[4];
};

EGSDE_HD Philox4 philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3,
                               std::uint32_t k0, std::uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxM0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxM1) * c2;
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The sampler's noise streams (method/noise.py: STREAM_SAMPLING, STREAM_PERTURB).
constexpr std::uint32_t kStreamSampling = 0;  // e of each repeat and the fresh noise z of each update
constexpr std::uint32_t kStreamPerturb = 1;   // the fresh perturbation of each update (perturb="fresh")
constexpr int kNoiseStreams = 2;

// Which noise: the per-image seeds (in memory the kernels can read), the stream and the draw
// index (the element index within the image completes the counter).
struct NoiseKey {
  const std::uint64_t* seeds = nullptr;  // [batch]: image b's seed is seeds[b]
  std::uint32_t stream = 0;
  std::uint64_t draw = 0;
};

// Philox4x32-10 of block `block` of an image with seed `seed` under `key`'s stream and draw.
EGSDE_HD Philox4 philox_block(std::uint64_t seed, const NoiseKey& key, std::uint64_t block) {
  return philox4x32_10(static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(key.draw >> 32),
                       static_cast<std::uint32_t>(key.draw), key.stream, static_cast<std::uint32_t>(seed),
                       static_cast<std::uint32_t>(seed >> 32));
}

// The four Gaussians of Philox block `block` of image `image` (seed key.seeds[image]).
EGSDE_HD void philox_normal4(const NoiseKey& key, std::uint32_t image, std::uint64_t block, float out[4]) {
  const Philox4 r = philox_block(key.seeds[image], key, block);
  const double two_pi = 6.283185307179586476925286766559;
  const double inv_2_32 = 2.3283064365386962890625e-10;  // 2^-32
  for (int pair = 0; pair < 2; ++pair) {
    const double u1 = (static_cast<double>(r.x[2 * pair]) + 0.5) * inv_2_32;
    const double u2 = (static_cast<double>(r.x[2 * pair + 1]) + 0.5) * inv_2_32;
    const double radius = sqrt(-2.0 * log(u1));
    const double theta = two_pi * u2;
    out[2 * pair] = static_cast<float>(radius * cos(theta));
    out[2 * pair + 1] = static_cast<float>(radius * sin(theta));
  }
}

}  // namespace egsde
