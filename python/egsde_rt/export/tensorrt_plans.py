"""Building TensorRT plans for an engine directory (``egsde-rt build``).

``build_plans`` builds what is missing under ``plans/`` (keys from ``engine.plans``) and records
each plan in the manifest. The compile step uses the public TensorRT Python API (``Builder``,
``OnnxParser``, an optimization profile, a timing cache). TensorRT cannot be installed where
egsde-rt is developed: this path is unverified there; the caching logic is tested with a
stand-in compiler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..engine import DSE_GRAD, SCORE, load_engine_dir, sha256_file
from ..engine.plans import PLANS_DIR, PRECISIONS, TIMING_CACHE, plan_key, tensorrt_identity
from ..errors import ConfigError, EgsdeError


def build_plans(engine_dir, *, precision: str = "fp16", min_batch: int = 1, opt_batch: int = 1,
                max_batch: int = 8, workspace_gib: float = 4.0, compile_fn: Callable | None = None,
                identity: tuple[str, str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the plans of both graphs; returns {graph name: plan path}."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    engine = load_engine_dir(engine_dir)
    capability, version = identity or tensorrt_identity()
    compile_fn = compile_fn or compile_with_tensorrt
    profile = (min_batch, opt_batch, max_batch)
    (engine.path / PLANS_DIR).mkdir(exist_ok=True)
    manifest = engine.manifest
    built = {}
    for contract in (SCORE, DSE_GRAD):
        graph = manifest.graphs[contract.name]
        key = plan_key(graph.sha256, precision, profile, capability, version)
        entry = manifest.plans.get(key)
        path = engine.file(f"{PLANS_DIR}/{contract.name}-{key}.plan")
        if entry and path.is_file() and sha256_file(path) == entry["sha256"]:
            log(f"{contract.name}: cached plan {path.name}")
        else:
            log(f"{contract.name}: building a {precision} TensorRT plan (batch {min_batch}..{max_batch}) ...")
            plan = compile_fn(engine.file(graph.file), contract, engine.image_size, precision, profile,
                              workspace_gib, engine.file(TIMING_CACHE))
            path.write_bytes(plan)
        manifest.plans[key] = {
            "graph": contract.name, "file": f"{PLANS_DIR}/{path.name}", "sha256": sha256_file(path),
            "onnx_sha256": graph.sha256, "precision": precision, "profile": list(profile),
            "compute_capability": capability, "tensorrt": version,
            "built": manifest.plans.get(key, {}).get("built") or _now(),
        }
        built[contract.name] = path
    manifest.write(engine.path)
    return built


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


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
