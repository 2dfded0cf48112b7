"""The demo's procedural two-domain images (nothing is downloaded): discs become squares.

The two domains differ in one visible, learnable feature, the shape, and share everything else,
as cat and dog differ in species but share pose and colour: each image is a flat background with
one to three shapes, and a shape's colour, centre and area are the same in both domains. The
source draws them as discs, the target as axis-aligned squares of the same area. Image ``i`` of a
seed has the same layout in both domains, so every source image has a paired true target
(``paired_target``): the yardstick a toy allows and real data never does.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

DOMAINS = ("source", "target")
IMAGE_SIZE = 32
EDGE = 0.6  # the width (pixels) of the shapes' soft edges: smooth, yet sharp at 32 x 32


def layout(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, float, np.ndarray]]]:
    """The domain-independent content of one image: its background colour and, for each shape,
    (centre x, centre y, radius, colour) in units of the image size."""
    background = rng.uniform(-0.9, -0.3, size=3).astype(np.float32)
    shapes = []
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.22, 0.78, size=2)
        radius = rng.uniform(0.15, 0.28)
        shapes.append((cx, cy, radius, rng.uniform(-0.2, 1.0, size=3).astype(np.float32)))
    return background, shapes


def render(background: np.ndarray, shapes, domain: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """One [3, size, size] float32 image in [-1, 1]: the layout drawn as discs (``source``) or
    squares of the same area (``target``)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.broadcast_to(background[:, None, None], (3, size, size)).copy()
    for cx, cy, radius, colour in shapes:
        dx, dy, r = xx - cx * size, yy - cy * size, radius * size
        if domain == "source":
            inside = r - np.hypot(dx, dy)
        else:  # a square of the disc's area: half-side r * sqrt(pi) / 2
            inside = r * np.sqrt(np.pi) / 2 - np.maximum(np.abs(dx), np.abs(dy))
        mask = 1.0 / (1.0 + np.exp(-inside / EDGE))
        image = image * (1 - mask[None]) + colour[:, None, None] * mask[None]
    return np.clip(image, -1.0, 1.0).astype(np.float32)


def domain_batch(domain: str, indices, *, size: int = IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """Images ``indices`` of a domain as [N, 3, size, size] in [-1, 1]; deterministic in
    (seed, index), and image ``i`` has the same layout in both domains."""
    if domain not in DOMAINS:
        raise ConfigError(f"the demo's domains are {DOMAINS}, got {domain!r}")
    images = [render(*layout(np.random.default_rng([seed, int(i)])), domain, size) for i in indices]
    return torch.from_numpy(np.stack(images)) if images else torch.empty(0, 3, size, size)


def paired_target(indices, *, size: int = IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """The true target of each source image ``domain_batch("source", indices, seed=seed)``: the
    same shapes, colours and background, drawn as squares."""
    return domain_batch("target", indices, size=size, seed=seed)
