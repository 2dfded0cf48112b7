"""Every TensorRT name the plan builder and the runner use exists in the Python API of each TensorRT
version they target (10.0, the newest 10.x, 11.4).

TensorRT cannot be installed here, so the builder (``compile_with_tensorrt``) and the runner
(``TensorRTRunner``) run against a recording stand-in for the ``tensorrt`` module that reports
the version of a fixture: each attribute read or written is recorded as TensorRT's Python API
names it (``Builder.create_network``, ``BuilderFlag.FP16``) and checked against the names that
version's bindings wheel exports (tests/data/tensorrt_api/*.json, extracted once from the wheels
by extract_tensorrt_api.py there; nothing downloads at test time).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import TEST_DATA
from egsde_rt.engine import DSE_GRAD, SCORE
from egsde_rt.engine.plans import TENSORRT_PRECISIONS
from egsde_rt.engine.verification import VerifiedFile
from egsde_rt.errors import EgsdeError, EngineDirError
from egsde_rt.export.tensorrt_plans import compile_with_tensorrt
from egsde_rt.runtime.runners import TensorRTRunner

API_DIR = TEST_DATA / "tensorrt_api"
FIXTURES = sorted(API_DIR.glob("*.json"))

# What the stand-in's methods return: the class of the object TensorRT returns (by its API name), or
# a value; None for METHODS. A method not listed fails the test, so a new use of the API is added
# here (and so checked against the fixtures) before it passes.
RETURNS = {
    "Builder.create_network": "INetworkDefinition", "Builder.create_builder_config": "IBuilderConfig",
    "Builder.create_optimization_profile": "IOptimizationProfile",
    "Builder.build_serialized_network": "IHostMemory", "IBuilderConfig.create_timing_cache": "ITimingCache",
    "IBuilderConfig.get_timing_cache": "ITimingCache", "ITimingCache.serialize": "IHostMemory",
    "Runtime.deserialize_cuda_engine": "ICudaEngine", "ICudaEngine.create_execution_context": "IExecutionContext",
    "INetworkDefinition.get_layer": "ILayer", "OnnxParser.parse_from_file": True,
    "IExecutionContext.execute_async_v3": True, "IExecutionContext.set_input_shape": True,
    # an input's (min, opt, max) shapes in the plan's optimization profile
    "ICudaEngine.get_tensor_profile_shape": [(1, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32)],
}
METHODS = {"IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.set_timing_cache", "IBuilderConfig.set_flag",
           "IBuilderConfig.clear_flag",
           "IBuilderConfig.add_optimization_profile", "IOptimizationProfile.set_shape",
           "IExecutionContext.set_tensor_address", "ILayer.set_output_type", "OnnxParser.get_error"}
# properties: a value, or an enum value (by its API name; the old builder read a layer's type)
PROPERTIES = {"OnnxParser.num_errors": 0, "INetworkDefinition.num_layers": 1, "ILayer.num_outputs": 1}
ENUM_PROPERTIES = {"ILayer.type": "LayerType.NORMALIZATION"}


class _Recorded:
    """A TensorRT class or enum value (``instance`` False) or an object of a class, named by its
    API path; its attribute reads and writes are recorded in ``used``."""

    def __init__(self, used: set, path: str, instance: bool = False):
        object.__setattr__(self, "_used", used)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_instance", instance)

    def __getattr__(self, name):
        path = f"{self._path}.{name}"
        self._used.add(path)
        if not self._instance:
            return _Recorded(self._used, path)  # an enum value (Logger.WARNING)
        if path in PROPERTIES:
            return PROPERTIES[path]
        if path in ENUM_PROPERTIES:
            return _Recorded(self._used, ENUM_PROPERTIES[path])
        return _Method(self._used, path)

    def __setattr__(self, name, value):
        self._used.add(f"{self._path}.{name}")

    def __call__(self, *args, **kwargs):  # constructing an object of a class (trt.Builder(logger))
        if self._instance or "." in self._path:
            raise AssertionError(f"{self._path} is not a TensorRT class")
        return _Recorded(self._used, self._path, instance=True)

    def __int__(self):
        return 1

    def __eq__(self, other):
        return isinstance(other, _Recorded) and other._path == self._path

    def __hash__(self):
        return hash(self._path)

    def __bytes__(self):
        return f"<{self._path}>".encode()


class _Method:
    """A method of a TensorRT object: what it returns comes from RETURNS (None for METHODS)."""

    def __init__(self, used: set, path: str):
        self.used, self.path = used, path

    def __call__(self, *args, **kwargs):
        if self.path in METHODS:
            return None
        if self.path not in RETURNS:
            raise AssertionError(f"the stand-in does not know what tensorrt's {self.path}(...) returns: add it")
        what = RETURNS[self.path]
        return _Recorded(self.used, what, instance=True) if isinstance(what, str) else what


class RecordingTensorRT(types.ModuleType):
    """A stand-in for ``tensorrt`` reporting ``version``; ``used``: the API names read or written."""

    def __init__(self, version: str):
        super().__init__("tensorrt")
        self.__version__ = version
        self.used: set[str] = set()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self.used.add(name)
        return _Recorded(self.used, name)


def _plan_files(tmp_path: Path, data: bytes = b"plan") -> dict:
    """{graph: VerifiedFile} of stand-in plans holding ``data``, as ``matching_plans`` gives a runner."""
    plans = {}
    for contract in (SCORE, DSE_GRAD):
        path = tmp_path / f"{contract.name}.plan"
        path.write_bytes(data)
        plans[contract.name] = VerifiedFile(path, hashlib.sha256(data).hexdigest(), len(data))
    return plans


def _api(fixture: Path) -> tuple[str, set[str]]:
    data = json.loads(fixture.read_text())
    return data["version"], set(data["names"])


def names_used(version: str, tmp_path: Path, monkeypatch) -> set[str]:
    """The TensorRT names the builder (every supported precision, both graphs) and the runner (both
    graphs) use against a TensorRT reporting ``version``."""
    trt = RecordingTensorRT(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx = tmp_path / "graph.onnx"
    onnx.write_bytes(b"onnx")
    for precision in TENSORRT_PRECISIONS:
        for contract in (SCORE, DSE_GRAD):
            plan = compile_with_tensorrt(onnx, contract, 32, precision, (1, 1, 4), 1.0, tmp_path / "timing.cache")
            assert plan == b"<IHostMemory>"
    runner = TensorRTRunner(_plan_files(tmp_path))
    for contract in (SCORE, DSE_GRAD):
        refs = [SimpleNamespace(shape=(1, 3, 32, 32), ptr=4096 * i, stream=0) for i in range(len(contract.inputs))]
        runner._run(contract, refs, SimpleNamespace(shape=(1, 3, 32, 32), ptr=1 << 20, stream=0))
    return trt.used


def test_the_fixtures_cover_the_supported_range():
    versions = [_api(f)[0] for f in FIXTURES]
    assert {v.split(".")[0] for v in versions} == {"10", "11"} and "10.0.1" in versions, versions
    _, api11 = _api(API_DIR / "11.4.0.106.json")
    _, api10 = _api(API_DIR / "10.16.1.11.json")
    # what TensorRT 11 removed (the weak-typing API), as the fixtures record it
    removed = {"BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
               "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "ILayer.precision", "ILayer.set_output_type",
               "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"}
    assert removed <= api10 and not removed & api11
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in api10 & api11
    assert "BuilderFlag.STRONGLY_TYPED" not in api10 | api11


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.stem)
def test_every_tensorrt_name_used_exists_in_each_supported_version(fixture, tmp_path, monkeypatch):
    version, api = _api(fixture)
    used = names_used(version, tmp_path, monkeypatch)
    assert {"Builder.create_network", "Builder.build_serialized_network", "IExecutionContext.execute_async_v3",
            "Runtime.deserialize_cuda_engine"} <= used  # the stand-in saw both the builder and the runner
    missing = sorted(used - api)
    assert not missing, f"TensorRT {version} has no {missing}"


def test_the_network_is_strongly_typed(tmp_path, monkeypatch):
    """TensorRT 10 is asked for a strongly typed network; 11 builds nothing else (its flag is deprecated)."""
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in names_used("10.16.1.11", tmp_path, monkeypatch)
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" not in names_used("11.4.0.106", tmp_path, monkeypatch)


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0.1"])
def test_a_tensorrt_older_than_10_is_refused_naming_the_fix(version, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", RecordingTensorRT(version))
    fix = rf"TensorRT {version} is older than the supported range .*pip install 'egsde-rt\[tensorrt\]'"
    with pytest.raises(EgsdeError, match=fix):
        compile_with_tensorrt(tmp_path / "graph.onnx", SCORE, 32, "fp32", (1, 1, 4), 1.0, tmp_path / "timing.cache")
    with pytest.raises(EgsdeError, match=fix):
        TensorRTRunner({SCORE.name: tmp_path / "score.plan", DSE_GRAD.name: tmp_path / "dse_grad.plan"})


# What a step may ask of TensorRT inside a CUDA-graph capture: binding shapes and addresses (host
# state) and the enqueue on the sampler's stream; nothing that synchronises or allocates.
CAPTURABLE_CALLS = {"IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
                    "IExecutionContext.execute_async_v3"}


def test_a_tensorrt_step_makes_only_capturable_calls_on_the_samplers_stream(tmp_path, monkeypatch):
    """The runner is registered as capturable: a graph run binds the sampler's buffers and enqueues
    on the sampler's own stream, and asks nothing else of TensorRT."""
    from egsde_rt.runtime.backends import get_backend

    assert get_backend("tensorrt").capturable
    trt = RecordingTensorRT("11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    runner = TensorRTRunner(_plan_files(tmp_path))
    streams = []
    monkeypatch.setitem(RETURNS, "IExecutionContext.execute_async_v3", True)
    original = _Method.__call__

    def recording_call(self, *args, **kwargs):
        if self.path == "IExecutionContext.execute_async_v3":
            streams.append(kwargs.get("stream_handle", args[0] if args else None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_Method, "__call__", recording_call)
    trt.used.clear()
    for contract in (SCORE, DSE_GRAD):
        refs = [SimpleNamespace(shape=(2, 3, 32, 32), ptr=4096 * (i + 1), stream=77)
                for i in range(len(contract.inputs))]
        runner._run(contract, refs, SimpleNamespace(shape=(2, 3, 32, 32), ptr=1 << 20, stream=77))
    assert trt.used == CAPTURABLE_CALLS
    assert streams == [77, 77]


# --- the runner: the bytes it verified, the shapes its plans take -------------------------------

def _deserialised(monkeypatch) -> list:
    """What the stand-in's ``Runtime.deserialize_cuda_engine`` is given, call by call."""
    given = []
    original = _Method.__call__

    def recording_call(self, *args, **kwargs):
        if self.path == "Runtime.deserialize_cuda_engine":
            given.append(bytes(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_Method, "__call__", recording_call)
    return given


def test_the_runner_deserialises_the_very_bytes_it_checks(tiny_engine, tmp_path, monkeypatch):
    """A plan is read once, checked (size, sha256) on the bytes read and those bytes deserialised:
    a plan replaced after ``matching_plans`` verified it (same size, other bytes) is refused naming
    the file and the rebuild, and never deserialised (was: verified, then opened again and loaded)."""
    import shutil

    from egsde_rt.engine import load_engine_dir
    from egsde_rt.engine.plans import MachineIdentity, matching_plans
    from egsde_rt.export.tensorrt_plans import build_plans

    monkeypatch.setenv("EGSDE_RT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "engine"
    shutil.copytree(tiny_engine[0], path)
    h100 = MachineIdentity("cuda", "9.0", "tensorrt 11.4.0")
    build_plans(path, compile_fn=lambda onnx, contract, *rest: f"{contract.name} plan".encode() * 64, identity=h100,
                log=lambda m: None)
    monkeypatch.setitem(sys.modules, "tensorrt", RecordingTensorRT("11.4.0.106"))
    given = _deserialised(monkeypatch)
    plans = matching_plans(load_engine_dir(path), h100, precision="fp32")
    TensorRTRunner(plans)
    assert given == [plans[c.name].path.read_bytes() for c in (SCORE, DSE_GRAD)]

    plans = matching_plans(load_engine_dir(path), h100, precision="fp32")  # verified: now replaced
    replaced = plans["dse_grad"].path.read_bytes().replace(b"dse_grad plan", b"DSE_GRAD PLAN")
    tmp = plans["dse_grad"].path.with_name("replacement")
    tmp.write_bytes(replaced)
    os.replace(tmp, plans["dse_grad"].path)
    given.clear()
    with pytest.raises(EngineDirError, match=r"dse_grad-\w+\.plan does not match its sha256 in the manifest \(changed "
                                             r"since it was verified\): rebuild it: run `egsde-rt build .* --backend "
                                             "tensorrt --precision fp32`"):
        TensorRTRunner(plans)
    assert given == [plans["score"].path.read_bytes()]  # the score plan, checked; never the replaced one
    plans["dse_grad"].path.write_bytes(replaced + b"x")
    with pytest.raises(EngineDirError, match="has at least .* bytes now, the manifest says"):
        TensorRTRunner(plans)


def test_a_shape_outside_the_plans_profile_is_refused_naming_the_shape_and_the_profile(tmp_path, monkeypatch):
    """``set_input_shape`` returns False for a shape the plan's optimization profile does not take
    (a batch below its minimum or above its maximum): an EgsdeError naming the shape, the profile
    and the fix, before anything is enqueued (was: the return value ignored, the plan run anyway)."""
    trt = RecordingTensorRT("11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    runner = TensorRTRunner(_plan_files(tmp_path))
    monkeypatch.setitem(RETURNS, "IExecutionContext.set_input_shape", False)
    trt.used.clear()
    refs = [SimpleNamespace(shape=(8, 3, 32, 32), ptr=4096 * (i + 1), stream=77) for i in range(3)]
    with pytest.raises(EgsdeError, match=r"the TensorRT plan .*dse_grad\.plan does not take the shape \(8, 3, 32, 32\) "
                                         r"of its input 'y': its optimization profile takes \(1, 3, 32, 32\) to "
                                         r"\(4, 3, 32, 32\) \(batches 1\.\.4\); .*--max-batch N"):
        runner._run(DSE_GRAD, refs, SimpleNamespace(shape=(8, 3, 32, 32), ptr=1 << 20, stream=77))
    assert "IExecutionContext.execute_async_v3" not in trt.used


def test_the_timing_cache_is_replaced_whole_never_rewritten_in_place(tmp_path, monkeypatch):
    """A build writes its timing cache under a temporary name of its own and renames it into place:
    a concurrent build reading the old cache keeps reading the old bytes (was: truncated and
    rewritten in place under it), and no temporary file is left."""
    monkeypatch.setitem(sys.modules, "tensorrt", RecordingTensorRT("11.4.0.106"))
    (tmp_path / "plans").mkdir()
    cache = tmp_path / "plans" / "timing.cache"
    cache.write_bytes(b"the old timing cache")
    (tmp_path / "graph.onnx").write_bytes(b"onnx")
    with open(cache, "rb") as reader:  # a concurrent build, between opening the cache and reading it
        compile_with_tensorrt(tmp_path / "graph.onnx", SCORE, 32, "fp32", (1, 1, 4), 1.0, cache)
        assert reader.read() == b"the old timing cache"
    assert cache.read_bytes() == b"<IHostMemory>"
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["timing.cache"]
