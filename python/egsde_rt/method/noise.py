"""The noise contract: counter-based Gaussian noise that every backend draws identically.

Specification (the C++ and CUDA kernels implement exactly this):

* Generator: Philox4x32-10 (Salmon et al., SC'11; Random123). Multipliers
  ``M0 = 0xD2511F53``, ``M1 = 0xCD9E8D57``; key increments ``W0 = 0x9E3779B9``,
  ``W1 = 0xBB67AE85``. One round maps counter ``(c0, c1, c2, c3)`` and key ``(k0, k1)`` to
  ``(hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0))``; the key is bumped by
  ``(W0, W1)`` (mod 2^32) between rounds; 10 rounds.
* Seeds: every image has its own 64-bit seed ``q`` (a call's ``seed`` is one integer, which
  every image of the call uses, or a list with one integer per image). Key:
  ``(k0, k1) = (q & 0xFFFFFFFF, q >> 32)``. Seeds are checked once, at the public entries
  (``seed_array``), and passed inward as a uint64 array of one seed per image, which nothing
  checks again (a uint64 array holds valid seeds by its type).
* A tensor of shape ``[B, ...]`` is filled per image: for image ``b`` with seed ``q_b`` and
  element ``k`` (flat C-order index within the image), with ``block = k // 4`` and
  ``lane = k % 4``, the counter is ``(block, draw >> 32, draw & 0xFFFFFFFF, stream)`` under the
  key of ``q_b`` (the draw is 64-bit; every draw below 2^32 has the counter
  ``(block, 0, draw, stream)``). So an image's noise depends only on its seed, never on the
  batch size or its position in the batch
  (``run([a, b], seed=[1, 2])[1]`` draws exactly the noise of ``run(b, seed=2)``; the networks'
  own float kernels may still round differently at batch 1 than at 2: see docs/api.md).
* Folders: ``derive_seed(seed, relative_path)`` gives each file its own seed from the run's seed
  and the file's path relative to the input folder (the first 8 bytes, little-endian, of
  SHA-256 over ``"egsde-rt:{seed}:{posix path}"``), so a rerun, another batch size or a
  distributed run gives every file the same noise.
* Gaussians by Box-Muller on lane pairs, in float64, rounded once to float32: with the Philox
  output ``(x0, x1, x2, x3)``, lanes 0/1 use ``(x0, x1)`` and lanes 2/3 use ``(x2, x3)``:
  ``u1 = (xa + 0.5) / 2^32``, ``u2 = (xb + 0.5) / 2^32``, ``r = sqrt(-2 ln u1)``,
  ``theta = 2 pi u2``; the even lane is ``r cos(theta)``, the odd lane ``r sin(theta)``.
* Streams and draws used by the sampler (K updates per repeat, repeat ``r`` from 0):
  stream 0 (``STREAM_SAMPLING``): draw ``r*(K+1)`` is ``e`` of repeat ``r`` (its start point and
  its perturbed sources); draw ``r*(K+1) + k`` is the fresh noise of update ``k = 1..K``.
  This is the layout of the reference goldens' ``noise[M+1]`` tensor.
  stream 1 (``STREAM_PERTURB``): draw ``r*K + k - 1`` is the fresh perturbation of update ``k``
  (only in the paper's ``perturb="fresh"`` variant).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

STREAM_SAMPLING = 0
STREAM_PERTURB = 1

_MASK32 = np.uint64(0xFFFFFFFF)
_TWO_POW_32 = 4294967296.0


def _mulhilo(a: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    product = np.uint64(a) * b.astype(np.uint64)
    return product >> np.uint64(32), product & _MASK32


def philox4x32_10(counter: np.ndarray, key) -> np.ndarray:
    """Philox4x32-10 of every row of ``counter`` (uint32 [..., 4]) under ``key`` (two uint32, or
    two arrays broadcastable to ``counter[..., 0]``: one key per row)."""
    counter = np.asarray(counter, dtype=np.uint32)
    c0, c1, c2, c3 = (counter[..., i].astype(np.uint64) for i in range(4))
    k0, k1 = (np.asarray(k, dtype=np.uint64) & _MASK32 for k in key)
    for round_index in range(PHILOX_ROUNDS):
        if round_index:
            k0 = (k0 + np.uint64(PHILOX_W0)) & _MASK32
            k1 = (k1 + np.uint64(PHILOX_W1)) & _MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def check_seed(seed) -> int:
    """A seed must be an integer in [0, 2^64) (Python or numpy integers; not bool, float or str)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer in [0, 2^64), got {seed!r} ({type(seed).__name__})")
    if not 0 <= int(seed) < 2**64:
        raise ConfigError(f"seed must be in [0, 2^64), got {seed}")
    return int(seed)


Seeds = int | Sequence[int] | np.ndarray  # one seed for every image, or one per image


def seed_array(seed: Seeds, batch: int) -> np.ndarray:
    """The seeds of ``batch`` images (one integer for every image, or a sequence of one each),
    checked, as a uint64 array [batch]: what the public entries pass inward. A uint64 array of
    ``batch`` seeds is returned as it is (checked by its type)."""
    if isinstance(seed, np.ndarray) and seed.dtype == np.uint64 and seed.shape == (batch,):
        return seed
    if isinstance(seed, np.ndarray) and seed.ndim == 0:
        seed = seed[()]  # a numpy scalar: one seed
    if isinstance(seed, (np.ndarray, list, tuple)):
        seeds = list(seed) if not isinstance(seed, np.ndarray) or seed.ndim == 1 else None
        if seeds is None or len(seeds) != batch:
            got = f"shape {list(seed.shape)}" if seeds is None else f"{len(seeds)} seeds"
            raise ConfigError(f"seed must be one integer, or a list with one integer per image ({batch}); got {got}")
        return np.array([check_seed(s) for s in seeds], dtype=np.uint64)
    return np.full(batch, check_seed(seed), dtype=np.uint64)


