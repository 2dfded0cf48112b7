"""A procedural two-domain image set for the demo (nothing is downloaded).

Both domains share the domain-independent content: the background colour, and each blob's
position, size and colour. They differ in one domain-specific feature: source blobs are smooth
and flat-coloured; target blobs carry a stripe texture. Image ``i`` of a seed has the same
layout in both domains, so a source image has a known "true" target counterpart.
"""

from __future__ import annotations

import numpy as np
import torch

DOMAINS = ("source", "target")


def blob_image(rng: np.random.Generator, size: int, textured: bool) -> np.ndarray:
    """One [3, size, size] float32 image in [-1, 1] drawn from ``rng``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    background = rng.uniform(-0.9, -0.3, size=3).astype(np.float32)
    image = np.broadcast_to(background[:, None, None], (3, size, size)).copy()
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.2, 0.8, size=2) * size
        radius = rng.uniform(0.12, 0.3) * size
        colour = rng.uniform(-0.2, 1.0, size=3).astype(np.float32)
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        mask = 1.0 / (1.0 + np.exp(-(radius - np.hypot(xx - cx, yy - cy)) / 1.2))
        fill = np.broadcast_to(colour[:, None, None], (3, size, size))
        if textured:
            stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / 4.0 + phase)
            fill = fill * (0.55 + 0.45 * np.sign(stripes))[None]
        image = image * (1 - mask[None]) + fill * mask[None]
    return np.clip(image, -1.0, 1.0).astype(np.float32)


def domain_batch(domain: str, indices, *, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Images ``indices`` of a domain as [N, 3, size, size] in [-1, 1] (deterministic)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    images = [blob_image(np.random.default_rng([seed, int(i)]), size, domain == "target") for i in indices]
    return torch.from_numpy(np.stack(images))
