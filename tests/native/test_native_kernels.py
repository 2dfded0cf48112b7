"""Every native kernel against the Python math (CPU, float32), with guards around outputs."""

import numpy as np
import pytest
import torch

from egsde_rt import _core
from egsde_rt.errors import EgsdeError, NativeError
from egsde_rt.method.lowpass import LowPassFilter, lowpass_eigen, lowpass_factors
from egsde_rt.method.noise import philox_normal, philox_uint32
from helpers.native import Guarded, step_draws

K = _core.kernels
SHAPES = [(b, s) for b in (1, 3) for s in (32, 64, 256)]


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("batch,per_image", [(1, 3 * 32 * 32), (3, 3 * 64 * 64), (2, 105), (1, 3 * 256 * 256)])
def test_philox_normal_and_integer_stream(batch, per_image):
    out = Guarded(batch * per_image)
    K.philox_normal(out.view, batch, per_image, 2**33 + 5, 1, 17)
    assert out.intact()
    expected = philox_normal(2**33 + 5, 1, 17, (batch, per_image)).ravel()
    assert np.abs(out.view - expected).max() <= 1e-6
    assert np.array_equal(K.philox_uint32(batch, per_image, 99, 0, 3), philox_uint32(99, 0, 3, batch, per_image))
    seeds = np.array([(b + 1) * 0x9E3779B97F4A7C15 % 2**64 for b in range(batch)], np.uint64)  # one per image
    K.philox_normal(out.view, batch, per_image, seeds, 1, 17)
    assert out.intact()
    assert np.abs(out.view - philox_normal(seeds, 1, 17, (batch, per_image)).ravel()).max() <= 1e-6
    assert np.array_equal(K.philox_uint32(batch, per_image, seeds, 0, 3), philox_uint32(seeds, 0, 3, batch, per_image))
    with pytest.raises(NativeError, match="one per image"):
        K.philox_normal(out.view, batch, per_image, np.zeros(batch + 1, np.uint64), 1, 17)


@pytest.mark.parametrize("draw", [2**32 - 1, 2**32, 7 * 2**32 + 5, 2**64 - 1])
def test_philox_draws_are_64_bit(draw):
    """The kernels take the contract's 64-bit draw (noise.py): none wraps to a 32-bit draw."""
    batch, per_image, seeds = 2, 105, np.array([2**33 + 1, 9], np.uint64)
    expected_bits = philox_uint32(seeds, 1, draw, batch, per_image)
    assert np.array_equal(K.philox_uint32(batch, per_image, seeds, 1, draw), expected_bits)
    out = Guarded(batch * per_image)
    K.philox_normal(out.view, batch, per_image, seeds, 0, draw)
    assert out.intact() and np.abs(out.view - philox_normal(seeds, 0, draw, (batch, per_image)).ravel()).max() <= 1e-6
    if draw >= 2**32:
        wrapped = philox_normal(seeds, 0, draw % 2**32, (batch, per_image)).ravel()
        assert np.abs(out.view - wrapped).max() > 0.1


@pytest.mark.parametrize("batch,size", SHAPES)
def test_axpby(batch, size):
    n = batch * 3 * size * size
    x, e = _random(n, 1), _random(n, 2)
    out = Guarded(n)
    a, b = np.float32(0.81), np.float32(0.58)
    K.axpby(x, e, out.view, float(a), float(b))
    assert out.intact()
    assert np.abs(out.view - (a * x + b * e)).max() <= 1e-6


def _lowpass_params(batch, size, down_N):
    """The low-pass parameters of a kernel call and its (guarded) workspace."""
    dh, uh = (np.ascontiguousarray(m, dtype=np.float32) for m in lowpass_factors(size, down_N))
    low = size // down_N
    params = K.LowpassParams(down_h=dh, up_h=uh, down_w=dh, up_w=uh, batch=batch, channels=3, height=size,
                             width=size, low_h=low, low_w=low)
    ws = Guarded(K.lowpass_workspace_floats(params), fill=0.0)
    params.workspace = ws.view
    return params, ws


