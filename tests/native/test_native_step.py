"""The counter-driven step on the CPU: the staged API (begin / start_repeat / step / finish) is
run() bit for bit, the step counter counts updates, and every per-step value comes from the
step table through the step counter (the same code a captured CUDA graph replays)."""

import numpy as np
import pytest
import torch

from egsde_rt import _core
from egsde_rt.errors import ConfigError, NativeError
from egsde_rt.method.noise import STREAM_PERTURB, STREAM_SAMPLING, philox_normal
from egsde_rt.runtime.native_sampler import build_sampler, run_captured, step_table as step_table_of
from egsde_rt.runtime.runners import TorchRunner
from egsde_rt.method.schedule import Schedule, StepCoefficients
from egsde_rt.method.settings import EGSDESettings
from helpers.sampling import reference_translate


def _x0(batch=2, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _host(x0):
    return np.ascontiguousarray(x0.numpy(), dtype=np.float32)


def _staged(sampler, x0, runner, **run):
    """A whole run through the stages, the way run_captured drives them."""
    K, R = len(sampler.config.steps), sampler.config.repeats
    sampler.begin(x0, **run)
    for r in range(R):
        sampler.start_repeat(r)
        for _ in range(K):
            sampler.step(runner)
    return sampler.finish()


def _torch_runner(settings, unet, dse):
    return TorchRunner(unet, dse, s1=settings.s1, score_kind=settings.score_kind)


class ZeroRunner(_core.Runner):
    """eps = 0 and a zero DSE gradient; records what each call received (host buffers)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def score(self, y, t, eps_out):
        self.calls.append(("score", y.ptr, t.ptr, np.array(y), np.array(t)))
        np.asarray(eps_out)[...] = 0.0

    def dse_grad(self, y, x_t, t, grad_out):
        self.calls.append(("dse_grad", x_t.ptr, t.ptr, np.array(x_t), np.array(t)))
        np.asarray(grad_out)[...] = 0.0


MODES = {
    "plain": dict(),
    "repeats": dict(repeats=2),
    "fresh": dict(perturb="fresh", repeats=2),
    "ilvr": dict(ilvr=True, ls=0.0, li=0.0),
    "ilvr_guided": dict(ilvr=True),
    "respaced": dict(M=200, steps=6),
    "cosine_s2": dict(s2="cosine", li=30.0),
}


@pytest.mark.parametrize("noise_source", ["philox", "injected"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_staged_run_is_run_bit_for_bit(mode, noise_source, small_unet, small_dse):
    settings = EGSDESettings(**{**dict(M=6, ls=500.0, li=2.0, down_N=8), **MODES[mode]})
    x0 = _x0()
    K, R = settings.num_updates, settings.repeats
    run = dict(seed=17)
    if noise_source == "injected":
        gen = torch.Generator().manual_seed(3)
        run["noise"] = torch.randn(R * (K + 1), *x0.shape, generator=gen).numpy()
        if settings.perturb == "fresh":
            run["perturb_noise"] = torch.randn(R * K, *x0.shape, generator=gen).numpy()
    sampler = build_sampler(settings, x0.shape, "cpu")
    runner = _torch_runner(settings, small_unet, small_dse)
    whole = sampler.run(_host(x0), runner, **run)
    staged = _staged(sampler, _host(x0), runner, **run)
    assert np.array_equal(staged, whole)
    assert sampler.step_counter == R * K


def test_step_counter_counts_updates():
    settings = EGSDESettings(M=4, ls=0.0, li=0.0, down_N=8, repeats=2)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    runner = ZeroRunner()
    sampler.begin(_host(_x0(batch=1)), seed=1)
    assert sampler.step_counter == 0
    seen = []
    for r in range(2):
        sampler.start_repeat(r)
        assert sampler.step_counter == 4 * r
        for _ in range(4):
            sampler.step(runner)
            seen.append(sampler.step_counter)
    assert seen == list(range(1, 9))
    sampler.begin(_host(_x0(batch=1)), seed=1)  # a new run starts over
    assert sampler.step_counter == 0


def test_k_staged_steps_agree_with_the_oracle(small_unet, small_dse):
    """The host calls step() K times with nothing that names the update: the result is the method."""
    settings = EGSDESettings(M=10, ls=500.0, li=2.0, down_N=8)
    x0 = _x0()
    sampler = build_sampler(settings, x0.shape, "cpu")
    sampler.begin(_host(x0), seed=2024)
    sampler.start_repeat(0)
    for _ in range(settings.num_updates):
        sampler.step(_torch_runner(settings, small_unet, small_dse))
    staged = torch.from_numpy(sampler.finish())
    oracle = reference_translate(x0, small_unet, small_dse, seed=2024, M=10, ls=500.0, li=2.0, down_N=8)
    assert (staged - oracle).abs().max() <= 1e-4


def test_the_step_reads_its_row_through_the_counter():
    """After a tampered counter, step() runs the update the counter names: its t, coefficients and
    noise draws (stream 0 and stream 1) are row g % K's and update g's, read from device memory."""
    settings = EGSDESettings(M=7, ls=1.0, li=0.0, down_N=8, repeats=2, perturb="fresh")
    coefs = StepCoefficients.from_schedule(Schedule.create(), 7)
    K, seed, batch = 7, 99, 2
    x0 = _host(_x0(batch=batch))
    sampler = build_sampler(settings, x0.shape, "cpu")
    runner = ZeroRunner()
    sampler.begin(x0, seed=seed)
    sampler.start_repeat(0)
    start = sampler.finish()  # y before any update (finish only waits and downloads)
    e = philox_normal(seed, STREAM_SAMPLING, 0, x0.shape)
    assert np.array_equal(start, np.float32(coefs.sqrt_abar[0]) * x0 + np.float32(coefs.sqrt_one_minus_abar[0]) * e)

    g = K + 3  # repeat 1, update 3: not the update the host would expect next
    r, k = divmod(g, K)
    sampler.seek(g)
    sampler.step(runner)
    assert sampler.step_counter == g + 1
    (_, y_ptr, t_ptr, y_seen, t_seen), (_, _, t_ptr2, x_t_seen, _) = runner.calls
    assert t_ptr == t_ptr2
    assert np.array_equal(y_seen, start) and np.array_equal(t_seen, np.full(batch, coefs.t[k], np.float32))
    e_fresh = philox_normal(seed, STREAM_PERTURB, r * K + k, x0.shape)
    expected_x_t = np.float32(coefs.sqrt_abar[k]) * x0 + np.float32(coefs.sqrt_one_minus_abar[k]) * e_fresh
    assert np.array_equal(x_t_seen, expected_x_t)
    z = philox_normal(seed, STREAM_SAMPLING, r * (K + 1) + k + 1, x0.shape)
    expected_y = np.float32(coefs.inv_sqrt_alpha[k]) * start + np.float32(coefs.sigma[k]) * z
    assert np.array_equal(sampler.finish(), expected_y)

    sampler.step(runner)  # the next step is the next row, through the same (fixed) t buffer
    assert runner.calls[2][2] == t_ptr and np.array_equal(runner.calls[2][4], np.full(batch, coefs.t[k + 1]))
    assert sampler.step_counter == g + 2


def test_the_last_update_has_no_noise_and_no_ilvr():
    """Row K-1 (t = 0): sigma = 0 and the ILVR flag is off in the device-side table."""
    settings = EGSDESettings(M=5, ls=0.0, li=0.0, down_N=8, ilvr=True)
    coefs = StepCoefficients.from_schedule(Schedule.create(), 5)
    x0 = _host(_x0(batch=1))
    sampler = build_sampler(settings, x0.shape, "cpu")
    sampler.begin(x0, seed=4)
    sampler.start_repeat(0)
    sampler.seek(4)
    before = sampler.finish()
    sampler.step(ZeroRunner())
    assert np.array_equal(sampler.finish(), np.float32(coefs.inv_sqrt_alpha[4]) * before)


def test_stages_refuse_misuse():
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    with pytest.raises(NativeError, match="begin"):
        sampler.step(ZeroRunner())
    with pytest.raises(NativeError, match="begin"):
        sampler.start_repeat(0)
    sampler.begin(_host(_x0(batch=1)))
    with pytest.raises(NativeError, match="repeat index"):
        sampler.start_repeat(1)
    with pytest.raises(NativeError, match="negative"):
        sampler.seek(-1)
    with pytest.raises(NativeError, match="x0"):
        sampler.begin(np.zeros((2, 3, 32, 32), np.float32))


@pytest.mark.parametrize("repeats", [1, 2])
def test_a_step_past_the_run_is_refused(repeats):
    """repeats x updates steps, then one more: refused on the host before any kernel runs (it would
    read the injected noise past its end: under the sanitizers an invalid read, and garbage out)."""
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8, repeats=repeats)
    x0 = _host(_x0(batch=1))
    K = settings.num_updates
    noise = np.random.default_rng(0).standard_normal((repeats * (K + 1), *x0.shape)).astype(np.float32)
    sampler = build_sampler(settings, x0.shape, "cpu")
    finished = _staged(sampler, x0, ZeroRunner(), noise=noise)
    assert sampler.step_counter == repeats * K
    with pytest.raises(NativeError, match="past the end of the run"):
        sampler.step(ZeroRunner())
    assert sampler.step_counter == repeats * K  # nothing ran
    assert np.array_equal(sampler.finish(), finished)
    sampler.seek(repeats * K - 1)  # seek makes a step legal again: the run's last update
    sampler.step(ZeroRunner())
    with pytest.raises(NativeError, match="past the end of the run"):
        sampler.step(ZeroRunner())


def test_a_counter_past_the_run_is_clamped_on_the_device():
    """What a replayed graph does past the end (the host cannot refuse a replay): step_begin clamps
    the counter into [0, updates), so the step repeats the run's last update (its row, its draws)
    instead of reading past the step table and the noise."""
    coefs = StepCoefficients.from_settings(None, EGSDESettings(M=6, ls=0.0, li=0.0, down_N=8))
    rows = _core.kernels.step_rows(step_table_of(coefs), 0.0, 0.0, False)
    K, R = len(rows), 2

    def begin_at(g):
        state = np.array([g], np.int64)
        scalars, t_now = np.zeros(_core.kernels.STEP_SCALARS_WORDS, np.float32), np.zeros(1, np.float32)
        _core.kernels.step_begin(rows, state, scalars, t_now, 1, updates=R * K)
        return scalars, int(state[0])

    last, _ = begin_at(R * K - 1)
    for g in (R * K, R * K + 5, 2**62):
        scalars, after = begin_at(g)
        assert np.array_equal(scalars.view(np.uint32), last.view(np.uint32)) and after == R * K
    first, _ = begin_at(0)
    assert np.array_equal(begin_at(-3)[0].view(np.uint32), first.view(np.uint32))
    with pytest.raises(NativeError, match="updates"):
        begin_at_zero = np.zeros(1, np.int64)
        _core.kernels.step_begin(rows, begin_at_zero, np.zeros(_core.kernels.STEP_SCALARS_WORDS, np.float32),
                                 np.zeros(1, np.float32), 1, updates=0)


class ThreadsRunner(ZeroRunner):
    """Records the OpenMP team size PyTorch sees inside each runner call (its calling thread's)."""

    def __init__(self):
        super().__init__()
        self.threads = []

    def score(self, y, t, eps_out):
        self.threads.append(torch.get_num_threads())
        super().score(y, t, eps_out)


@pytest.mark.parametrize("threads", [1, 3])
def test_the_samplers_threads_cap_its_calls_and_are_restored(threads):
    """SamplerConfig.threads caps the OpenMP team of every call of the sampler, the runners' PyTorch
    included (they share the runtime): a larger team is lowered to it, a smaller one (the caller's
    choice, e.g. the Translator's under contention) is kept; the caller's own is back after."""
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8)
    x0 = _host(_x0(batch=1))
    before = torch.get_num_threads()
    other = 2
    torch.set_num_threads(other)
    try:
        runner = ThreadsRunner()
        build_sampler(settings, x0.shape, "cpu", threads=threads).run(x0, runner)
        assert runner.threads == [min(threads, other)] * settings.num_updates
        assert torch.get_num_threads() == other
        runner = ThreadsRunner()
        build_sampler(settings, x0.shape, "cpu").run(x0, runner)  # 0: the caller's own
        assert runner.threads == [other] * settings.num_updates
    finally:
        torch.set_num_threads(before)
    with pytest.raises(NativeError, match="threads"):
        build_sampler(settings, x0.shape, "cpu", threads=_core.MAX_THREADS + 1)


def test_run_captured_refuses_a_cpu_sampler():
    settings = EGSDESettings(M=3, ls=0.0, li=0.0, down_N=8)
    sampler = build_sampler(settings, (1, 3, 32, 32), "cpu")
    with pytest.raises(ConfigError, match="CUDA sampler"):
        run_captured(sampler, _x0(batch=1), ZeroRunner(), settings)


class ElementwiseRunner(_core.Runner):
    """Networks whose every output element depends only on the same element of the inputs, so
    any difference across batch sizes could only come from the sampler and its noise."""

    def score(self, y, t, eps_out):
        np.asarray(eps_out)[...] = 0.3 * np.tanh(np.asarray(y)) * (np.asarray(t)[:, None, None, None] / 1000.0)

    def dse_grad(self, y, x_t, t, grad_out):
        np.asarray(grad_out)[...] = 1e-3 * np.sin(3.0 * np.asarray(y)) - 1e-3 * np.asarray(x_t)


@pytest.mark.parametrize("mode", ["plain", "fresh", "ilvr_guided", "cosine_s2"])
def test_an_images_result_depends_on_its_seed_not_its_batch(mode):
    """The noise contract end to end: with per-image seeds, image i of a batch is bit-identical
    to image i alone with its seed, whatever the batch size and position."""
    settings = EGSDESettings(**{**dict(M=6, ls=500.0, li=2.0, down_N=8), **MODES[mode]})
    x0, seeds = _x0(batch=3, seed=4), np.array([9, 2**63 + 5, 9 + 2**32], np.uint64)
    runner = ElementwiseRunner()
    batched = build_sampler(settings, x0.shape, "cpu").run(_host(x0), runner, seed=seeds)
    single = build_sampler(settings, (1, 3, 32, 32), "cpu")
    for i in range(3):
        alone = single.run(_host(x0[i:i + 1]), runner, seed=int(seeds[i]))
        assert np.array_equal(alone[0], batched[i]), i
    flipped = build_sampler(settings, x0.shape, "cpu").run(_host(x0.flip(0)), runner, seed=seeds[::-1].copy())
    assert np.array_equal(flipped[::-1], batched)
    same_seed = build_sampler(settings, (2, 3, 32, 32), "cpu").run(_host(x0[[0, 0]]), runner, seed=int(seeds[0]))
    assert np.array_equal(same_seed[0], same_seed[1]) and np.array_equal(same_seed[0], batched[0])
