"""Plans in an engine directory: compiled forms of its graphs, cached under ``plans/`` and keyed
by everything they depend on.

A TensorRT plan is valid for one ONNX file (sha256), precision, batch profile, GPU compute
capability and TensorRT version. ``plan_key`` hashes those; the manifest's ``plans`` table
records each plan with them; ``matching_plans`` finds the plans usable on this machine.
``egsde_rt.export.tensorrt_plans`` builds them.
"""

from __future__ import annotations

import hashlib
import json

from .contracts import DSE_GRAD, SCORE
from .format import EngineDir

PRECISIONS = ("fp32", "fp16", "bf16")
PLANS_DIR = "plans"
TIMING_CACHE = "plans/timing.cache"


def plan_key(onnx_sha256: str, precision: str, profile: tuple[int, int, int], compute_capability: str,
             tensorrt_version: str) -> str:
    blob = json.dumps([onnx_sha256, precision, list(profile), compute_capability, tensorrt_version])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def tensorrt_identity() -> tuple[str, str]:
    """(compute capability "9.0", TensorRT version) of this machine (needs tensorrt and a GPU)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}", trt.__version__


def matching_plans(engine: EngineDir, identity: tuple[str, str] | None = None) -> dict | None:
    """{graph name: plan path} for this machine, newest build per graph, or None if incomplete."""
    capability, version = identity or tensorrt_identity()
    found = {}
    for entry in engine.manifest.plans.values():
        usable = (entry["compute_capability"] == capability and entry["tensorrt"] == version
                  and entry["onnx_sha256"] == engine.manifest.graphs[entry["graph"]].sha256)
        path = engine.file(entry["file"])
        if usable and path.is_file() and (entry["graph"] not in found or entry["built"] > found[entry["graph"]][0]):
            found[entry["graph"]] = (entry["built"], path)
    if set(found) != {SCORE.name, DSE_GRAD.name}:
        return None
    return {name: path for name, (_, path) in found.items()}
