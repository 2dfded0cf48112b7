"""The eager reference EGSDE sampler: plain PyTorch, the operations of the official code.

Every update does what the official ``egsde_sample`` does: the score network under no_grad,
the DDPM mean, autograd through the DSE for the domain-specific gradient, autograd through the
low-pass filter for the domain-independent gradient, and the masked noise. It is the parity
oracle of the native sampler and the engine, and the baseline they are profiled against.

The other solvers (``settings.solver``) are written here in their textbook form, from the
cumulative products of the timesteps (the guided eps, the data prediction, then the DDIM,
SDE-DPM-Solver++(2M) or SA-Solver step), independently of the step-table columns that the native
loop runs (``egsde_rt.method.solvers``): the tests hold the two together.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import torch

from .errors import ConfigError
from .images import check_source, max_pixels_for
from .method.lowpass import LowPassFilter
from .method.noise import STREAM_PERTURB, STREAM_SAMPLING, InjectedNoise, PhiloxNoise, Seeds, seed_array
from .method.schedule import Schedule, StepCoefficients, run_input
from .models.network_fns import dse_gradient, input_gradient, score_function, tf32_mode
from .method.settings import EGSDESettings
from .method.similarity import lowpass_energy

StepCallback = Callable[[int, int, torch.Tensor], None]
# guided(g, y, t, x_t, eps_hat): update g's state y, its timesteps t, its perturbed source x_t and
# the teacher's guided eps (the distillation target, ``models.student``)
GuidedHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


def ddim_step(y, eps_hat, x0_pred, abar_t: float, abar_s: float, eta: float, z, previous):
    """DDIM (Song et al. 2021, eq. 12) with eta; ``previous`` is unused (single step)."""
    sig = eta * math.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
    direction = math.sqrt(max(1 - abar_s - sig**2, 0.0))
    return math.sqrt(abar_s) * x0_pred + direction * eps_hat + sig * z, None


def dpmpp_2m_sde_step(y, eps_hat, x0_pred, abar_t: float, abar_s: float, eta: float, z, previous):
    """SDE-DPM-Solver++(2M), midpoint form (k-diffusion's ``sample_dpmpp_2m_sde``) in VP terms;
    ``previous`` is (the previous data prediction, its step h) or None (first order)."""
    if abar_s >= 1.0:  # to t = 0: the data prediction
        return x0_pred, None
    alpha_t, sigma_t, alpha_s, sigma_s = (math.sqrt(abar_t), math.sqrt(1 - abar_t), math.sqrt(abar_s),
                                          math.sqrt(1 - abar_s))
    h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)
    out = sigma_s / sigma_t * math.exp(-eta * h) * y + alpha_s * -math.expm1(-(1 + eta) * h) * x0_pred
    if previous is not None:
        x0_prev, h_prev = previous
        out = out + 0.5 * alpha_s * -math.expm1(-(1 + eta) * h) * (h / h_prev) * (x0_pred - x0_prev)
    out = out + sigma_s * math.sqrt(-math.expm1(-2 * eta * h)) * z
    return out, (x0_pred, h)


def _exponential_lagrange_integrals(nodes: list, lo: float, hi: float, tau2: float) -> list:
    """``(1 + tau2) * int_lo^hi exp(-(1 + tau2)(hi - l)) ell_j(l) dl`` for the Lagrange basis of
    ``nodes``, in closed form: with ``u = l - hi``, ``J_n = int_{-h}^0 exp(k u) u^n du`` by parts."""
    kappa, h = 1.0 + tau2, hi - lo
    J = [-math.expm1(-kappa * h) / kappa]
    for n in range(1, len(nodes)):
        J.append(-((-h) ** n) * math.exp(-kappa * h) / kappa - n / kappa * J[-1])
    shifted = [node - hi for node in nodes]
    integrals = []
    for j, uj in enumerate(shifted):
        poly = [1.0]  # ell_j(u) = prod_{m != j} (u - u_m) / (u_j - u_m), lowest power first
        for m, um in enumerate(shifted):
            if m != j:
                poly = [(poly[i - 1] if i else 0.0) - um * (poly[i] if i < len(poly) else 0.0)
                        for i in range(len(poly) + 1)]
                poly = [c / (uj - um) for c in poly]
        integrals.append(kappa * sum(c * J[n] for n, c in enumerate(poly)))
    return integrals


def sa_solver_step(order: int):
    """SA-Solver (Xue et al. 2023) with predictor and corrector of ``order`` and tau^2 = eta, in
    its textbook form: the corrected point ``x_k^c = a x_{k-1}^c + alpha_k sum_j c_j D_{k-j} +
    noise z_{k-1}`` (the last step again, with the data prediction at its end and the same draw),
    then the predictor ``y' = a x_k^c + alpha_s sum_j b_j D_{k-j} + noise z`` (the corrector with
    the last step's tau^2, the predictor with this one's: ``eta``). Whatever moved
    ``y`` after the last step (the stable low-pass pull, ILVR) moves the corrected point too.
    ``previous``: the last step's state, or None (the first update: no corrector)."""

    def step(y, eps_hat, x0_pred, abar_t: float, abar_s: float, eta: float, z, previous):
        alpha_t, sigma_t = math.sqrt(abar_t), math.sqrt(1 - abar_t)
        lams = [0.5 * math.log(abar_t / (1 - abar_t))] + (previous["lams"] if previous else [])
        predictions = [x0_pred] + (previous["predictions"] if previous else [])
        nodes = lams[:order]  # the log-SNR / 2 of the data predictions both interpolate, newest first
        corrected = y
        if previous is not None:
            weights = _exponential_lagrange_integrals(nodes, lams[1], lams[0], previous["eta"])
            corrected = previous["keep"] * previous["corrected"] + previous["noise"] * previous["z"] + (
                y - previous["out"])
            for w, d in zip(weights, predictions):
                corrected = corrected + alpha_t * w * d
        if abar_s >= 1.0:  # to t = 0: the data prediction
            return x0_pred, None
        alpha_s, sigma_s = math.sqrt(abar_s), math.sqrt(1 - abar_s)
        lam_s = 0.5 * math.log(abar_s / (1 - abar_s))
        h = lam_s - lams[0]
        keep, noise = sigma_s / sigma_t * math.exp(-eta * h), sigma_s * math.sqrt(-math.expm1(-2 * eta * h))
        out = keep * corrected + noise * z
        for w, d in zip(_exponential_lagrange_integrals(nodes, lams[0], lam_s, eta), predictions):
            out = out + alpha_s * w * d
        return out, {"lams": lams[:order], "predictions": predictions[:order], "corrected": corrected,
                     "keep": keep, "noise": noise, "z": z, "out": out, "eta": eta}
    return step