def derive_seed(seed: int, relative_path: str | PurePath) -> int:
    """The seed of one file of a folder run: from the run's seed (checked by the caller:
    ``check_seed``) and the file's path relative to the folder (as POSIX text), so it does not
    depend on the order, batch or machine it runs in."""
    path = PurePath(relative_path).as_posix()
    digest = hashlib.sha256(f"egsde-rt:{int(seed)}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def seed_keys(seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Philox keys (k0, k1) of checked seeds (``seed_array``), as two uint64 arrays."""
    return seeds & _MASK32, seeds >> np.uint64(32)


def philox_uint32(seed: Seeds, stream: int, draw: int, batch: int, per_image: int) -> np.ndarray:
    """The raw stream: uint32 [batch, ceil(per_image/4)*4], element k of image b at [b, k]."""
    return _philox_uint32(seed_array(seed, batch), stream, draw, per_image)


def _philox_uint32(seeds: np.ndarray, stream: int, draw: int, per_image: int) -> np.ndarray:
    batch, blocks, draw = len(seeds), -(-per_image // 4), int(draw)
    counter = np.zeros((batch, blocks, 4), dtype=np.uint32)
    counter[..., 0] = np.arange(blocks, dtype=np.uint32)[None, :]
    counter[..., 1] = np.uint32(draw >> 32)
    counter[..., 2] = np.uint32(draw & 0xFFFFFFFF)
    counter[..., 3] = np.uint32(stream)
    k0, k1 = seed_keys(seeds)
    return philox4x32_10(counter, (k0[:, None], k1[:, None])).reshape(batch, blocks * 4)


def philox_normal(seed: Seeds, stream: int, draw: int, shape) -> np.ndarray:
    """Standard normal float32 array of ``shape`` ([B, ...]) under the contract above, image b
    seeded by ``seed`` (an integer for every image) or ``seed[b]``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1:
        raise ConfigError("noise shape needs a batch dimension")
    if not (0 <= stream < 2**32 and 0 <= draw < 2**64):
        raise ConfigError(f"the stream must fit in 32 bits and the draw in 64 bits, got {stream}, {draw}")
    return _philox_normal(seed_array(seed, shape[0]), stream, draw, shape)


def _philox_normal(seeds: np.ndarray, stream: int, draw: int, shape: tuple) -> np.ndarray:
    batch, per_image = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    bits = _philox_uint32(seeds, stream, draw, per_image).reshape(batch, -1, 2, 2)
    u1 = (bits[..., 0].astype(np.float64) + 0.5) / _TWO_POW_32
    u2 = (bits[..., 1].astype(np.float64) + 0.5) / _TWO_POW_32
    radius = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * np.pi * u2
    pairs = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=-1)
    return pairs.reshape(batch, -1)[:, :per_image].astype(np.float32).reshape(shape)


class PhiloxNoise:
    """Noise source of the sampler: ``draw(stream, index, shape)`` under the Philox contract, with
    one seed for every image or one per image (checked here, once; every draw uses them as they are)."""

    def __init__(self, seed: Seeds = 0):
        if isinstance(seed, np.ndarray) and seed.ndim == 0:
            seed = seed[()]
        if isinstance(seed, (np.ndarray, list, tuple)):
            self.seed: int | np.ndarray = seed_array(seed, len(seed))
        else:
            self.seed = check_seed(seed)

    def draw(self, stream: int, index: int, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        seeds = self.seed if isinstance(self.seed, np.ndarray) else np.full(shape[0], self.seed, dtype=np.uint64)
        if len(seeds) != shape[0]:
            raise ConfigError(f"{len(seeds)} seeds for a batch of {shape[0]}")
        return torch.from_numpy(_philox_normal(seeds, stream, index, shape)).to(device)


def check_noise(tensor: torch.Tensor | None, name: str, count: int, shape) -> None:
    """An injected noise tensor must be present, of shape [count, *shape], and finite."""
    if tensor is None:
        raise ConfigError(f"{name} is needed (shape [{count}, {', '.join(map(str, shape))}])")
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor or a numpy array, got {type(tensor).__name__}")
    expected = (count, *tuple(shape))
    if tuple(tensor.shape) != expected:
        raise ConfigError(f"{name} must have shape {list(expected)}, got {list(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ConfigError(f"{name} contains NaN or infinite values")


class InjectedNoise:
    """Noise source reading explicit tensors, laid out as the reference goldens define.

    ``sampling``: [R*(K+1), B, C, H, W] (stream 0); ``perturb``: [R*K, B, C, H, W] (stream 1),
    needed only by the fresh-perturbation variant.
    """

    def __init__(self, sampling: torch.Tensor, perturb: torch.Tensor | None = None):
        self.streams = {STREAM_SAMPLING: sampling, STREAM_PERTURB: perturb}

    def check(self, stream: int, count: int, shape) -> None:
        name = "noise" if stream == STREAM_SAMPLING else "perturb_noise"
        check_noise(self.streams[stream], name, count, shape)

    def draw(self, stream: int, index: int, shape, device=None) -> torch.Tensor:
        return self.streams[stream][index].to(device=device, dtype=torch.float32)
