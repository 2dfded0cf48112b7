"""Diffusion schedule tables, computed once and apart from the step.

The tables follow the official EGSDE code exactly: betas are built in float64, cast to
float32, and every derived table (alphas, abar, and from them ddpm's posterior variances, in
``solvers``) is computed from the float32 betas with float32 torch ops, in the same order as the
original. (torch's float32
``cumprod`` accumulates in double and rounds each entry; the C++ twin does the same.)

``Schedule`` holds the per-timestep tables; ``Schedule.respace`` keeps a subset of timesteps
(fewer sampling steps, placed by ``kept_timesteps``); ``solver_input`` gives a run's updates over
a schedule (the one place a run's schedule is respaced), and ``StepCoefficients`` turns them into
the plain per-step scalars that a sampling loop needs (the loop in Python, C++ or CUDA reads
nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from .choices import SPACINGS
from .settings import EGSDESettings
from .solvers import SolverInput, StepColumns, get_solver

BETA_SCHEDULES = ("linear", "quad", "const", "jsd", "sigmoid")
MAX_TIMESTEPS = 100_000  # a schedule's length (the official one has 1000; M <= settings.MAX_M of them are used)
KARRAS_RHO = 7.0  # Karras et al. (2022), eq. 5


def beta_schedule(
    kind: str = "linear",
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_timesteps: int = 1000,
) -> np.ndarray:
    """Return the betas of a named schedule as a float64 array of length ``num_timesteps``, each
    in (0, 1]; a ``ConfigError`` for an unknown kind, a length outside 1..``MAX_TIMESTEPS`` or
    parameters that give betas outside (0, 1]."""
    if not 1 <= num_timesteps <= MAX_TIMESTEPS:
        raise ConfigError(f"num_timesteps must be in 1..{MAX_TIMESTEPS}, got {num_timesteps}")
    n = num_timesteps
    if kind == "linear":
        betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
    elif kind == "quad":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float64) ** 2
    elif kind == "const":
        betas = beta_end * np.ones(n, dtype=np.float64)
    elif kind == "jsd":  # 1/T, 1/(T-1), ..., 1
        betas = 1.0 / np.linspace(n, 1, n, dtype=np.float64)
    elif kind == "sigmoid":
        s = 1.0 / (np.exp(-np.linspace(-6, 6, n)) + 1.0)
        betas = s * (beta_end - beta_start) + beta_start
    else:
        raise ConfigError(f"unknown beta schedule {kind!r}; expected one of {BETA_SCHEDULES}")
    if not np.all((betas > 0) & (betas <= 1)):
        raise ConfigError(f"the {kind} schedule from beta_start={beta_start} to beta_end={beta_end} has betas "
                          "outside (0, 1]")
    return betas


# The linear schedule of DDPM and guided-diffusion (what every supported network was trained with).
DEFAULT_SCHEDULE = {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_timesteps": 1000}


@dataclass(frozen=True)
class Schedule:
    """Per-timestep tables of a VP diffusion.

    ``timesteps[j]`` is the model's timestep input for table index ``j`` (the identity for a
    full schedule, the kept timesteps for a respaced one). All tables are float32 tensors.
    """

    betas: torch.Tensor
    timesteps: torch.Tensor
    betas_f64: np.ndarray = field(repr=False, default=None)  # the exact betas, for respacing
    spec: dict | None = None  # kind, beta_start, beta_end, num_timesteps when made by create()
    alphas: torch.Tensor = field(init=False, repr=False)
    abar: torch.Tensor = field(init=False, repr=False)
    abar_prev: torch.Tensor = field(init=False, repr=False)

    @classmethod
    def create(
        cls,
        kind: str = DEFAULT_SCHEDULE["kind"],
        *,
        beta_start: float = DEFAULT_SCHEDULE["beta_start"],
        beta_end: float = DEFAULT_SCHEDULE["beta_end"],
        num_timesteps: int = DEFAULT_SCHEDULE["num_timesteps"],
    ) -> "Schedule":
        """The schedule of a spec (``DEFAULT_SCHEDULE`` unless given: the one the networks this
        project supports were trained with)."""
        betas64 = beta_schedule(
            kind, beta_start=beta_start, beta_end=beta_end, num_timesteps=num_timesteps
        )
        spec = dict(kind=kind, beta_start=beta_start, beta_end=beta_end, num_timesteps=num_timesteps)
        return cls(
            betas=torch.from_numpy(betas64).float(),
            timesteps=torch.arange(num_timesteps, dtype=torch.float32),
            betas_f64=betas64,
            spec=spec,
        )

    @classmethod
    def from_betas(cls, betas64: np.ndarray, *, timesteps: np.ndarray | None = None) -> "Schedule":
        betas64 = np.asarray(betas64, dtype=np.float64)
        if timesteps is None:
            timesteps = np.arange(len(betas64))
        return cls(
            betas=torch.from_numpy(betas64).float(),
            timesteps=torch.as_tensor(np.asarray(timesteps), dtype=torch.float32),
            betas_f64=betas64,
        )

    def __post_init__(self) -> None:
        betas = self.betas
        alphas = 1.0 - betas
        abar = alphas.cumprod(dim=0)
        abar_prev = torch.cat([torch.ones(1), abar[:-1]], dim=0)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "abar", abar)
        object.__setattr__(self, "abar_prev", abar_prev)

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def respace(self, M: int, steps: int | None, spacing: str = "uniform") -> "Schedule":
        """The schedule restricted to ``steps`` timesteps of ``0 .. M-1``, placed by ``spacing``
        (``kept_timesteps``).

        ``M-1`` and ``0`` are always kept, so the start point of a translation is unchanged.
        The kept timesteps get new betas ``1 - abar[t_j] / abar[t_{j-1}]`` (as guided-diffusion's
        respacing), computed in float64 from the exact betas. ``steps`` of None or ``M`` returns
        the first ``M`` entries of this schedule unchanged (whatever the spacing).
        """
        check_start_time(M, self.num_timesteps)
        check_spacing(spacing)
        if steps is None or steps == M:
            betas64 = self.betas_f64[:M]
            return Schedule.from_betas(betas64, timesteps=self.timesteps.numpy()[:M])
        abar64 = np.cumprod(1.0 - self.betas_f64)
        kept = kept_timesteps(abar64, M, steps, spacing)[::-1]  # increasing, as the tables
        prev = 1.0
        new_betas = []
        for t in kept:
            new_betas.append(1.0 - abar64[t] / prev)
            prev = abar64[t]
        return Schedule.from_betas(np.array(new_betas), timesteps=self.timesteps.numpy()[kept])


def check_start_time(M: int, num_timesteps: int) -> None:
    if not 1 <= M <= num_timesteps:
        raise ConfigError(f"M (the start time) must be in 1..{num_timesteps}, got {M}")


def check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise ConfigError(f"spacing must be one of {list(SPACINGS)}, got {spacing!r}")


def kept_timesteps(abar: np.ndarray, M: int, steps: int | None, spacing: str = "uniform") -> np.ndarray:
    """The timesteps that ``steps`` updates from the start time ``M`` run at, in sampling order:
    strictly decreasing int64 timesteps, the first ``M-1`` and the last 0 (one update: ``[M-1]``;
    ``steps`` of None or ``M``: all of ``M-1 .. 0``, whatever the spacing).

    ``abar``: the float64 cumulative products of the schedule (at least ``M`` of them). ``spacing``:

    - ``uniform``: evenly in t, rounded (guided-diffusion's respacing; the official code's),
    - ``logsnr``: evenly in the log-SNR ``log(abar / (1 - abar))`` from t = M-1 to t = 0,
    - ``karras``: Karras et al. (2022)'s rho = 7 steps in ``sigma = sqrt((1 - abar) / abar)``
      from sigma(M-1) to sigma(0): denser near t = 0.

    ``logsnr`` and ``karras`` take, for each target noise level, the timestep nearest to it in
    log-SNR (k-diffusion's quantisation: nearest in log sigma). Where targets crowd (near t = 0
    with ``karras``, or ``steps`` close to ``M``) two may meet at one timestep; in sampling order,
    a timestep not below the previous kept one moves to the next free one below it, and one that
    would leave fewer timesteps than updates to come moves up to leave one each. The kept
    timesteps are thus distinct and in order, each as near its target as these two rules allow.
    """
    check_start_time(M, len(abar))
    check_spacing(spacing)
    if steps is None or steps == M:
        return np.arange(M - 1, -1, -1, dtype=np.int64)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= M:
        raise ConfigError(f"steps must be in 1..M (M={M}), got {steps!r}")
    if steps == 1:
        return np.array([M - 1], dtype=np.int64)
    if spacing == "uniform":
        return np.round(np.arange(steps) * (M - 1) / (steps - 1)).astype(np.int64)[::-1]
    log_snr = _log_snr(abar[:M], spacing)  # decreasing in t
    if spacing == "logsnr":
        targets = np.linspace(log_snr[M - 1], log_snr[0], steps)
    else:  # karras: sigma = exp(-log_snr / 2)
        inv_max, inv_min = np.exp(-log_snr[[M - 1, 0]] / (2 * KARRAS_RHO))  # sigma ** (1 / rho)
        sigmas = (inv_max + np.linspace(0.0, 1.0, steps) * (inv_min - inv_max)) ** KARRAS_RHO
        targets = -2.0 * np.log(sigmas)
    nearest = _nearest_in(log_snr, targets)
    nearest[0], nearest[-1] = M - 1, 0
    # t_k + k is non-increasing for strictly decreasing t_k; at least steps - 1 leaves room for the rest
    k = np.arange(steps)
    return np.maximum(np.minimum.accumulate(nearest + k), steps - 1) - k


def _log_snr(abar: np.ndarray, spacing: str) -> np.ndarray:
    """``log(abar / (1 - abar))`` per timestep; a ``ConfigError`` where it is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_snr = np.log(abar) - np.log1p(-abar)
    bad = np.flatnonzero(~np.isfinite(log_snr))
    if bad.size:
        raise ConfigError(f"spacing={spacing!r} needs 0 < abar < 1 at every timestep below M, but abar at t={bad[0]} "
                          f"is {abar[bad[0]]!r}: use spacing='uniform' or a smaller M")
    return log_snr


