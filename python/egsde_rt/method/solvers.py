"""Sampling solvers as columns of the step table: the one place a solver is defined.

EGSDE's guidance in eps form: with ``G = ls * grad E_s + li * grad E_i`` (the two energy
gradients, as the official code subtracts them from the DDPM mean),
``eps_hat = eps + sqrt(1 - abar_t) * G``. With the DDPM posterior step this is exactly the
official update (its mean shift ``-(beta_t / sqrt(alpha_t)) * G``), and it is the form that
DDIM and DPM-Solver steps take (as classifier guidance does in guided-diffusion's
``condition_score``).

Every solver here is a linear step in the sample ``y``, the guided ``eps_hat`` and (multistep
solvers) the earlier updates' data predictions ``D_{k-1}, D_{k-2}, D_{k-3}`` (``history`` of
them), plus fresh noise: ``y' = c_y * y + c_e * eps_hat + sum_m c_p[m] * D_{k-1-m} + noise * z``,
where ``D = (y - sigma_t * eps_hat) / alpha_t`` (``alpha_t = sqrt(abar_t)``,
``sigma_t = sqrt(1 - abar_t)``) is the data (x0) prediction of the update. A solver is one
function of a run's updates (``SolverInput``: the cumulative products of its timesteps, the
respaced schedule's float32 tables, ``eta`` and ``var_type``) giving either its step
``(c_y, c_e, c_p, noise)`` per update (``SolverStep``, which ``step_columns`` turns into the
table's columns) or its columns as they are (``StepColumns``). ``schedule.StepCoefficients``
adds the schedule's columns (t, the perturbed source's mix); the column list itself is the native
core's (``egsde_rt._core.STEP_TABLE_COLUMNS``, declared in cpp/include/egsde/step_table.h), so
the native loop, its CUDA graph and the kernels need nothing per solver.

- ``ddpm``: the official update (the posterior mean and the ``var_type`` variance), its columns
  computed with the official float32 ops (the parity path).
- ``ddim``: DDIM with ``eta`` (0: deterministic; 1: the DDPM posterior, i.e. respaced DDPM).
- ``dpmpp-2m-sde``: SDE-DPM-Solver++(2M) (the midpoint form of k-diffusion's
  ``sample_dpmpp_2m_sde`` and diffusers' ``sde-dpmsolver++``) with ``eta`` (1: the SDE; 0: the
  deterministic DPM-Solver++(2M)); its first update (and the last, to t = 0) is first order,
  which at ``eta`` 1 is exactly the DDIM eta 1 step.
- ``sa-solver-1/2/3``: SA-Solver (Xue et al. 2023), the stochastic Adams predictor-corrector in
  data-prediction form with the noise scale ``tau^2 = eta`` (1: the reverse SDE; 0: the ODE),
  predictor and corrector of the same order (the number of data predictions each interpolates).
  The corrector of the step that led to ``y_k`` interpolates through ``D_k``, the evaluation at
  ``y_k`` that the next predictor needs anyway, so it costs no network evaluation; with the same
  noise draw as that step's predictor, the corrected point is ``y_k`` plus a combination of data
  predictions, so corrector and next predictor fold into one linear step of this form
  (``history`` = the order). The integrals of the exponential against the Lagrange basis are
  taken by Gauss-Legendre quadrature (exact to float64 for these polynomials); the oracle
  computes them in closed form. Order 1 without a corrector is the first-order step of
  ``dpmpp-2m-sde`` (at ``eta`` 1 the DDPM posterior).

The eager oracle (``reference``) runs each solver in its textbook form, independently of these
columns; the tests hold the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from ..errors import ConfigError
from .choices import SOLVER_HELP, SOLVER_NAMES, check_eta, check_var_type


class RespacedTables(Protocol):
    """What a solver reads of a respaced schedule (``schedule.Schedule``): its float32 tables, in
    table order (index ``j`` is update ``K - 1 - j``)."""

    betas: torch.Tensor
    alphas: torch.Tensor
    abar: torch.Tensor
    abar_prev: torch.Tensor
    timesteps: torch.Tensor


@dataclass(frozen=True)
class SolverInput:
    """A run's K updates, what a solver's columns are computed from (``schedule.solver_input``).

    ``abar_t`` [K]: the cumulative product at each update's timestep; ``abar_s`` [K]: at the next
    update's (1 after the last); float64, in sampling order. ``respaced``: the respaced schedule
    (a ``schedule.Schedule``, read through ``RespacedTables``), whose float32 torch tables are in
    table order (index ``j`` is update ``K - 1 - j``; the official ops run in that order,
    ``ordered`` puts a table in sampling order). ``eta``: the stochasticity
    of every solver but ddpm (SA-Solver's tau^2) at the updates whose timestep is at least
    ``eta_min_t`` (below it: 0, deterministic; ``etas`` per update); ``var_type``: ddpm's variance
    (both checked)."""

    abar_t: np.ndarray
    abar_s: np.ndarray
    respaced: RespacedTables
    eta: float = 1.0
    var_type: str = "fixedsmall"
    eta_min_t: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", check_eta(self.eta))
        check_var_type(self.var_type)

    @property
    def num_updates(self) -> int:
        return len(self.abar_t)

    @property
    def etas(self) -> np.ndarray:
        """The eta of each update (float64, sampling order): ``eta`` where the timestep is at least
        ``eta_min_t``, else 0 (the noise scale as a function of t: SA-Solver's tau(t) window)."""
        return np.where(self.ordered(self.respaced.timesteps) >= self.eta_min_t, self.eta, 0.0)

    @staticmethod
    def ordered(table: torch.Tensor) -> np.ndarray:
        """A float32 table of the respaced schedule (table order) in sampling order."""
        return table[torch.arange(len(table) - 1, -1, -1)].numpy().astype(np.float32)


MAX_HISTORY = 3  # the earlier data predictions a solver may read (the core's kMaxHistory)


@dataclass(frozen=True)
class SolverStep:
    """The coefficients of every update (sampling order), float64: ``c_y``, ``c_e``, ``noise`` of
    length K and ``c_p`` [K] or [K, m] (m <= MAX_HISTORY: the weights of D_{k-1}, ..):
    ``y' = c_y * y + c_e * eps_hat + sum_m c_p[:, m] * D_{k-1-m} + noise * z``."""

    c_y: np.ndarray
    c_e: np.ndarray
    c_p: np.ndarray
    noise: np.ndarray


@dataclass(frozen=True)
class StepColumns:
    """A solver's step as the sampler's table columns (sampling order; cast to float32 in the table):
    ``inv_sqrt_alpha * (y - eps_coef * eps) - guidance_w * G + prev_coef * D_{k-1} + prev_coef2 *
    D_{k-2} + prev_coef3 * D_{k-3} + sigma * z`` and, for multistep solvers, the data prediction
    ``D = x0_y * y - x0_eps * eps - x0_guidance * G`` that the next updates read. ``lowpass_w``:
    the guidance weight of the update's first-order step (the weight a gradient constant over the
    updates gets from all of its terms: the stable low-pass pull's strength, ``lowpass.pull``)."""

    inv_sqrt_alpha: np.ndarray
    eps_coef: np.ndarray
    guidance_w: np.ndarray
    sigma: np.ndarray
    prev_coef: np.ndarray
    x0_y: np.ndarray
    x0_eps: np.ndarray
    x0_guidance: np.ndarray
    prev_coef2: np.ndarray
    prev_coef3: np.ndarray
    lowpass_w: np.ndarray


@dataclass(frozen=True)
class Solver:
    name: str  # one of choices.SOLVER_NAMES, whose one-line help is choices.SOLVER_HELP[name]
    history: int  # the earlier data predictions it reads (SamplerConfig.history; 0: a single-step solver)
    # The solver's function: its linear step (SolverStep, made columns by step_columns) or its columns as they are.
    step: Callable[[SolverInput], "SolverStep | StepColumns"]

    def columns(self, updates: SolverInput) -> StepColumns:
        """This solver's columns of the step table for ``updates``."""
        step = self.step(updates)
        return step if isinstance(step, StepColumns) else step_columns(step, updates.abar_t, self.history)

    @property
    def help(self) -> str:
        return SOLVER_HELP[self.name]


def _ddpm(updates: SolverInput) -> StepColumns:
    """The official update: the same float32 ops as the official ``egsde_sample``, in table order."""
    s = updates.respaced
    if updates.var_type == "fixedsmall":
        posterior_variance = s.betas * (1.0 - s.abar_prev) / (1.0 - s.abar)
        logvar = posterior_variance.clamp(min=1e-20).log()
    else:
        logvar = s.betas.log()
    sigma = torch.exp(0.5 * logvar)
    sigma[0] = 0.0  # the update at table index 0 (the last one) adds no noise
    zeros = np.zeros(updates.num_updates, dtype=np.float32)
    ordered = updates.ordered
    guidance_w = ordered(s.betas / torch.sqrt(s.alphas))
    return StepColumns(inv_sqrt_alpha=ordered(1 / torch.sqrt(s.alphas)),
                       eps_coef=ordered(s.betas / torch.sqrt(1 - s.abar)), guidance_w=guidance_w,
                       sigma=ordered(sigma), prev_coef=zeros, x0_y=zeros, x0_eps=zeros, x0_guidance=zeros,
                       prev_coef2=zeros, prev_coef3=zeros, lowpass_w=guidance_w)


def _ddim(updates: SolverInput) -> SolverStep:
    abar_t, abar_s, eta = updates.abar_t, updates.abar_s, updates.etas
    alpha_t, sigma_t, alpha_s = np.sqrt(abar_t), np.sqrt(1 - abar_t), np.sqrt(abar_s)
    noise = eta * np.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
    direction = np.sqrt(np.maximum(1 - abar_s - noise**2, 0.0))
    return SolverStep(c_y=alpha_s / alpha_t, c_e=direction - alpha_s * sigma_t / alpha_t, c_p=np.zeros_like(abar_t),
                      noise=noise)


def _dpmpp_2m_sde(updates: SolverInput) -> SolverStep:
    abar_t, abar_s, etas = updates.abar_t, updates.abar_s, updates.etas
    K = len(abar_t)
    alpha_t, sigma_t = np.sqrt(abar_t), np.sqrt(1 - abar_t)
    c_y, c_e, c_p, noise = (np.zeros(K) for _ in range(4))
    h_prev = None
    for k in range(K):
        if abar_s[k] >= 1.0:  # the last update, to t = 0: the data prediction itself (first order)
            c_y[k], c_e[k] = 1 / alpha_t[k], -sigma_t[k] / alpha_t[k]
            continue
        alpha_s, sigma_s = np.sqrt(abar_s[k]), np.sqrt(1 - abar_s[k])
        eta = etas[k]
        h = np.log(alpha_s / sigma_s) - np.log(alpha_t[k] / sigma_t[k])  # the step in log-SNR / 2
        keep = sigma_s / sigma_t[k] * np.exp(-eta * h)  # y' = keep*y + B*D + C*(D - D_prev) + noise*z
        B = alpha_s * -np.expm1(-(1 + eta) * h)
        C = 0.0 if h_prev is None else 0.5 * B * h / h_prev  # the midpoint correction, r = h_prev / h
        c_y[k] = keep + (B + C) / alpha_t[k]
        c_e[k] = -(B + C) * sigma_t[k] / alpha_t[k]
        c_p[k] = -C
        noise[k] = sigma_s * np.sqrt(-np.expm1(-2 * eta * h))
        h_prev = h
    return SolverStep(c_y=c_y, c_e=c_e, c_p=c_p, noise=noise)


_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(16)


def exponential_lagrange_weights(nodes: np.ndarray, lo: float, hi: float, tau2: float) -> np.ndarray:
    """``(1 + tau2) * int_lo^hi exp(-(1 + tau2) (hi - l)) ell_j(l) dl`` for the Lagrange basis
    ``ell_j`` of ``nodes`` (log-SNR / 2 values): SA-Solver's weights of the data predictions at
    ``nodes`` over the step from ``lo`` to ``hi`` (Gauss-Legendre, 16 points)."""
    kappa = 1.0 + tau2
    x = 0.5 * (hi - lo) * _GAUSS_NODES + 0.5 * (hi + lo)
    w = 0.5 * (hi - lo) * _GAUSS_WEIGHTS * kappa * np.exp(-kappa * (hi - x))
    basis = [np.prod([np.ones_like(x)] + [(x - other) / (node - other) for other in np.delete(nodes, j)], axis=0)
             for j, node in enumerate(nodes)]
    return np.array([w @ ell for ell in basis])


def _sa_solver(updates: SolverInput, order: int) -> SolverStep:
    """SA-Solver with predictor and corrector of ``order``, tau^2 = eta (see the module docstring):
    update k corrects the point it was given, ``x_k^c = y_k + alpha_k (sum_j c_j D_{k-j} -
    sum_j b'_j D_{k-1-j})`` (the corrector's quadrature of the last step minus its predictor's),
    then predicts ``y' = a x_k^c + alpha_s sum_j b_j D_{k-j} + noise z``."""
    abar_t, abar_s, tau2 = updates.abar_t, updates.abar_s, updates.etas  # tau^2 of each step
    K = len(abar_t)
    lam = 0.5 * np.log(abar_t / (1 - abar_t))  # log-SNR / 2 of each update
    alpha_t, sigma_t = np.sqrt(abar_t), np.sqrt(1 - abar_t)
    c_y, c_e, noise, c_p = np.zeros(K), np.zeros(K), np.zeros(K), np.zeros((K, order))
    last_predictor = None  # the previous update's predictor weights, on D_{k-1}, D_{k-2}, ..
    for k in range(K):
        weights = np.zeros(order + 1)  # on D_k, D_{k-1}, .., D_{k-order}
        if abar_s[k] >= 1.0:  # the last update, to t = 0: the data prediction itself
            keep = 0.0
            weights[0] = 1.0
        else:
            lam_s = 0.5 * np.log(abar_s[k] / (1 - abar_s[k]))
            h = lam_s - lam[k]
            keep = np.sqrt((1 - abar_s[k]) / (1 - abar_t[k])) * np.exp(-tau2[k] * h)
            nodes = lam[k - np.arange(min(order, k + 1))]  # of D_k, D_{k-1}, ..: what both interpolate
            n = len(nodes)
            if last_predictor is not None:  # the corrector of the step to y_k (that step's tau^2)
                corrector = exponential_lagrange_weights(nodes, lam[k - 1], lam[k], tau2[k - 1])
                weights[:n] += keep * alpha_t[k] * corrector
                weights[1:1 + len(last_predictor)] -= keep * alpha_t[k] * last_predictor
            last_predictor = exponential_lagrange_weights(nodes, lam[k], lam_s, tau2[k])
            weights[:n] += np.sqrt(abar_s[k]) * last_predictor
            noise[k] = np.sqrt(1 - abar_s[k]) * np.sqrt(-np.expm1(-2 * tau2[k] * h))
        c_y[k] = keep + weights[0] / alpha_t[k]
        c_e[k] = -weights[0] * sigma_t[k] / alpha_t[k]
        c_p[k] = weights[1:]
    return SolverStep(c_y=c_y, c_e=c_e, c_p=c_p, noise=noise)


def _sa_solver_entry(order: int) -> Solver:
    return Solver(f"sa-solver-{order}", history=order, step=lambda updates: _sa_solver(updates, order))


SOLVERS: dict[str, Solver] = {s.name: s for s in (
    Solver("ddpm", history=0, step=_ddpm),
    Solver("ddim", history=0, step=_ddim),
    Solver("dpmpp-2m-sde", history=1, step=_dpmpp_2m_sde),
    *(_sa_solver_entry(order) for order in (1, 2, 3)),
)}
if tuple(SOLVERS) != SOLVER_NAMES:  # the settings offer choices.SOLVER_NAMES: this table must implement exactly them
    raise ImportError(f"solvers.SOLVERS {list(SOLVERS)} differ from choices.SOLVER_NAMES {list(SOLVER_NAMES)}")


def get_solver(name: str) -> Solver:
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver {name!r}; expected one of {list(SOLVERS)}")
    return SOLVERS[name]


def step_columns(step: SolverStep, abar_t: np.ndarray, history: int) -> StepColumns:
    """The table columns of a solver's linear ``step`` at the cumulative products ``abar_t``
    (``history``: the earlier data predictions the solver reads)."""
    alpha_t, sigma_t = np.sqrt(abar_t), np.sqrt(1 - abar_t)
    zeros = np.zeros_like(abar_t)
    x0_guidance = (1 - abar_t) / alpha_t  # D's weight on G: D = (y - sigma_t eps_hat) / alpha_t
    x0 = (1 / alpha_t, sigma_t / alpha_t, x0_guidance) if history else (zeros,) * 3
    prev = np.zeros((len(abar_t), MAX_HISTORY))
    c_p = step.c_p.reshape(len(abar_t), -1)
    prev[:, :c_p.shape[1]] = c_p
    guidance_w = -step.c_e * sigma_t
    return StepColumns(inv_sqrt_alpha=step.c_y, eps_coef=-step.c_e / step.c_y, guidance_w=guidance_w,
                       sigma=step.noise, prev_coef=prev[:, 0], x0_y=x0[0], x0_eps=x0[1], x0_guidance=x0[2],
                       prev_coef2=prev[:, 1], prev_coef3=prev[:, 2],
                       lowpass_w=guidance_w + prev.sum(axis=1) * x0_guidance)