# The oracle's step of each solver but ddpm (whose update is the official code's, inline below).
SOLVER_STEPS = {"ddim": ddim_step, "dpmpp-2m-sde": dpmpp_2m_sde_step,
                **{f"sa-solver-{order}": sa_solver_step(order) for order in (1, 2, 3)}}


class Untimed:
    """The default ``timer``: ``step()`` at the start of each update and ``phase(name)`` around
    each phase of it (score, dse_grad, lowpass_grad, update_noise); ``egsde-rt bench`` passes a
    timer that records them."""

    def step(self) -> None:
        pass

    def phase(self, name: str):
        return nullcontext()


def translate(x0: torch.Tensor, score_model: torch.nn.Module, dse: torch.nn.Module,
              settings: EGSDESettings, *, seed: Seeds = 0, noise: torch.Tensor | None = None,
              perturb_noise: torch.Tensor | None = None, schedule: Schedule | None = None,
              class_label: int | None = None, callback: StepCallback | None = None,
              timer: Untimed | None = None, guided: GuidedHook | None = None,
              student: torch.nn.Module | None = None) -> torch.Tensor:
    """Translate ``x0`` ([B, 3, H, W] in [-1, 1]) with ``settings``; the unclamped result tensor.

    ``noise``: the injected draws [R*(K+1), B, 3, H, W] (K updates, R repeats; ``noise[0]`` is
    e, ``noise[k]`` the fresh noise of update k), as the reference goldens define; when None,
    noise comes from the Philox contract (``egsde_rt.method.noise``) with ``seed`` (one integer for every
    image, or a list with one per image). ``perturb_noise``
    [R*K, ...] serves ``perturb="fresh"`` with injected noise. ``schedule`` defaults to the
    linear 1e-4..0.02 schedule of 1000 steps. ``callback(k, K, y)``
    is called after each update; ``timer`` times the phases of each update (see ``Untimed``).
    ``guided(g, y, t, x_t, eps_hat)`` is called before each update g with its state and the guided
    eps ``eps + sqrt(1 - abar_t) (ls grad E_s + li grad E_i)`` (the low-pass term only in its
    gradient form): an update with ``eps_hat`` and no guidance is this update (for ddpm, the
    official one exactly), so it is what a distilled student learns (``models.student``).
    ``student``: a distilled student (``student(y, t, x_t)``, the guided eps) in place of
    ``score_model`` and the experts (the settings' ls 0, li 0 unless the low-pass form is stable).
    """
    check_source(x0)
    if student is not None and (settings.ls or (settings.li and settings.lowpass == "gradient")):
        raise ConfigError("a student folds the domain-specific expert (and the low-pass expert's gradient form) "
                          "into its eps: run it with ls=0, and li=0 unless lowpass is implicit or exact")
    x0 = x0.float()
    updates = run_input(schedule, settings)  # the run's schedule, as the native loop's (float64 abar in sampling order)
    coefs = StepCoefficients.from_input(updates, settings.solver)  # t, the source's mix; ddpm: the official tables
    solver_step = SOLVER_STEPS.get(settings.solver)
    K, R, shape, device = coefs.num_updates, settings.repeats, tuple(x0.shape), x0.device
    if noise is not None:
        source = InjectedNoise(noise, perturb_noise)
        source.check(STREAM_SAMPLING, R * (K + 1), shape)
        if settings.perturb == "fresh":
            source.check(STREAM_PERTURB, R * K, shape)
    else:
        source = PhiloxNoise(seed_array(seed, shape[0]))
    eps_fn = score_function(score_model, settings.score_kind, class_label)
    lowpass = LowPassFilter(shape[2], shape[3], settings.down_N, device=device)
    timer = timer or Untimed()
    stable = settings.lowpass != "gradient"  # the low-pass expert's pull after the step (lowpass.LowPassFilter.pull)
    etas = updates.etas  # the noise scale of each update (eta, 0 below eta_min_t)

    def scalar(table, k):
        return torch.tensor(table[k], dtype=torch.float32, device=device)

    y = x0
    for r in range(R):
        e = source.draw(STREAM_SAMPLING, r * (K + 1), shape, device)
        y = scalar(coefs.sqrt_abar, 0) * y + scalar(coefs.sqrt_one_minus_abar, 0) * e
        previous = None  # a multistep solver's memory, per repeat
        for k in range(K):
            timer.step()
            with timer.phase("update_noise"):  # the perturbed source counts with the noise
                t = torch.full((shape[0],), float(coefs.t[k]), device=device)
                e_k = e if settings.perturb == "shared" else source.draw(STREAM_PERTURB, r * K + k, shape, device)
                x_t = scalar(coefs.sqrt_abar, k) * x0 + scalar(coefs.sqrt_one_minus_abar, k) * e_k
            with timer.phase("score"):
                if student is None:
                    eps = eps_fn(y, t)
                else:
                    with torch.no_grad():
                        eps = student(y, t, x_t)
            if settings.ls:
                with timer.phase("dse_grad"):
                    grad_s = dse_gradient(dse, settings.s1, y, x_t, t)
            if settings.li and not stable:
                with timer.phase("lowpass_grad"):
                    low_x = lowpass.apply(x_t)
                    grad_i = input_gradient(lambda v: lowpass_energy(settings.s2, lowpass.apply(v), low_x), y)
            abar_t, abar_s = float(updates.abar_t[k]), float(updates.abar_s[k])
            sigma_t = math.sqrt(1 - abar_t)
            eps_hat = eps  # guidance in eps form
            if settings.ls:
                eps_hat = eps_hat + sigma_t * settings.ls * grad_s
            if settings.li and not stable:
                eps_hat = eps_hat + sigma_t * settings.li * grad_i
            if guided is not None:
                guided(r * K + k, y, t, x_t, eps_hat)
            with timer.phase("update_noise"):
                z = source.draw(STREAM_SAMPLING, r * (K + 1) + k + 1, shape, device)
                if solver_step is None:  # ddpm: the official update
                    mean = scalar(coefs.inv_sqrt_alpha, k) * (y - scalar(coefs.eps_coef, k) * eps)
                    w = scalar(coefs.guidance_w, k)
                    if settings.ls:
                        mean = mean - settings.ls * w * grad_s
                    if settings.li and not stable:
                        mean = mean - settings.li * w * grad_i
                    y = (mean + scalar(coefs.sigma, k) * z).float()
                    pull_w = w
                else:  # guidance in eps form, then the solver's step
                    x0_pred = (y - sigma_t * eps_hat) / math.sqrt(abar_t)
                    eta = float(etas[k])
                    y, previous = solver_step(y, eps_hat, x0_pred, abar_t, abar_s, eta, z, previous)
                    y = y.float()
                    # the guidance weight of the first-order step: how far it moves y per unit of eps_hat
                    pull_w = -sigma_t * solver_step(0.0, 1.0, -sigma_t / math.sqrt(abar_t), abar_t, abar_s, eta,
                                                    0.0, None)[0]
            if settings.li and stable:  # the low-pass expert integrated implicitly or exactly, after the step
                with timer.phase("lowpass_grad"):
                    y = lowpass.pull(y, x_t, 2.0 * settings.li * pull_w, settings.lowpass).float()
            with timer.phase("update_noise"):
                if settings.ilvr and coefs.t[k] > 0:
                    y = y - lowpass.apply(y) + lowpass.apply(x_t)
            if callback is not None:
                callback(r * K + k, R * K, y)
    return y.detach()


class EagerTranslator:
    """The eager reference sampler behind what a folder job calls of a ``Translator``
    (``image_size``, ``max_pixels``, ``settings_with``, ``run_tensor``), so that ``egsde-rt
    reference`` runs folders as ``translate`` does, in IEEE float32 on a GPU too."""

    def __init__(self, score, dse, settings: EGSDESettings, image_size: int, device):
        self.score, self.dse, self.settings = score, dse, settings
        self.image_size, self.device = image_size, device
        self.max_pixels = max_pixels_for(image_size)

    def settings_with(self, **overrides):
        return self.settings.with_overrides(**overrides)

    def run_tensor(self, x0, seed, callback=None, **overrides):
        step = None if callback is None else (lambda k, total, y: callback(k, total))
        with tf32_mode("fp32"):  # the oracle in IEEE float32 on a GPU too (cuDNN's default is TF32)
            y = translate(x0.to(self.device), self.score, self.dse, self.settings_with(**overrides), seed=seed,
                          callback=step)
        return y.cpu().numpy()