def _nearest_in(log_snr: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the timestep whose log-SNR (non-increasing in t) is nearest (ties: the larger t)."""
    ascending = log_snr[::-1]
    i = np.clip(np.searchsorted(ascending, targets), 1, len(ascending) - 1)
    j = np.where(targets - ascending[i - 1] <= ascending[i] - targets, i - 1, i)
    return (len(log_snr) - 1 - j).astype(np.int64)


def solver_input(schedule: Schedule, M: int, steps: int | None = None, *, spacing: str = "uniform",
                 eta: float = 1.0, var_type: str = "fixedsmall", eta_min_t: int = 0) -> SolverInput:
    """The updates of a run over ``schedule``: ``steps`` updates from the start time ``M``, placed
    by ``spacing`` (``Schedule.respace``), with a solver's ``eta`` (at timesteps >= ``eta_min_t``)
    and ``var_type``."""
    respaced = schedule.respace(M, steps, spacing)
    abar = np.cumprod(1.0 - respaced.betas_f64)[::-1]  # float64, sampling order
    return SolverInput(abar_t=abar, abar_s=np.append(abar[1:], 1.0), respaced=respaced, eta=eta, var_type=var_type,
                       eta_min_t=eta_min_t)


def run_input(schedule: Schedule | None, settings: EGSDESettings) -> SolverInput:
    """The updates of a run with ``settings`` (M, steps, spacing, eta, eta_min_t, var_type) over ``schedule``
    (None: the linear 1e-4..0.02 schedule of 1000 timesteps): the one place a run's schedule is
    made, for the oracle and the native loop alike (``StepCoefficients.from_settings``)."""
    return solver_input(schedule or Schedule.create(), settings.M, settings.steps, spacing=settings.spacing,
                        eta=settings.eta, var_type=settings.var_type, eta_min_t=settings.eta_min_t)


@dataclass(frozen=True)
class StepCoefficients(StepColumns):
    """Plain per-update scalars, in sampling order (the first row is the start time): the step
    table, the solver's columns (``solvers.StepColumns``) and then the schedule's, whose columns
    (these fields, in this order) are the native core's (``egsde_rt._core.STEP_TABLE_COLUMNS``).

    For update ``k`` (0-based) at model timestep ``t[k]``, with ``G = ls * grad_s + li * grad_i``:
      ``mean = inv_sqrt_alpha[k] * (y - eps_coef[k] * eps)``
      ``mean -= guidance_w[k] * G``
      ``mean += prev_coef[k] * D_{k-1} + prev_coef2[k] * D_{k-2} + prev_coef3[k] * D_{k-3}``
      (multistep solvers: the earlier updates' D)
      ``y = mean + sigma[k] * z``  (``sigma`` is 0 on the last update: the mask at t = 0)
    and, for multistep solvers, ``D = x0_y[k] * y - x0_eps[k] * eps - x0_guidance[k] * G`` (the
    update's data prediction, read by the next ones); ``lowpass_w[k]`` is the guidance weight of
    the update's first-order step (the stable low-pass pull's strength); the perturbed source is
    ``sqrt_abar[k] * x0 + sqrt_one_minus_abar[k] * e``. The start point uses row 0's
    ``sqrt_abar`` / ``sqrt_one_minus_abar``. ``t`` and the perturbed source's mix are the
    schedule's (the official float32 ops); the other columns are the solver's
    (``egsde_rt.method.solvers``: ``ddpm``, the default, is the official update).
    All arrays are float32 numpy arrays of length K (the number of updates).
    """

    t: np.ndarray
    sqrt_abar: np.ndarray
    sqrt_one_minus_abar: np.ndarray

    @classmethod
    def from_input(cls, updates: SolverInput, solver: str) -> "StepCoefficients":
        """The table of ``solver`` (a name in ``solvers.SOLVERS``) for a run's ``updates``."""
        columns = get_solver(solver).columns(updates)
        s, ordered = updates.respaced, updates.ordered
        return cls(t=ordered(s.timesteps), sqrt_abar=ordered(s.abar.sqrt()),
                   sqrt_one_minus_abar=ordered((1.0 - s.abar).sqrt()),
                   **{name: value.astype(np.float32) for name, value in vars(columns).items()})

    @classmethod
    def from_settings(cls, schedule: Schedule | None, settings: EGSDESettings) -> "StepCoefficients":
        """The table of a run with ``settings`` over ``schedule`` (``run_input``)."""
        return cls.from_input(run_input(schedule, settings), settings.solver)

    @classmethod
    def from_schedule(cls, schedule: Schedule, M: int, steps: int | None = None, *, solver: str = "ddpm",
                      eta: float = 1.0, spacing: str = "uniform", var_type: str = "fixedsmall") -> "StepCoefficients":
        """The table of ``solver`` for ``steps`` updates from ``M`` over ``schedule`` (``solver_input``)."""
        return cls.from_input(solver_input(schedule, M, steps, spacing=spacing, eta=eta, var_type=var_type), solver)

    @property
    def num_updates(self) -> int:
        return int(self.t.shape[0])