LOWPASS_CASES = [(b, s, n) for b, s in SHAPES for n in (4, 8, 32)]


@pytest.mark.parametrize("batch,size,down_N", LOWPASS_CASES)
def test_lowpass_apply(batch, size, down_N):
    params, ws = _lowpass_params(batch, size, down_N)
    x = _random((batch, 3, size, size), 3)
    out = Guarded(x.size)
    K.lowpass_apply(params, x.ravel(), out.view)
    assert out.intact() and ws.intact()
    expected = LowPassFilter(size, size, down_N).apply(torch.from_numpy(x)).numpy().ravel()
    assert np.abs(out.view - expected).max() <= 1e-6


@pytest.mark.parametrize("kind", ["neg_l2", "cosine"])
@pytest.mark.parametrize("batch,size,down_N", LOWPASS_CASES)
def test_lowpass_energy_grad(kind, batch, size, down_N):
    params, ws = _lowpass_params(batch, size, down_N)
    y, x = _random((batch, 3, size, size), 4), _random((batch, 3, size, size), 5)
    grad = Guarded(y.size)
    energy = _core.EnergyKind.COSINE if kind == "cosine" else _core.EnergyKind.NEG_L2
    K.lowpass_energy_grad(params, y.ravel(), x.ravel(), grad.view, energy)
    assert grad.intact() and ws.intact()
    f = LowPassFilter(size, size, down_N)
    expected = f.energy_grad(torch.from_numpy(y), torch.from_numpy(x), kind).numpy().ravel()
    assert np.abs(expected).max() > 0
    assert np.abs(grad.view - expected).max() <= 1e-6


def _with_eigenpairs(params, size, down_N):
    """The low-pass parameters with A's eigenpairs (what lowpass_pull reads)."""
    q, lam = (np.ascontiguousarray(m, dtype=np.float32) for m in lowpass_eigen(size, down_N))
    params.eig_h, params.lambda_h, params.eig_w, params.lambda_w = q, lam, q, lam
    return params


@pytest.mark.parametrize("form", ["implicit", "exact"])
@pytest.mark.parametrize("batch,size,down_N", LOWPASS_CASES)
def test_lowpass_pull(form, batch, size, down_N):
    """The native pull (in place) against LowPassFilter.pull, with c given and read from a step."""
    params, ws = _lowpass_params(batch, size, down_N)
    y, x = _random((batch, 3, size, size), 6), _random((batch, 3, size, size), 7)
    expected = LowPassFilter(size, size, down_N).pull(torch.from_numpy(y), torch.from_numpy(x), 3.5, form)
    out = Guarded(y.size)
    out.view[:] = y.ravel()
    K.lowpass_pull(_with_eigenpairs(params, size, down_N), out.view, x.ravel(),
                   getattr(_core.LowpassForm, form.upper()), 3.5)
    assert out.intact() and ws.intact()
    assert np.abs(expected.numpy().ravel() - y.ravel()).max() > 1e-2  # it pulled
    assert np.abs(out.view - expected.numpy().ravel()).max() <= 2e-6


def test_lowpass_pull_reads_its_strength_from_the_step():
    """With a step, c = 2 li_pull of the step's row (li * lowpass_w), not the immediate."""
    coefs, rows = _step_rows(M=6, li=300.0)
    scalars = _step_scalars(rows, 2, 1)[0]
    params = _with_eigenpairs(_lowpass_params(1, 32, 8)[0], 32, 8)
    y, x = _random((1, 3, 32, 32), 6), _random((1, 3, 32, 32), 7)
    expected, out = y.ravel().copy(), y.ravel().copy()
    form = _core.LowpassForm.IMPLICIT
    K.lowpass_pull(params, expected, x.ravel(), form, float(2 * rows[2][16]))
    K.lowpass_pull(params, out, x.ravel(), form, 0.0, step=scalars)
    assert rows[2][16] == np.float32(300.0) * coefs.lowpass_w[2] and np.array_equal(out, expected)
    with pytest.raises(NativeError, match="GRADIENT|gradient form"):
        K.lowpass_pull(params, out, x.ravel(), _core.LowpassForm.GRADIENT, 1.0)


