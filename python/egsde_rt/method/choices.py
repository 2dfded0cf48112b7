"""The allowed values of the method's settings, declared once, below the modules that implement them.

``settings`` declares each setting with these choices; ``solvers``, ``schedule``, ``lowpass`` and
``similarity`` implement them and import their names from here (``solvers`` checks at import that
its table holds exactly ``SOLVER_NAMES``). This module imports none of them, so the settings never
import an implementation (the import-linter contract "method: the choices ..." in pyproject.toml).
"""

from __future__ import annotations

from ..errors import ConfigError

# Each solver's one-line help, in the order the command line lists them (docs/api.md#solvers says more).
SOLVER_HELP: dict[str, str] = {
    "ddpm": "the official update: the DDPM posterior mean and the schedule's variance (the default; eta does not "
            "apply)",
    "ddim": "DDIM with eta (0 deterministic, 1 = respaced DDPM)",
    "dpmpp-2m-sde": "SDE-DPM-Solver++(2M) with eta (1 the SDE, 0 the deterministic DPM-Solver++(2M)); the few-step "
                    "solver",
    **{f"sa-solver-{order}": f"SA-Solver, the stochastic Adams predictor-corrector of order {order} (no extra network "
                             "evaluations) with tau^2 = eta (1 the SDE, 0 the ODE)" for order in (1, 2, 3)},
}
SOLVER_NAMES = tuple(SOLVER_HELP)
SOLVERS_DOC = "docs/api.md#solvers"  # where the solvers are described, named by the settings' help

VAR_TYPES = ("fixedsmall", "fixedlarge")  # ddpm's variance: the posterior's, or beta
SPACINGS = ("uniform", "logsnr", "karras")  # where the kept timesteps of fewer updates fall (schedule.kept_timesteps)
LOWPASS_FORMS = ("gradient", "implicit", "exact")  # how an update applies the low-pass expert (lowpass.LowPassFilter)
SIMILARITY_KINDS = ("cosine", "neg_l2")  # the similarities the experts are built from (similarity)
SCORE_KINDS = ("adm", "ddpm")  # the score network's kind
PERTURB_MODES = ("shared", "fresh")  # the official code's perturbation, or the paper's Algorithm 1


def check_eta(eta) -> float:
    """``eta`` as a float if it is a number in [0, 1], else a ``ConfigError``."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be a number in [0, 1] (the stochasticity of the solvers but ddpm: 0 "
                          f"deterministic, 1 the SDE), got {eta!r}")
    return float(eta)


def check_var_type(var_type) -> str:
    """``var_type`` if it is one of ``VAR_TYPES``, else a ``ConfigError``."""
    if var_type not in VAR_TYPES:
        raise ConfigError(f"unknown var_type {var_type!r} (the ddpm solver's variance); expected one of {VAR_TYPES}")
    return var_type
