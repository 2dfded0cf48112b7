"""The domain-independent expert's low-pass filter: a separable resize down by N, then up by N.

Each axis of length ``n`` is resized by a matrix built once in float64 (``resize_matrix``),
exactly the antialiased triangle-kernel resize of the original code (reference/README.md):
an output of length ``m = n * s`` puts output pixel ``o = 1..m`` at input coordinate
``c = o / s + 0.5 (1 - 1/s)``; the kernel is ``tri(d) = max(0, 1 - |d|)``, stretched to
``s * tri(s d)`` (width ``2/s``) when downscaling; the taps ``p = floor(c - width/2) + j - 1``
(``j = 0 .. ceil(width) + 1``) get weights ``k(c - p - 1)`` normalised to sum to 1, and
out-of-range taps reflect with the edge repeated (index sequence ``0..n-1, n-1..0`` mod 2n).

The filter of one channel is ``L(Y) = U_h D_h Y D_w^T U_w^T``, with ``D`` of shape (n/N, n) and
``U`` of shape (n, n/N): O(H W n/N) work, never a dense (H W)^2 operator. The energy gradients
have closed forms (``LowPassFilter.energy_grad``) that the native kernels reproduce.

The stable forms of the expert (``settings.lowpass``). With the squared-distance energy
``E = ||L y - L x||^2`` the expert's gradient ``2 A (y - x)``, ``A = L^T L``, is a linear pull, and
the official update steps it explicitly: ``y' = y_bar - c A (y - x)`` with ``c = 2 li w`` (``w``
the update's guidance weight, ``y_bar`` the update without the expert), stable only while
``c lambda_max(A)`` stays below about 2. ``implicit`` steps it backward instead (the proximal
step, ``y' = x + (I + c A)^-1 (y_bar - x)``) and ``exact`` integrates the pull exactly
(``y' = x + exp(-c A) (y_bar - x)``): both are stable at any ``c`` and equal the gradient step to
first order in ``c``. Since ``A = A_h (x) A_w`` with ``A_h = (U_h D_h)^T U_h D_h`` of rank ``n/N``,
``f(A) v = v + Q_h (F o (Q_h^T v Q_w)) Q_w^T`` with ``Q`` the eigenvectors of the ``n/N`` nonzero
eigenvalues (one host eigendecomposition per axis, ``lowpass_eigen``) and
``F_ij = f(c lambda_i mu_j) - 1``: the plane GEMMs of the filter and one small scaling.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError
from .choices import LOWPASS_FORMS
from .similarity import COSINE_EPS, check_kind, lowpass_energy

# F(z) = f(z) - 1 of each stable form, z = c * lambda_i * mu_j >= 0 (the native pull_scale_at twin).
_PULL_FACTORS = {"implicit": lambda z: -z / (1.0 + z), "exact": lambda z: torch.expm1(-z)}
if ("gradient", *_PULL_FACTORS) != LOWPASS_FORMS:  # the settings offer choices.LOWPASS_FORMS: each must exist here
    raise ImportError(f"lowpass implements gradient and {list(_PULL_FACTORS)}, the settings offer {LOWPASS_FORMS}")


def _triangle(d: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(d))


def resize_matrix(n_in: int, scale: float) -> np.ndarray:
    """The (round(n_in * scale), n_in) float64 matrix resizing one axis by ``scale``."""
    n_out = int(round(n_in * scale))
    if n_out < 1:
        raise ConfigError(f"cannot resize length {n_in} by {scale}: empty output")
    if scale < 1:
        width = 2.0 / scale

        def kernel(d):
            return scale * _triangle(scale * d)
    else:
        width = 2.0

        def kernel(d):
            return _triangle(d)

    centres = np.arange(1, n_out + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(centres - width / 2)
    taps = left[:, None] + np.arange(math.ceil(width) + 2)[None, :] - 1
    weights = kernel(centres[:, None] - taps - 1)
    sums = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(sums == 0, 1.0, sums)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    index = mirror[np.mod(taps.astype(np.int64), 2 * n_in)]
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(n_out), taps.shape[1]), index.ravel()), weights.ravel())
    return matrix


def lowpass_factors(n: int, down_N: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, U) for one axis of length ``n``: D is (n/N, n), U is (n, n/N), float64."""
    if down_N < 1 or n % down_N:
        raise ConfigError(f"down_N must be a positive divisor of the image size {n}, got {down_N}")
    down = resize_matrix(n, 1.0 / down_N)
    up = resize_matrix(n // down_N, float(down_N))
    return down, up


def lowpass_eigen(n: int, down_N: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q [n, n/N], lambda [n/N]): the eigenpairs of ``A = (U D)^T (U D)`` of one axis with the
    n/N largest eigenvalues (A's rank is at most n/N; the rest are zero), float64."""
    down, up = lowpass_factors(n, down_N)
    filt = up @ down
    values, vectors = np.linalg.eigh(filt.T @ filt)
    rank = down.shape[0]
    return np.ascontiguousarray(vectors[:, -rank:]), np.clip(values[-rank:], 0.0, None)


class LowPassFilter:
    """``L = up(down(.))`` on [..., H, W] tensors, with its adjoint and energy gradients."""

    def __init__(self, height: int, width: int, down_N: int, *, device=None, dtype=torch.float32):
        self.height, self.width, self.down_N = height, width, down_N
        dh, uh = lowpass_factors(height, down_N)
        dw, uw = lowpass_factors(width, down_N)

        self.down_h, self.up_h, self.down_w, self.up_w = (torch.as_tensor(a, dtype=dtype, device=device)
                                                          for a in (dh, uh, dw, uw))
        self._eigen = None  # (Q_h, lambda_h, Q_w, lambda_w), made when a stable pull first needs them

    def to(self, device) -> "LowPassFilter":
        for name in ("down_h", "up_h", "down_w", "up_w"):
            setattr(self, name, getattr(self, name).to(device))
        if self._eigen is not None:
            self._eigen = tuple(a.to(device) for a in self._eigen)
        return self

    def eigen(self) -> tuple[torch.Tensor, ...]:
        """(Q_h, lambda_h, Q_w, lambda_w) of ``lowpass_eigen``, in this filter's dtype and device."""
        if self._eigen is None:
            pairs = (*lowpass_eigen(self.height, self.down_N), *lowpass_eigen(self.width, self.down_N))
            self._eigen = tuple(torch.as_tensor(a, dtype=self.down_h.dtype, device=self.down_h.device) for a in pairs)
        return self._eigen

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ConfigError(
                f"low-pass filter built for {self.height}x{self.width}, got {tuple(x.shape[-2:])}"
            )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """L(x) = U_h (D_h x D_w^T) U_w^T per channel (differentiable)."""
        self._check(x)
        low = self.down_h @ x @ self.down_w.T
        return self.up_h @ low @ self.up_w.T

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """L^T(g) = D_h^T (U_h^T g U_w) D_w per channel."""
        self._check(g)
        return self.down_h.T @ (self.up_h.T @ g @ self.up_w) @ self.down_w

    def energy(self, y: torch.Tensor, x: torch.Tensor, kind: str = "neg_l2") -> torch.Tensor:
        """The domain-independent energy of each image (see ``similarity.lowpass_energy``)."""
        return lowpass_energy(kind, self.apply(y), self.apply(x))

    def energy_grad(self, y: torch.Tensor, x: torch.Tensor, kind: str = "neg_l2") -> torch.Tensor:
        """d/dy of ``energy(y, x, kind).sum()``, in closed form.

        neg_l2: ``2 L^T L (y - x)``.
        cosine: with a = L(x), b = L(y) per pixel, ``-1/P L^T((a_hat - cos b_hat) / |b|)``.
        """
        if check_kind(kind, "s2") == "neg_l2":
            return 2.0 * self.adjoint(self.apply(y - x))
        a, b = self.apply(x), self.apply(y)
        norm_a = a.norm(dim=-3, keepdim=True).clamp_min(COSINE_EPS)
        norm_b = b.norm(dim=-3, keepdim=True).clamp_min(COSINE_EPS)
        a_hat, b_hat = a / norm_a, b / norm_b
        cos = (a_hat * b_hat).sum(dim=-3, keepdim=True)
        pixels = self.height * self.width
        d_b = -(a_hat - cos * b_hat) / norm_b / pixels
        return self.adjoint(d_b)

    def pull(self, y: torch.Tensor, x: torch.Tensor, c, form: str) -> torch.Tensor:
        """The squared-distance expert's pull of ``y`` towards ``x`` with strength ``c`` in a
        stable form: ``x + f(c A) (y - x)``, f(z) = 1 / (1 + z) (implicit) or exp(-z) (exact)."""
        self._check(y)
        eig_h, lambda_h, eig_w, lambda_w = self.eigen()
        low = eig_h.T @ (y - x) @ eig_w
        z = c * lambda_h[:, None] * lambda_w[None, :]
        return y + eig_h @ (_PULL_FACTORS[form](z) * low) @ eig_w.T
