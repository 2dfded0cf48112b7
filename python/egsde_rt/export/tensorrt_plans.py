"""Building TensorRT plans for an engine directory (``egsde-rt build``).

``build_plans`` builds what is missing under ``plans/`` (``plan_cache``) and records each plan
in the manifest. The compile step uses the public TensorRT Python API (``Builder``,
``OnnxParser``, an optimization profile, a timing cache) of TensorRT 10.x and 11.x: the network
is strongly typed (TensorRT 11 builds no other kind; 10.x is asked with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so a plan computes in its ONNX graph's
precision and no weak-typing API (precision builder flags, per-layer precisions) is used: fp32
plans (TF32 off) and tf32 plans (``BuilderFlag.TF32`` on) are built from the float32 graphs, fp16
and bf16 plans from their reduced-precision variants (``export.reduced_precision``; the bf16
variant is ONNX opset 22, which TensorRT's ONNX parser must read). TensorRT cannot be installed
where egsde-rt is developed: this path is unverified there; the caching logic is tested with a
stand-in compiler and every TensorRT name used against the Python API of each version
(tests/engine/test_tensorrt_api.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..engine import load_engine_dir
from ..user_cache import write_atomically
from ..engine.plans import (TENSORRT_PRECISIONS, TIMING_CACHE, MachineIdentity, import_tensorrt, tensorrt_identity,
                            tensorrt_major)
from ..errors import ConfigError, EgsdeError
from ..method.settings import check_batch_size
from .plan_cache import build_cached_plans


def build_plans(engine_dir, *, precision: str = "fp32", min_batch: int = 1, opt_batch: int = 1,
                max_batch: int = 8, workspace_gib: float = 4.0, compile_fn: Callable | None = None,
                identity: MachineIdentity | None = None, log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the TensorRT plans of the engine's graphs; returns {graph name: plan path}. A plan's
    profile is ``(1, opt_batch, max_batch)``: it takes every batch up to ``max_batch`` (the batch
    range the backend reports, ``engine.plans``); ``min_batch`` must be 1."""
    if precision not in TENSORRT_PRECISIONS:
        raise ConfigError(f"TensorRT plans are built in {'/'.join(TENSORRT_PRECISIONS)} (a strongly typed build "
                          f"computes in its graph's precision, and the engine has graphs in those), got {precision!r}")
    check_batch_size(max_batch, "max_batch")
    if min_batch != 1:
        raise ConfigError(f"min_batch must be 1, got {min_batch!r}: a plan must take every batch up to max_batch "
                          "(a job's last batch may be smaller than the others, and a backend's batch range starts "
                          "at 1); leave min_batch out")
    if check_batch_size(opt_batch, "opt_batch") > max_batch:
        raise ConfigError(f"opt_batch must be at most max_batch ({max_batch}), got {opt_batch}")
    engine = load_engine_dir(engine_dir)
    engine.require_graphs("tensorrt")
    for contract in engine.contracts:
        engine.graph_variant(contract.name, precision)  # a MissingGraphsError now for an engine without it
    compile_fn = compile_fn or compile_with_tensorrt
    profile = (min_batch, opt_batch, max_batch)

    def build_one(contract, path: Path) -> None:
        path.write_bytes(compile_fn(engine.graph_file(contract.name, precision), contract,
                                    engine.image_size, precision, profile, workspace_gib,
                                    engine.file(TIMING_CACHE, "the timing cache")))

    return build_cached_plans(engine, kind="tensorrt", identity=identity or tensorrt_identity(), precision=precision,
                              profile=profile, suffix=".plan", build_one=build_one, log=log)


def compile_with_tensorrt(onnx_path: Path, contract, image_size: int, precision: str, profile, workspace_gib,
                          timing_cache_path: Path) -> bytes:
    """Parse the ONNX graph into a strongly typed network and build a serialized plan with the
    TensorRT Python API (``precision``: the graph's, recorded in the plan's key)."""
    trt = import_tensorrt("`egsde-rt build --backend tensorrt`")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11: always strongly typed (the flag is deprecated and ignored there)
    strongly_typed = 0 if tensorrt_major(trt) >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(strongly_typed)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EgsdeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    # TF32 only for tf32 plans: fp32 (and the float32 parts of fp16/bf16 plans) is IEEE float32, as on
    # every backend (TensorRT's default turns TF32 on)
    if precision == "tf32":
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    optimization = builder.create_optimization_profile()
    lo, opt, hi = profile
    for name in contract.inputs:
        tail = (3, image_size, image_size) if name != "t" else ()
        optimization.set_shape(name, (lo, *tail), (opt, *tail), (hi, *tail))
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EgsdeError(f"TensorRT failed to build a plan for {onnx_path}")
    # replaced whole, never written in place: a concurrent build reads the old cache or this one
    write_atomically(timing_cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)

