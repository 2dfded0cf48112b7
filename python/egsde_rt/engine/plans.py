"""Plans in an engine directory: compiled forms of its graphs, cached under ``plans/`` and keyed
by everything they depend on.

Two kinds, recorded in the manifest's ``plans`` table (key -> entry):

* ``tensorrt``: a TensorRT engine, valid for one ONNX file (sha256), precision, batch profile,
  GPU compute capability and TensorRT version.
* ``compiled``: a PyTorch AOTInductor package (``.pt2``), valid for one graph (the sha256 of the
  ONNX graph and of the torch weights it is compiled from), precision, batch range, device
  ("cpu" or "cuda"), capability (the CPU's vector ISA as PyTorch reports it, or the GPU's
  compute capability) and PyTorch version.

``plan_key`` hashes what a plan depends on; ``matching_plans`` finds the plans of one kind
usable on this machine and verifies their files (size and sha256, at the engine's verification
level, as every listed file) before any runner gets them: a plan is loaded into the process, so a
corrupt or replaced one is an ``EngineDirError`` naming the file and the command that rebuilds
it, never loaded. A runner that loads a plan's bytes (TensorRT) reads them through
``VerifiedFile.read``, which checks the bytes it deserialises. ``stale_plans`` explains the plans
that exist but were built for another machine or PyTorch / TensorRT version, or that do not take
batch 1. ``egsde_rt.export`` builds them.

A plan records its batch profile (``PlanEntry.profile``: TensorRT's ``(min, opt, max)``, the
compiled ``(1, max)``). Every plan a runner gets takes every batch from 1 to its largest
(``plans_batch_limit``): the batch range a backend reports is ``1..limit``, and a job's last
batch may be smaller than the others; a plan whose profile starts above 1 is not used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..errors import EgsdeError, MissingGraphsError
from .contracts import CONTRACTS
from .format import EngineDir, PlanEntry

# A strongly typed TensorRT network (the only kind TensorRT 11 builds) computes in its ONNX graph's
# precision: fp32 and tf32 plans (TF32 off / on) are built from the graphs, fp16 and bf16 plans from
# their variants (``format.GRAPH_VARIANTS``).
TENSORRT_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# the TensorRT versions the builder and runner target: 10.x and 11.x (tests/engine/test_tensorrt_api.py checks
# every name they use against the Python API of 10.0, the newest 10.x and 11.4)
TENSORRT_MIN_MAJOR = 10
PLANS_DIR = "plans"
TIMING_CACHE = "plans/timing.cache"


@dataclass(frozen=True)
class MachineIdentity:
    """What a plan is only valid for, besides its graph, precision and batch range."""

    device: str  # "cpu" or "cuda"
    capability: str  # CPU vector ISA ("AVX512") or GPU compute capability ("9.0")
    runtime: str  # the PyTorch version (compiled) or the TensorRT version (tensorrt)

    def describe(self) -> str:
        return f"{self.device} {self.capability}, {self.runtime}"


def plan_key(*parts) -> str:
    blob = json.dumps([list(p) if isinstance(p, tuple) else p for p in parts])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def import_tensorrt(needed_by: str):
    """The ``tensorrt`` module, or an ``EgsdeError`` naming the fix when it is missing or older than
    TensorRT 10 (its weak-typing API is gone from 11, and the builder targets 10.x and 11.x)."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EgsdeError(f"tensorrt is not installed; {needed_by} needs it: pip install 'egsde-rt[tensorrt]' "
                         "on a CUDA machine") from err
    if tensorrt_major(trt) < TENSORRT_MIN_MAJOR:
        raise EgsdeError(f"TensorRT {trt.__version__} is older than the supported range (10.x, 11.x) that "
                         f"{needed_by} needs: pip install 'egsde-rt[tensorrt]' (tensorrt>=10,<12)")
    return trt


def tensorrt_major(trt) -> int:
    """The major version of the ``tensorrt`` module ``trt`` ("11.4.0.106" -> 11)."""
    return int(str(trt.__version__).split(".")[0])


def tensorrt_identity() -> MachineIdentity:
    """This machine's identity for TensorRT plans (needs tensorrt and a GPU)."""
    import torch

    trt = import_tensorrt("a TensorRT plan")
    major, minor = torch.cuda.get_device_capability()
    return MachineIdentity("cuda", f"{major}.{minor}", f"tensorrt {trt.__version__}")


def compiled_identity(device: str) -> MachineIdentity:
    """This machine's identity for AOTInductor packages on ``device``."""
    import torch

    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        capability = f"sm {major}.{minor}"
    else:
        capability = torch.backends.cpu.get_cpu_capability()
    return MachineIdentity(device, capability, f"torch {torch.__version__}")


