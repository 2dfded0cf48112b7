"""Bad input everywhere: property-based tests (hypothesis, bounded examples) over the public
Python API's arguments, as a new user might pass them: ``EGSDESettings`` and the text parser of
settings, ``Translator.run`` / ``run_tensor``, and the folder job (``plan_job``, ``run_job``).
Whatever the arguments, a call returns a sensible result or raises an ``EgsdeError``; any
other exception (a bare ``TypeError``, ``ValueError``, ``OverflowError`` ...) fails the test.
(The HTTP API is fuzzed in tests/service/test_serve_contract.py.)"""

import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from egsde_rt.errors import EgsdeError
from egsde_rt.jobs.folders import plan_job, run_job
from egsde_rt.images import CenterCropWarning
from egsde_rt.runtime.translator import Translator
from egsde_rt.method.settings import DECLARATIONS, RUNTIME_OVERRIDABLE, EGSDESettings, overrides_from_text

PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

# What a user might pass where a value is expected: right and wrong types, edge values.
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 20), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.binary(max_size=4), st.lists(st.integers(0, 3), max_size=3), st.just({}),
    # every declared choice (a valid value of one setting is junk for another), and a number as text
    st.sampled_from(sorted({str(c) for d in DECLARATIONS.values() for c in d.choices or ()} | {"1e3"})),
)
SETTING_NAMES = st.sampled_from([*DECLARATIONS, "m", "", "seed"])