def test_the_core_and_the_solvers_agree_on_the_history():
    from egsde_rt.method.solvers import MAX_HISTORY

    assert K.MAX_HISTORY == MAX_HISTORY == 3


def _update_reference(y, eps, gs, gi, z, c):
    mean = np.float32(c["inv_sqrt_alpha"]) * (y - np.float32(c["eps_coef"]) * eps)
    if gs is not None:
        mean = mean - np.float32(c["ls_w"]) * gs
    if gi is not None:
        mean = mean - np.float32(c["li_w"]) * gi
    return mean + np.float32(c["sigma"]) * z


@pytest.mark.parametrize("batch,size", SHAPES)
@pytest.mark.parametrize("mode", ["drawn", "drawn_per_image_seeds", "injected", "last_step", "no_guidance"])
def test_egsde_update(batch, size, mode):
    per_image = 3 * size * size
    n = batch * per_image
    y, eps, gs, gi = (_random(n, s) for s in (6, 7, 8, 9))
    c = dict(inv_sqrt_alpha=1.0001, eps_coef=0.0123, ls_w=0.51, li_w=0.0021, sigma=0.091)
    seed = np.arange(11, 11 + batch, dtype=np.uint64) * np.uint64(2**40 + 3) if mode.endswith("seeds") else 11
    z = philox_normal(seed, 0, 4, (batch, per_image)).ravel()
    noise = None
    if mode == "injected":
        noise = z = _random(n, 10)
    if mode == "last_step":
        c["sigma"] = 0.0
    if mode == "no_guidance":
        gs = gi = None
    out = Guarded(n)
    params = K.UpdateParams(y=y, eps=eps, grad_s=gs, grad_i=gi, noise=noise, out=out.view, batch=batch,
                            per_image=per_image, stream=0, draw=4, **c)
    K.egsde_update(params, seed=seed)
    assert out.intact()
    assert np.abs(out.view - _update_reference(y, eps, gs, gi, z, c)).max() <= 1e-6


@pytest.mark.parametrize("guided", [True, False])
def test_egsde_update_multistep_term(guided):
    """x0_prev (multistep solvers): mean += prev_coef * D_prev, and D_prev <- this update's D."""
    batch, per_image = 2, 3 * 32 * 32
    n = batch * per_image
    y, eps, gs, gi, prev = (_random(n, s) for s in (6, 7, 8, 9, 11))
    if not guided:
        gs = gi = None
    c = dict(inv_sqrt_alpha=1.02, eps_coef=0.3, ls_w=0.51, li_w=0.0021, sigma=0.0)
    m = dict(prev_coef=-0.37, x0_y=1.3, x0_eps=0.8, ls_x0=0.25, li_x0=0.003)
    f = {k: np.float32(v) for k, v in m.items()}
    expected = _update_reference(y, eps, gs, gi, 0, c) + f["prev_coef"] * prev
    d = f["x0_y"] * y - f["x0_eps"] * eps
    if guided:
        d = d - f["ls_x0"] * gs - f["li_x0"] * gi
    out, x0_prev = Guarded(n), Guarded(n)
    x0_prev.view[:] = prev
    sizes = dict(batch=batch, per_image=per_image)
    K.egsde_update(K.UpdateParams(y=y, eps=eps, grad_s=gs, grad_i=gi, out=out.view, x0_prev=x0_prev.view, **sizes,
                                  **c, **m))
    assert out.intact() and x0_prev.intact()
    assert np.abs(out.view - expected).max() <= 1e-5
    assert np.abs(x0_prev.view - d).max() <= 1e-5
    y_in_place = y.copy()  # out aliasing y: D is formed from the y read before the write
    x0_prev.view[:] = prev
    K.egsde_update(K.UpdateParams(y=y_in_place, eps=eps, grad_s=gs, grad_i=gi, out=y_in_place, x0_prev=x0_prev.view,
                                  **sizes, **c, **m))
    assert np.abs(y_in_place - expected).max() <= 1e-5 and np.abs(x0_prev.view - d).max() <= 1e-5