def graph_source(engine: EngineDir, graph: str, kind: str, precision: str = "fp32") -> str:
    """The sha256 of what a plan of ``graph`` is built from (TensorRT: the ONNX graph in the plan's
    ``precision``, its variant for fp16 and bf16; compiled plans: the float32 graph and the torch
    weights, only them in a torch-only engine), so a re-exported graph invalidates its plans."""
    if kind == "tensorrt":
        try:
            return engine.graph_variant(graph, precision)[1].sha256
        except MissingGraphsError:  # no such graph: no plan of it is current
            return ""
    entry = engine.manifest.graphs.get(graph)
    onnx_sha = entry.sha256 if entry else ""
    weights = engine.manifest.torch_weights.get(CONTRACTS[graph].weights)
    return hashlib.sha256(f"{onnx_sha}:{weights.sha256 if weights else ''}".encode()).hexdigest()


def _identity_of(entry: PlanEntry) -> MachineIdentity:
    return MachineIdentity(entry.device, entry.capability, entry.runtime)


def plan_entry(kind: str, graph: str, file: str, sha256: str, size: int, source_sha256: str, precision: str,
               profile, identity: MachineIdentity, built: str, **extra) -> PlanEntry:
    """A row of the manifest's plans table (every kind has the same fields; ``extra``: e.g. ``validation``)."""
    return PlanEntry(kind=kind, graph=graph, file=file, sha256=sha256, size=size, source_sha256=source_sha256,
                     precision=precision, profile=list(profile), device=identity.device,
                     capability=identity.capability, runtime=identity.runtime, built=built, **extra)


def build_command(engine: EngineDir, kind: str, device: str, precision: str) -> str:
    """The command that builds the plans of ``kind`` for ``device`` in ``precision``."""
    device_flag = f" --device {device}" if kind == "compiled" else ""
    return f"`egsde-rt build {engine.path} --backend {kind}{device_flag} --precision {precision}`"


def _entries(engine: EngineDir, kind: str, precision: str | None):
    for key, entry in engine.manifest.plans.items():
        if entry.kind == kind and (precision is None or entry.precision == precision):
            yield key, entry


def matching_plans(engine: EngineDir, identity: MachineIdentity, *, kind: str = "tensorrt",
                   precision: str | None = None) -> dict | None:
    """{graph name: plan file} of ``kind`` for this machine (newest build per graph, taking batch
    1), each file verified (``EngineDir.verified``: an ``EngineDirError`` for a corrupt one; a
    ``VerifiedFile``, whose ``read()`` checks the bytes it reads again), or None unless every graph
    has one."""
    found = _matching_entries(engine, identity, kind, precision)
    if found is None:
        return None
    return {graph: engine.verified(entry, f"plans.{key}", fix="rebuild it: run "
                                   + build_command(engine, kind, identity.device, entry.precision))
            for graph, (key, entry) in found.items()}


def _matching_entries(engine: EngineDir, identity: MachineIdentity, kind: str, precision: str | None) -> dict | None:
    """{graph name: (key, entry)} of the newest usable plan of ``kind`` per graph, or None unless
    every graph of the engine (``EngineDir.contracts``) has one (files not yet verified)."""
    found = {}
    for key, entry in _entries(engine, kind, precision):
        usable = (_identity_of(entry) == identity and entry.profile[0] == 1
                  and entry.source_sha256 == graph_source(engine, entry.graph, kind, entry.precision))
        if (usable and engine.file(entry.file, f"plans.{key}.file").is_file()
                and (entry.graph not in found or entry.built > found[entry.graph][1].built)):
            found[entry.graph] = (key, entry)
    return found if set(found) == {contract.name for contract in engine.contracts} else None


def plans_batch_limit(engine: EngineDir, identity: MachineIdentity, *, kind: str, precision: str | None = None):
    """The largest batch the plans ``matching_plans`` picks all take (their batch profiles' upper
    end; they all take batch 1 and every batch up to it), or None where there are none."""
    found = _matching_entries(engine, identity, kind, precision)
    return min(int(entry.profile[-1]) for _, entry in found.values()) if found else None


def stale_plans(engine: EngineDir, identity: MachineIdentity, *, kind: str, precision: str | None = None) -> list:
    """Why the plans of ``kind`` on record do not serve this machine: one line per stale plan."""
    reasons = []
    for _, entry in _entries(engine, kind, precision):
        theirs = _identity_of(entry)
        if theirs != identity:
            reasons.append(f"{entry.file} was built for {theirs.describe()}, this machine is {identity.describe()}")
        elif entry.source_sha256 != graph_source(engine, entry.graph, kind, entry.precision):
            reasons.append(f"{entry.file} was built from another export of the {entry.graph} graph")
        elif entry.profile[0] != 1:
            reasons.append(f"{entry.file} takes batches {entry.profile[0]}..{entry.profile[-1]}, not batch 1 "
                           "(a job's last batch may be smaller than the others)")
    return reasons
