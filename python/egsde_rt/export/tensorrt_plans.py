"""Building TensorRT plans for an engine directory (``egsde-rt build``).

``build_plans`` builds what is missing under ``plans/`` (``plan_cache``) and records each plan
in the manifest. The compile step uses the public TensorRT Python API (``Builder``,
``OnnxParser``, an optimization profile, a timing cache). TensorRT cannot be installed where
egsde-rt is developed: this path is unverified there; the caching logic is tested with a
stand-in compiler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..engine import load_engine_dir
from ..engine.plans import TENSORRT_PRECISIONS, TIMING_CACHE, MachineIdentity, tensorrt_identity
from ..errors import ConfigError, EgsdeError
from ..settings import check_batch_size
from .plan_cache import build_cached_plans


def build_plans(engine_dir, *, precision: str = "fp16", min_batch: int = 1, opt_batch: int = 1,
                max_batch: int = 8, workspace_gib: float = 4.0, compile_fn: Callable | None = None,
                identity: MachineIdentity | None = None, log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the TensorRT plans of both graphs; returns {graph name: plan path}."""
    if precision not in TENSORRT_PRECISIONS:
        raise ConfigError(f"precision must be one of {TENSORRT_PRECISIONS}, got {precision!r}")
    check_batch_size(max_batch, "max_batch")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    engine = load_engine_dir(engine_dir)
    engine.require_graphs("tensorrt")
    compile_fn = compile_fn or compile_with_tensorrt
    profile = (min_batch, opt_batch, max_batch)

    def build_one(contract, path: Path) -> None:
        graph = engine.manifest.graphs[contract.name]
        path.write_bytes(compile_fn(engine.file(graph.file, f"graphs.{contract.name}.file"), contract,
                                    engine.image_size, precision, profile, workspace_gib,
                                    engine.file(TIMING_CACHE, "the timing cache")))

    return build_cached_plans(engine, kind="tensorrt", identity=identity or tensorrt_identity(), precision=precision,
                              profile=profile, suffix=".plan", build_one=build_one, log=log)


def compile_with_tensorrt(onnx_path: Path, contract, image_size: int, precision: str, profile, workspace_gib,
                          timing_cache_path: Path) -> bytes:
    """Parse the ONNX graph and build a serialized plan with the TensorRT Python API."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EgsdeError("tensorrt is not installed; `egsde-rt build` needs it (pip install tensorrt)") from err
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EgsdeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        _keep_normalisation_in_fp32(trt, network, config)
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
    timing_cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _keep_normalisation_in_fp32(trt, network, config) -> None:
    """GroupNorm and softmax stay in float32 in reduced-precision builds."""
    kinds = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