def test_egsde_update_reads_and_shifts_the_history():
    """x0_prev [3, n]: mean += prev_coef * D_{k-1} + prev_coef2 * D_{k-2} + prev_coef3 * D_{k-3},
    then the history shifts by one with this update's D first; a zero coefficient reads nothing."""
    batch, per_image = 2, 3 * 16 * 16
    n = batch * per_image
    y, eps, gs, gi = (_random(n, s) for s in (6, 7, 8, 9))
    history = np.stack([_random(n, s) for s in (11, 12, 13)])
    c = dict(inv_sqrt_alpha=1.02, eps_coef=0.3, ls_w=0.51, li_w=0.0021, sigma=0.0)
    m = dict(prev_coef=-0.37, prev_coef2=0.21, prev_coef3=-0.05, x0_y=1.3, x0_eps=0.8, ls_x0=0.25, li_x0=0.003)
    f = {k: np.float32(v) for k, v in m.items()}
    expected = _update_reference(y, eps, gs, gi, 0, c)
    for j, name in enumerate(("prev_coef", "prev_coef2", "prev_coef3")):
        expected = expected + f[name] * history[j]
    d = f["x0_y"] * y - f["x0_eps"] * eps - f["ls_x0"] * gs - f["li_x0"] * gi
    out, x0_prev = Guarded(n), Guarded(3 * n)
    x0_prev.view[:] = history.ravel()
    arrays = dict(y=y, eps=eps, grad_s=gs, grad_i=gi, out=out.view, batch=batch, per_image=per_image)
    K.egsde_update(K.UpdateParams(**arrays, x0_prev=x0_prev.view, **c, **m))
    assert out.intact() and x0_prev.intact()
    assert np.abs(out.view - expected).max() <= 1e-5
    shifted = x0_prev.view.reshape(3, n)
    assert np.abs(shifted[0] - d).max() <= 1e-5
    assert np.array_equal(shifted[1], history[0]) and np.array_equal(shifted[2], history[1])
    x0_prev.view[:] = history.ravel()
    x0_prev.view[2 * n:] = np.nan  # D_{k-3} read with coefficient 0: ignored
    K.egsde_update(K.UpdateParams(**arrays, x0_prev=x0_prev.view, **c, **{**m, "prev_coef3": 0.0}))
    assert np.isfinite(out.view).all()
    with pytest.raises(NativeError, match="earlier data predictions"):
        K.egsde_update(K.UpdateParams(**arrays, x0_prev=np.zeros(4 * n, np.float32), **c))


def test_update_in_place():
    y, eps = _random(64, 1), _random(64, 2)
    expected = _update_reference(y, eps, None, None, 0, dict(inv_sqrt_alpha=2.0, eps_coef=0.5, sigma=0.0))
    K.egsde_update(K.UpdateParams(y=y, eps=eps, out=y, batch=1, per_image=64, inv_sqrt_alpha=2.0, eps_coef=0.5,
                                  ls_w=0.0, li_w=0.0, sigma=0.0))
    assert np.abs(y - expected).max() <= 1e-6