def _is_egsde_error_or_returns(call):
    """Run ``call``: its result, or None when it raised an EgsdeError (anything else propagates)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CenterCropWarning)
        try:
            return call()
        except EgsdeError as err:
            assert str(err), "an EgsdeError must carry a message"
            return None


# --- settings ------------------------------------------------------------------------------------

@PROPERTIES
@given(values=st.dictionaries(SETTING_NAMES, JUNK, max_size=4))
def test_settings_are_valid_or_an_egsde_error(values):
    def build():
        return EGSDESettings().with_overrides(**values)

    result = _is_egsde_error_or_returns(build)
    if result is not None:  # accepted: every value is one its declaration allows
        for name, value in values.items():
            assert getattr(result, name) == value
        assert result.M >= 1 and result.num_updates >= 1 and math.isfinite(result.ls) and math.isfinite(result.li)
        assert not any(isinstance(getattr(result, n), bool) for n, d in DECLARATIONS.items() if d.kind is not bool)


@PROPERTIES
@given(params=st.dictionaries(SETTING_NAMES, st.text(max_size=8) | st.from_regex(r"-?[0-9]{1,5}(\.[0-9])?",
                                                                                  fullmatch=True), max_size=4))
def test_settings_as_text_parse_or_give_an_egsde_error(params):
    result = _is_egsde_error_or_returns(lambda: overrides_from_text(params))
    if result is not None:
        assert set(result) <= set(RUNTIME_OVERRIDABLE)
        assert all(isinstance(v, DECLARATIONS[k].kind) for k, v in result.items())


# --- Translator ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def translator(tiny_torch_engine):
    return Translator(tiny_torch_engine[0])


# Every overridable setting, however costly its value (M=1000, repeats=16 ...), and fixed or unknown
# names: a run is bounded by the settings' own bounds, and here by a budget of updates (``budget``:
# a run past it is cancelled, a SamplingCancelled, which is an EgsdeError), never by leaving a
# parameter out.
OVERRIDES = st.dictionaries(st.sampled_from([*RUNTIME_OVERRIDABLE, "s1", "foo"]),
                            st.one_of(st.integers(0, 3), st.sampled_from([16, 17, 1000, 1001, 2**31, 10**9]), JUNK),
                            max_size=4)
UPDATE_BUDGET = 24


def budget():
    """A progress callback that cancels a run after ``UPDATE_BUDGET`` updates."""
    done = [0]

    def callback(*progress):
        done[0] += 1
        return done[0] <= UPDATE_BUDGET
    return callback
SEEDS = st.one_of(st.integers(-2, 2**64 + 1), JUNK, st.lists(st.integers(0, 9), max_size=3),
                  arrays(np.int64, st.integers(0, 3), elements=st.integers(0, 9)))
SHAPES = st.tuples(st.integers(0, 2), st.sampled_from([1, 3, 4]), st.sampled_from([8, 32]), st.sampled_from([32, 33]))


@st.composite
def sources(draw):
    """A source batch as a user might pass it: numpy or torch, any dtype, flipped (negative
    strides), transposed, with NaN; or not an array at all."""
    kind = draw(st.sampled_from(["numpy", "torch", "junk"]))
    if kind == "junk":
        return draw(JUNK)
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.int64, np.bool_, object,
                                  np.complex64]))
    shape = draw(SHAPES)
    array = np.random.default_rng(draw(st.integers(0, 9))).uniform(-1, 1, shape).astype(dtype)
    if draw(st.booleans()):
        array = array[..., ::-1]  # e.g. a horizontal flip, or BGR <-> RGB on the last axis
    if draw(st.booleans()) and array.dtype.kind == "f" and array.size:
        array = array.copy()
        array.flat[0] = np.nan
    if kind == "numpy" or array.dtype == object:
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


@PROPERTIES
@given(x0=sources(), seed=SEEDS, overrides=OVERRIDES)
@example(x0=np.zeros((1, 3, 32, 32), np.float32), seed=0, overrides={"M": 1000, "repeats": 16})  # budget cancels
@example(x0=np.zeros((2, 3, 32, 32), np.float32), seed=[1, 2], overrides={"M": 3, "repeats": 2, "steps": 2,
                                                                           "solver": "dpmpp-2m-sde"})
def test_run_tensor_gives_an_image_batch_or_an_egsde_error(translator, x0, seed, overrides):
    y = _is_egsde_error_or_returns(lambda: translator.run_tensor(x0, seed=seed, callback=budget(), **overrides))
    if y is not None:
        assert tuple(y.shape) == tuple(x0.shape) and bool(np.isfinite(np.asarray(y)).all())


IMAGES = st.one_of(
    JUNK, st.just("no/such/file.png"), st.just(Image.new("RGB", (40, 30), "red")), st.just(Image.new("LA", (1, 1))),
    arrays(st.sampled_from([np.uint8, np.float32, np.int16]), st.tuples(st.integers(0, 9), st.integers(0, 9),
                                                                        st.sampled_from([1, 3, 4, 5]))),
)


@PROPERTIES
@given(img=st.one_of(IMAGES, st.lists(IMAGES, max_size=3)), seed=SEEDS,
       batch_size=st.one_of(st.none(), st.integers(-1, 3), JUNK), overrides=OVERRIDES)
def test_run_gives_images_or_an_egsde_error(translator, img, seed, batch_size, overrides):
    result = _is_egsde_error_or_returns(lambda: translator.run(img, seed=seed, batch_size=batch_size,
                                                               callback=budget(), **overrides))
    if result is not None:
        images = result if isinstance(img, (list, tuple)) else [result]
        assert len(images) == (len(img) if isinstance(img, (list, tuple)) else 1)
        assert all(i.size == (32, 32) and i.mode == "RGB" for i in images)


# --- the folder job ------------------------------------------------------------------------------

def _fresh_folder(path):
    """in/a.png (an image) and in/b.png (not one), nothing else: each example starts from this."""
    shutil.rmtree(path, ignore_errors=True)
    (path / "in").mkdir(parents=True)
    Image.new("RGB", (32, 32), "blue").save(path / "in" / "a.png")
    (path / "in" / "b.png").write_bytes(b"not a png")
    return path


PATHS = st.one_of(JUNK, st.sampled_from(["in", "in/a.png", "missing", "out", "."]))


@PROPERTIES
@given(items=st.one_of(PATHS, st.lists(PATHS, max_size=3)), output=PATHS, seed=SEEDS,
       existing=st.one_of(st.sampled_from(["error", "skip", "overwrite"]), JUNK),
       batch_size=st.one_of(st.integers(-1, 3), JUNK), overrides=OVERRIDES)
def test_folder_job_runs_or_gives_an_egsde_error(translator, tmp_path, monkeypatch, items, output, seed, existing,
                                                 batch_size, overrides):
    monkeypatch.chdir(_fresh_folder(tmp_path / "job"))
    planned = _is_egsde_error_or_returns(lambda: plan_job(items, output, seed, existing=existing))
    if planned is None:
        return
    tasks, _ = planned
    within = budget()
    report = _is_egsde_error_or_returns(lambda: run_job(translator, tasks, batch_size=batch_size,
                                                        overrides=overrides, on_update=lambda images: within()))
    if report is not None:
        assert len(report.written) + len(report.failed) == len(tasks)
        assert all(f.name == "b.png" for f, _ in report.failed)
        assert all(Image.open(w).size == (32, 32) for w in report.written)