def test_kernels_refuse_bad_buffers():
    with pytest.raises(NativeError, match="float32"):
        K.axpby(np.zeros(4), np.zeros(4), np.zeros(4), 1.0, 1.0)
    with pytest.raises(RuntimeError, match="differ in size"):
        K.axpby(np.zeros(4, np.float32), np.zeros(5, np.float32), np.zeros(4, np.float32), 1.0, 1.0)
    with pytest.raises(RuntimeError, match="needs"):
        K.philox_normal(np.zeros(3, np.float32), 1, 4, 0, 0, 0)
    with pytest.raises(RuntimeError, match="read-only"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        K.axpby(np.zeros(4, np.float32), np.zeros(4, np.float32), ro, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="C-contiguous"):
        K.axpby(np.zeros(8, np.float32)[::2], np.zeros(4, np.float32), np.zeros(4, np.float32), 1.0, 1.0)


def test_native_errors_are_egsde_errors():
    """A native failure is an EgsdeError (the CLI prints it as one line)."""
    with pytest.raises(EgsdeError, match="differ in size"):
        K.axpby(np.zeros(4, np.float32), np.zeros(5, np.float32), np.zeros(4, np.float32), 1.0, 1.0)
    assert issubclass(_core.NativeError, EgsdeError) and _core.NativeError is NativeError


# The counter-driven step: the step table, step_begin, and the kernels reading their per-step
# values through a StepScalars pointer (the same values as the immediates).

def _step_rows(M=6, steps=None, ls=500.0, li=2.0, ilvr=True, solver="ddpm"):
    from egsde_rt.runtime.native_sampler import step_table
    from egsde_rt.method.schedule import Schedule, StepCoefficients

    coefs = StepCoefficients.from_schedule(Schedule.create(), M, steps, solver=solver)
    return coefs, K.step_rows(step_table(coefs), ls, li, ilvr)


@pytest.mark.parametrize("solver", ["ddpm", "dpmpp-2m-sde", "sa-solver-3"])
def test_step_rows_are_the_schedule(solver):
    coefs, rows = _step_rows(ls=500.0, li=2.0, solver=solver)
    assert rows.shape == (len(coefs.t), K.STEP_ROW_WORDS) and rows.dtype == np.float32
    ls, li = np.float32(500.0), np.float32(2.0)
    columns = [coefs.t, coefs.inv_sqrt_alpha, coefs.eps_coef, ls * coefs.guidance_w, li * coefs.guidance_w,
               coefs.sigma, coefs.sqrt_abar, coefs.sqrt_one_minus_abar, (coefs.t > 0).astype(np.float32),
               coefs.prev_coef, coefs.x0_y, coefs.x0_eps, ls * coefs.x0_guidance, li * coefs.x0_guidance,
               coefs.prev_coef2, coefs.prev_coef3, li * coefs.lowpass_w]
    assert len(columns) == K.STEP_ROW_WORDS
    for i, column in enumerate(columns):  # column 8: ILVR, off at t = 0
        assert np.array_equal(rows[:, i], column), i
    assert not _step_rows(ilvr=False)[1][:, 8].any()
    assert (coefs.prev_coef != 0).any() == (solver != "ddpm")
    assert (coefs.prev_coef3 != 0).any() == (solver == "sa-solver-3")


def _step_scalars(rows, g, batch, repeats=3):
    """(scalars, t_now, state) after step_begin at counter g (guarded) of a run of ``repeats``."""
    state = np.array([g], np.int64)
    scalars, t_now = Guarded(K.STEP_SCALARS_WORDS), Guarded(batch)
    K.step_begin(rows, state, scalars.view, t_now.view, batch, updates=repeats * len(rows))
    assert scalars.intact() and t_now.intact()
    return scalars.view, t_now.view, state


@pytest.mark.parametrize("g", [0, 5, 6, 13])
def test_step_begin_gathers_the_counters_row(g):
    coefs, rows = _step_rows(M=6)
    n_steps, batch = 6, 3
    scalars, t_now, state = _step_scalars(rows, g, batch)
    r, k = divmod(g, n_steps)
    assert np.array_equal(scalars[:K.STEP_ROW_WORDS], rows[k])
    assert step_draws(scalars) == [r * (n_steps + 1) + k + 1, r * n_steps + k]
    assert np.array_equal(t_now, np.full(batch, coefs.t[k], np.float32))
    assert list(state) == [g + 1]


def test_axpby_reads_the_step_pair():
    coefs, rows = _step_rows(M=6)
    n = 3 * 32 * 32
    x, y = _random(n, 1), _random(n, 2)
    for g in (2, 5):  # row 5 is t = 0: the ILVR correction is dropped, y is not even read
        scalars = _step_scalars(rows, g, 1)[0]
        row = rows[g]
        cases = [(K.StepMix.PERTURBED_SOURCE, row[6], row[7]), (K.StepMix.ILVR_CORRECTION, 1.0, -row[8])]
        for mix, a, b in cases:
            out, expected = Guarded(n), Guarded(n)
            K.axpby(x, y, expected.view, float(a), float(b))
            K.axpby(x, y, out.view, 0.0, 0.0, step=scalars, mix=mix)
            assert out.intact() and np.array_equal(out.view, expected.view)
    nan = np.full(n, np.nan, np.float32)
    out = Guarded(n)
    K.axpby(x, nan, out.view, 0.0, 0.0, step=_step_scalars(rows, 5, 1)[0], mix=K.StepMix.ILVR_CORRECTION)
    assert np.array_equal(out.view, x)


@pytest.mark.parametrize("stream", [0, 1])
def test_philox_normal_reads_the_step_draw(stream):
    _, rows = _step_rows(M=6)
    batch, per_image, seeds, g = 2, 105, np.array([2**33 + 1, 2**64 - 2], np.uint64), 9
    scalars = _step_scalars(rows, g, batch)[0]
    draw = step_draws(scalars)[stream]
    out = Guarded(batch * per_image)
    K.philox_normal(out.view, batch, per_image, seeds, stream, 0, step=scalars)
    assert out.intact()
    assert np.array_equal(out.view, philox_normal(seeds, stream, draw, (batch, per_image)).ravel())
    injected = _random((draw + 2, batch, per_image), 3)
    K.philox_normal(out.view, batch, per_image, 0, stream, 0, step=scalars, injected=injected)
    assert out.intact() and np.array_equal(out.view, injected[draw].ravel())
    K.philox_normal(out.view, batch, per_image, 0, stream, 1, injected=injected)  # immediate draw index
    assert np.array_equal(out.view, injected[1].ravel())


@pytest.mark.parametrize("noise_source", ["drawn", "injected"])
@pytest.mark.parametrize("g", [3, 5])
def test_egsde_update_reads_the_step(noise_source, g):
    _, rows = _step_rows(M=6)
    batch, per_image, seed = 2, 3 * 32 * 32, np.array([77, 78], np.uint64)
    n = batch * per_image
    y, eps, gs, gi = (_random(n, s) for s in (6, 7, 8, 9))
    scalars = _step_scalars(rows, g, batch)[0]
    row, draw = rows[g], step_draws(scalars)[0]
    table = _random((draw + 1, n), 10) if noise_source == "injected" else None
    c = dict(inv_sqrt_alpha=row[1], eps_coef=row[2], ls_w=row[3], li_w=row[4], sigma=row[5])
    expected, out = Guarded(n), Guarded(n)
    arrays = dict(y=y, eps=eps, grad_s=gs, grad_i=gi, batch=batch, per_image=per_image)
    K.egsde_update(K.UpdateParams(**arrays, noise=None if table is None else table[draw], out=expected.view,
                                  stream=0, draw=draw, **{k: float(v) for k, v in c.items()}), seed=seed)
    K.egsde_update(K.UpdateParams(**arrays, noise=table, out=out.view, inv_sqrt_alpha=0.0, eps_coef=0.0, ls_w=0.0,
                                  li_w=0.0, sigma=0.0, stream=0), seed=seed, step=scalars)
    assert out.intact() and np.array_equal(out.view, expected.view)


def test_egsde_update_reads_the_multistep_columns_from_the_step():
    _, rows = _step_rows(M=6, steps=4, solver="dpmpp-2m-sde")
    batch, per_image, g = 1, 3 * 32 * 32, 2
    n = batch * per_image
    y, eps, gs, gi, prev = (_random(n, s) for s in (6, 7, 8, 9, 11))
    scalars = _step_scalars(rows, g, batch)[0]
    row, draw = rows[g], step_draws(scalars)[0]
    assert row[9] != 0  # a second-order update
    c = dict(inv_sqrt_alpha=row[1], eps_coef=row[2], ls_w=row[3], li_w=row[4], sigma=row[5], prev_coef=row[9],
             x0_y=row[10], x0_eps=row[11], ls_x0=row[12], li_x0=row[13])
    expected, out, prev_e, prev_o = Guarded(n), Guarded(n), Guarded(n), Guarded(n)
    prev_e.view[:] = prev
    prev_o.view[:] = prev
    arrays = dict(y=y, eps=eps, grad_s=gs, grad_i=gi, batch=batch, per_image=per_image)
    K.egsde_update(K.UpdateParams(**arrays, out=expected.view, stream=0, draw=draw, x0_prev=prev_e.view,
                                  **{k: float(v) for k, v in c.items()}), seed=5)
    K.egsde_update(K.UpdateParams(**arrays, out=out.view, inv_sqrt_alpha=0.0, eps_coef=0.0, ls_w=0.0, li_w=0.0,
                                  sigma=0.0, stream=0, x0_prev=prev_o.view), seed=5, step=scalars)
    assert np.array_equal(out.view, expected.view) and np.array_equal(prev_o.view, prev_e.view)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_egsde_update_reads_no_previous_prediction_when_its_coefficient_is_0(bad):
    """A first-order update (prev_coef 0) of a multistep solver ignores D_prev, even a non-finite
    one (0 * NaN would be NaN), and still writes this update's D."""
    batch, per_image = 2, 3 * 32 * 32
    n = batch * per_image
    y, eps, gs, gi = (_random(n, s) for s in (6, 7, 8, 9))
    c = dict(y=y, eps=eps, grad_s=gs, grad_i=gi, batch=batch, per_image=per_image, inv_sqrt_alpha=1.01,
             eps_coef=0.02, ls_w=0.3, li_w=0.4, sigma=0.5, stream=0, draw=3, prev_coef=0.0, x0_y=1.2, x0_eps=0.7,
             ls_x0=0.1, li_x0=0.2)
    expected, out = Guarded(n), Guarded(n)
    prev_clean, prev_bad = Guarded(n, fill=0.0), Guarded(n, fill=bad)
    K.egsde_update(K.UpdateParams(out=expected.view, x0_prev=prev_clean.view, **c), seed=5)
    K.egsde_update(K.UpdateParams(out=out.view, x0_prev=prev_bad.view, **c), seed=5)
    assert out.intact() and prev_bad.intact() and np.isfinite(out.view).all()
    assert np.array_equal(out.view, expected.view) and np.array_equal(prev_bad.view, prev_clean.view)


def test_step_kernels_refuse_bad_buffers():
    _, rows = _step_rows(M=3)
    with pytest.raises(NativeError, match="int64"):
        K.step_begin(rows, np.zeros(1, np.float32), np.zeros(K.STEP_SCALARS_WORDS, np.float32),
                     np.zeros(1, np.float32), 1, updates=len(rows))
    with pytest.raises(NativeError, match="scalars"):
        K.step_begin(rows, np.zeros(1, np.int64), np.zeros(3, np.float32), np.zeros(1, np.float32), 1,
                     updates=len(rows))
    with pytest.raises(NativeError, match="step"):
        K.axpby(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), 1.0, 1.0,
                step=np.zeros(2, np.float32))


def test_kernel_seeds_are_converted_not_wrapped():
    """The bindings only convert seeds (an integer, or uint64 [batch]); the checks of what a user
    passes live in Python (noise.seed_array, tests/method/test_noise.py): nothing is wrapped."""
    out = np.zeros(8, np.float32)
    for bad in (-1, 2**64, np.array([1, 2], np.int64), np.array([0.5, 1.0]), np.zeros(3, np.uint64), "x"):
        with pytest.raises(NativeError, match="seed"):
            K.philox_normal(out, 2, 4, bad, 0, 0)
    K.philox_normal(out, 2, 4, np.array([1, 2], np.uint64), 0, 0)
    assert np.array_equal(out, philox_normal([1, 2], 0, 0, (2, 4)).ravel())
    _, rows = _step_rows(M=3)
    with pytest.raises(NativeError, match="stream"):
        K.philox_normal(out, 2, 4, 0, 2, 0, step=_step_scalars(rows, 0, 2)[0])
