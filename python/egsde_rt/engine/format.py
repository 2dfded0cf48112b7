"""The engine directory format: a self-describing folder of exported graphs and their manifest.

Format version 2 (what export writes):
```
engine_dir/
  manifest.json     format_version, kind, image size, method settings, schedule, files with their
                    size and sha256, graph contracts, validation errors, export versions, plans
  weights/score.safetensors   the networks' weights, each tensor stored once: the torch backend
  weights/dse.safetensors     loads them, and the ONNX graphs reference them as external data
  score.onnx        (x [B,3,H,W], t [B]) -> eps [B,3,H,W]            (the graph only: its weights
  dse_grad.onnx     (y, x_t, t) -> d/dy sum_batch S1(F(y, t), F(x_t, t))  are in weights/)
  score.fp16.onnx, score.bf16.onnx, dse_grad.fp16.onnx, dse_grad.bf16.onnx
                    the graphs' reduced-precision variants (``GRAPH_VARIANTS``): the same graphs
                    with explicit casts (export.reduced_precision), reading the same weights
  plans/            compiled plans built by `egsde-rt build` (optional; see engine.plans)
```
That is an engine of kind ``egsde`` (the default: a manifest without ``kind`` is one). An engine
of kind ``distilled`` (``export.student_engine``) holds one network, a student that folds the
domain-specific expert (and the low-pass expert's gradient form) into its eps
(``models.student``), and no DSE:
```
  weights/student.safetensors
  student.onnx      (y, x_t, t) -> eps [B,3,H,W]: the guided eps     (+ student.fp16.onnx, .bf16.onnx)
```
Its ``settings`` are the student's run (ls 0; li 0 unless the low-pass form is implicit or exact),
and its ``distilled`` entry names its teacher by ``teacher_identity`` (the sha256 of the teacher's
manifest, plans left out: ``check_teacher`` pairs a student with its teacher), the distillation
stage (1: the guided eps at any update; 2: one run of few updates, the run its settings give),
and the teacher's settings, whose ls and li the student is tied to. ``Manifest.contracts`` is the
graphs (and weights) an engine of its kind lists (``contracts.ENGINE_GRAPHS``).
Format version 1 (still read): self-contained ``score.onnx`` and ``dse_grad.onnx`` and state
dicts in ``torch/score.pt`` and ``torch/dse.pt`` (every weight stored two or three times).

An engine holds the ONNX graphs, the torch weights, or both (``EXPORT_FORMATS``). In version 2 the
weights are always there (the graphs read them); "torch" means that the networks can be rebuilt
from them (``model_class`` and ``config`` recorded, as for every egsde_rt network), so the torch
and compiled backends run the engine. A torch-only engine (``egsde-rt export --formats torch``)
has no graphs and is written in seconds; the ONNX Runtime and TensorRT backends need the graphs
(``EngineDir.require_graphs`` refuses with ``MissingGraphsError``, saying how to export them).
``load_engine_dir`` checks the format version, the manifest's every field against its declared
type (the dataclasses below, read by ``typed_json``: an entry of the wrong shape is an
``EngineDirError`` at loading, never a ``TypeError`` or ``KeyError`` later), every listed file's
name (``confinement``: inside the directory) and every listed file (``engine.verification``:
sizes always, sha256 once per machine and file, every byte with ``verify="full"``); plans are
verified the same way, at the same level, before a runner gets them (``plans.matching_plans``).
It raises ``EngineDirError`` naming the problem otherwise: the manifest is parsed strictly
(``typed_json.parse``: UTF-8, no NaN or Infinity, no key twice, bounded integers and nesting; at
most ``MAX_MANIFEST_BYTES``), and any failure to read or parse it names the file.

Writing: every file of the directory that is rewritten in place (the manifest, the TensorRT timing
cache) is written under a temporary name of its own and renamed over the old one
(``write_atomically``), so a reader sees the old file or the new one and concurrent writers never
share a temporary file; a change to the manifest (``update_manifest``: a plan recorded by
``egsde-rt build``) re-reads it and writes it back holding the directory's lock (an exclusive
``fcntl.flock`` on ``.manifest.lock`` in it), so concurrent builds each add their entries and
none is lost.

Trust: an engine directory is code, like a Python package (compiled plans are shared objects that
are loaded into the process, TensorRT plans are native code; the ONNX graphs and the weights are
data, verified all the same): load only engine directories you exported or trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, concurrent builds may lose an entry
    fcntl = None

from ..errors import ConfigError, EngineDirError, MissingGraphsError
from ..user_cache import write_atomically
from ..models import MODEL_CLASSES
from ..method.schedule import BETA_SCHEDULES, Schedule, beta_schedule
from ..method.settings import EGSDESettings
from . import typed_json
from .confinement import confined
from .contracts import CONTRACTS, ENGINE_GRAPHS, GraphContract
from .typed_json import Check, one_of
from .verification import VerifiedFile, check_level, verify_file

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS_DIR = "weights"
MANIFEST_FILE = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"  # the lock a change to the manifest holds (``update_manifest``)
MAX_MANIFEST_BYTES = 16 << 20  # a manifest egsde-rt writes is kilobytes; a larger file is refused unread
# What an engine may hold: the ONNX graphs (ONNX Runtime, TensorRT; also the source of compiled
# plans' keys) and the torch weights (torch backend, compiled plans); one or both.
EXPORT_FORMATS = ("onnx", "torch")
GRAPH_NAMES = tuple(CONTRACTS)
ENGINE_KINDS = tuple(ENGINE_GRAPHS)
DISTILLATION_STAGES = (1, 2)
PLAN_KINDS = ("compiled", "tensorrt")
# The precisions a graph has a variant in (``GraphEntry.variants``; fp32 and tf32 run the graph itself).
GRAPH_VARIANTS = ("fp16", "bf16")
# the TensorRT plan entries of the first format 1 engines (no "kind"): never matched since compiled
# plans came, now left out on reading (a rebuild replaces them)
LEGACY_PLAN_FIELDS = {"onnx_sha256", "compute_capability", "tensorrt"}
PLAN_DEVICES = ("cpu", "cuda")

# The manifest's value types beyond JSON's (see typed_json)
Sha256 = Annotated[str, Check("a sha256 (64 lowercase hexadecimal digits)",
                              lambda v: re.fullmatch(r"[0-9a-f]{64}", v) is not None)]
ByteCount = Annotated[int, Check("a non-negative integer", lambda v: v >= 0)]
Positive = Annotated[int, Check("positive", lambda v: v >= 1)]
BatchProfile = Annotated[list[int], Check("a non-empty list of positive batch sizes",
                                          lambda v: bool(v) and all(b >= 1 for b in v))]
# a graph's or plan's validation: {batch: {"max_abs": ..., "max_rel": ..., ...}}
Errors = dict[str, Annotated[dict[str, float], Check("an object with max_abs and max_rel",
                                                     lambda v: {"max_abs", "max_rel"} <= v.keys())]]


@dataclass
class FileEntry:
    file: str  # a name inside the engine directory (``confinement``)
    sha256: Sha256
    size: ByteCount | None = None  # bytes (format 2; None in format 1)


@dataclass
class GraphEntry(FileEntry):
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    shapes: dict[str, list[int | str]] = field(default_factory=dict)
    validation: Errors = field(default_factory=dict)  # batch -> {"max_abs": ..., "max_rel": ...}
    # format 2: the torch_weights entry whose file holds the graph's external data, and how many
    # of the graph's initializer bytes are there (the rest, small constants, are in the graph)
    weights: str | None = None
    external_bytes: ByteCount = 0
    # the graph in each reduced precision of ``GRAPH_VARIANTS`` (absent in engines exported before them)
    variants: dict[Annotated[str, one_of(GRAPH_VARIANTS)], FileEntry] = field(default_factory=dict)


@dataclass
class TorchWeightsEntry(FileEntry):
    """A network's weights; ``model_class`` "" for a network the torch backend cannot rebuild
    (an ONNX-only export of a module that is not an egsde_rt network)."""

    model_class: Annotated[str, one_of(("", *MODEL_CLASSES))] = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class PlanEntry(FileEntry):
    """A row of the plans table (``engine.plans``): a plan of one graph, built from ``source_sha256``
    for a machine (``device``, ``capability``, ``runtime``) in a precision and batch profile.
    ``size`` is recorded since this version; an older entry without it is checked by its sha256."""

    kind: Annotated[str, one_of(PLAN_KINDS)]
    graph: Annotated[str, one_of(GRAPH_NAMES)]
    source_sha256: Sha256
    precision: str
    profile: BatchProfile
    device: Annotated[str, one_of(PLAN_DEVICES)]
    capability: str
    runtime: str
    built: str  # an ISO 8601 time (UTC): the newest plan of a graph wins
    validation: Errors = field(default_factory=dict)


@dataclass
class ScheduleSpec:
    """The diffusion schedule the networks were trained with (``schedule.Schedule.create``'s arguments)."""

    kind: Annotated[str, one_of(BETA_SCHEDULES)]
    beta_start: float
    beta_end: float
    num_timesteps: Positive

    def check(self) -> None:
        """A ``ConfigError`` unless these make a schedule (``schedule.beta_schedule``)."""
        beta_schedule(self.kind, beta_start=self.beta_start, beta_end=self.beta_end, num_timesteps=self.num_timesteps)

    def create(self) -> Schedule:
        return Schedule.create(self.kind, beta_start=self.beta_start, beta_end=self.beta_end,
                               num_timesteps=self.num_timesteps)


@dataclass
class ExportInfo:
    """What exported the engine (for ``egsde-rt info``)."""

    torch: str
    date: str
    onnx: str | None = None
    opset: int | None = None
    formats: list[Annotated[str, one_of(EXPORT_FORMATS)]] | None = None


@dataclass
class DistilledInfo:
    """What a distilled engine was distilled from: its teacher (``teacher_identity`` of the
    teacher's manifest), the stage (1: the guided eps, any run; 2: the run of its settings), and
    the teacher's settings (``EGSDESettings.to_dict()``: the ls and li the student is tied to) and preset."""

    teacher: Sha256
    stage: Annotated[int, one_of(DISTILLATION_STAGES)]
    teacher_settings: dict[str, Any]
    teacher_preset: str | None = None


@dataclass
class Manifest:
    format_version: int
    egsde_rt_version: str
    image_size: Positive
    settings: dict[str, Any]
    schedule: ScheduleSpec
    graphs: dict[str, GraphEntry]
    export: ExportInfo
    torch_weights: dict[str, TorchWeightsEntry] = field(default_factory=dict)  # network name -> its weights file
    plans: dict[str, PlanEntry] = field(default_factory=dict)  # cache key -> plan (``engine.plans``)
    preset: str | None = None
    kind: Annotated[str, one_of(ENGINE_KINDS)] = "egsde"  # absent before distilled engines: "egsde"
    distilled: DistilledInfo | None = None  # a distilled engine's teacher and stage

    @property
    def method(self) -> EGSDESettings:
        """The engine's run settings (a distilled engine's: its student's run)."""
        return EGSDESettings(**self.settings)

    @property
    def contracts(self) -> tuple[GraphContract, ...]:
        """The graphs of an engine of this kind (``contracts.ENGINE_GRAPHS``): the graphs it lists
        (where it holds graphs), the networks whose weights it lists (``GraphContract.weights``),
        the plans ``egsde-rt build`` makes and the runners run."""
        return ENGINE_GRAPHS[self.kind]

    def to_json(self) -> str:
        """The manifest as the JSON ``typed_json.parse`` reads back (no NaN or Infinity)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def write(self, directory: str | os.PathLike) -> None:
        """Write (or replace) ``directory``'s manifest atomically (``write_atomically``); a change
        to the manifest of an engine others may change too goes through ``update_manifest``."""
        write_atomically(Path(directory) / MANIFEST_FILE, self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "Manifest":
        """The manifest in ``data`` with every field checked; an ``EngineDirError`` naming the first bad one."""
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version not in READABLE_VERSIONS:
            raise EngineDirError(
                f"{where}: engine format version {version} is not supported "
                f"(this egsde-rt reads versions {', '.join(map(str, READABLE_VERSIONS))}): export the engine again "
                "with this egsde-rt (`egsde-rt export ...`)"
            )
        if isinstance(data.get("plans"), dict):  # plans of the first format, unused since: left out
            data = {**data, "plans": {key: plan for key, plan in data["plans"].items()
                                      if not (isinstance(plan, dict) and "kind" not in plan
                                              and LEGACY_PLAN_FIELDS <= plan.keys())}}
        try:
            manifest = typed_json.read(cls, data, document="the manifest")
        except typed_json.ShapeError as err:
            raise EngineDirError(f"{where}: malformed manifest: {err}; export the engine again") from None
        manifest._check_values(where)
        return manifest

    def _check_values(self, where: str) -> None:
        """What the types do not say: valid settings and schedule, the graphs and weights a format
        needs, and references between entries."""
        try:
            self.schedule.check()
            self.method.check_fits(self.image_size, self.schedule.num_timesteps)  # also validates the settings
        except (ConfigError, TypeError, ValueError, ArithmeticError) as err:
            raise EngineDirError(f"{where}: malformed manifest: {err}; export the engine again") from None
        self._check_kind(where)
        if not self.graphs and not self.torch_weights:
            raise EngineDirError(f"{where}: the manifest lists neither ONNX graphs nor torch weights; "
                                 "export the engine again")
        for kind, names, listed in (("graph", [c.name for c in self.contracts], self.graphs),
                                    ("torch weights", [c.weights for c in self.contracts], self.torch_weights)):
            for name in names:
                if listed and name not in listed:
                    raise EngineDirError(f"{where}: the manifest of this {self.kind} engine lists no '{name}' {kind}")
        for name, graph in self.graphs.items():
            if graph.weights is not None and graph.weights not in self.torch_weights:
                raise EngineDirError(f"{where}: the {name} graph reads its weights from '{graph.weights}', "
                                     "which the manifest does not list; export the engine again")
        own = [contract.name for contract in self.contracts]
        for key, plan in self.plans.items():
            if plan.graph not in own:
                raise EngineDirError(f"{where}: plans.{key} is a plan of the {plan.graph} graph, which a {self.kind} "
                                     f"engine does not have (its graphs: {own}); export the engine again")

    def _check_kind(self, where: str) -> None:
        """A distilled engine names its teacher and runs no expert; an egsde engine names no teacher."""
        if self.kind == "egsde":
            if self.distilled is not None:
                raise EngineDirError(f"{where}: an egsde engine with a 'distilled' entry (only a distilled engine, "
                                     "kind \"distilled\", names a teacher): export the engine again")
            return
        if self.distilled is None:
            raise EngineDirError(f"{where}: a distilled engine that names no teacher (its manifest has no "
                                 "'distilled' entry): export the student again (export_student)")
        method = self.method
        if method.ls or (method.li and method.lowpass == "gradient"):
            raise EngineDirError(
                f"{where}: a distilled engine whose settings run an expert (ls={method.ls}, li={method.li}, "
                f"lowpass={method.lowpass}): its student has the experts folded in, so its run needs ls=0, and li=0 "
                "unless lowpass is implicit or exact; export the student again with its run's settings")
        try:
            EGSDESettings(**self.distilled.teacher_settings)
        except (ConfigError, TypeError, ValueError, ArithmeticError) as err:
            raise EngineDirError(f"{where}: malformed manifest: distilled.teacher_settings: {err}; export the "
                                 "student again") from None

    def listed_files(self) -> dict[str, FileEntry]:
        """{the manifest field that names it ("graphs.score"): entry} of every file the manifest lists,
        plans included."""
        return {**{f"graphs.{k}": e for k, e in self.graphs.items()},
                **{f"graphs.{k}.variants.{p}": v for k, e in self.graphs.items() for p, v in e.variants.items()},
                **{f"torch_weights.{k}": e for k, e in self.torch_weights.items()},
                **{f"plans.{k}": e for k, e in self.plans.items()}}


@dataclass
class EngineDir:
    path: Path
    manifest: Manifest
    verify: str = "cached"  # the level its files and plans are verified at (``verification.VERIFY_LEVELS``)

    def file(self, relative: str, entry: str = "a file entry") -> Path:
        """The path of a name inside the engine directory (``confinement.confined``; ``entry``
        names the manifest field, for messages)."""
        return confined(self.path, relative, entry)

    def verified(self, entry: FileEntry, name: str, fix: str = "export the engine again") -> VerifiedFile:
        """A listed file, checked at the engine's level (``verification.verify_file``; ``name``: the
        manifest field, e.g. "plans.<key>"): its path, and ``read()`` for its bytes checked again as
        they are read; an ``EngineDirError`` saying ``fix`` otherwise."""
        path = verify_file(self.path, entry.file, entry.sha256, entry.size, self.verify, entry=f"{name}.file",
                           fix=fix)
        return VerifiedFile(path, entry.sha256 if self.verify != "size" else None, entry.size, fix)

    @property
    def formats(self) -> tuple:
        """What the engine holds, of ``EXPORT_FORMATS``."""
        weights = self.manifest.torch_weights
        held = {"onnx": bool(self.manifest.graphs),
                "torch": bool(weights) and all(entry.model_class for entry in weights.values())}
        return tuple(name for name in EXPORT_FORMATS if held[name])

    def require_graphs(self, backend: str) -> None:
        """Raise ``MissingGraphsError`` unless the engine holds the ONNX graphs ``backend`` runs."""
        if "onnx" not in self.formats:
            raise MissingGraphsError(
                f"{self.path}: this engine holds only torch weights (exported with --formats torch), and the "
                f"{backend} backend runs the ONNX graphs: export the engine again with them "
                "(`egsde-rt export ... --formats onnx torch`, or export_engine(..., formats=('onnx', 'torch'))), "
                "or use the torch or compiled backend")

    def graph_variant(self, name: str, precision: str = "fp32") -> tuple[str, FileEntry]:
        """(its manifest field, its entry) of graph ``name`` in ``precision``: the graph itself for
        fp32 and tf32, its variant (``GRAPH_VARIANTS``) otherwise; a ``MissingGraphsError`` naming
        the fix where the engine lacks it (exported before variants were written)."""
        self.require_graphs(f"a {precision} graph")
        graph = self.manifest.graphs[name]
        if precision not in GRAPH_VARIANTS:
            return f"graphs.{name}", graph
        if precision not in graph.variants:
            raise MissingGraphsError(
                f"{self.path}: this engine has no {precision} variant of its {name} graph (it was exported by an "
                "egsde-rt that wrote float32 graphs only): export the engine again (`egsde-rt export ...`), or run "
                "in fp32")
        return f"graphs.{name}.variants.{precision}", graph.variants[precision]

    def graph_file(self, name: str, precision: str = "fp32") -> Path:
        """The path of graph ``name`` in ``precision`` (``graph_variant``; verified at loading, as
        every listed file)."""
        field_name, entry = self.graph_variant(name, precision)
        return self.file(entry.file, f"{field_name}.file")

    @property
    def contracts(self) -> tuple[GraphContract, ...]:
        """The graphs of this engine (``Manifest.contracts``)."""
        return self.manifest.contracts

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    def schedule(self) -> Schedule:
        """The diffusion schedule the engine's networks were trained with, from its manifest: the
        one place an engine's schedule is built (the Translator's, the benchmark's eager reference)."""
        return self.manifest.schedule.create()


@contextlib.contextmanager
def manifest_lock(directory: str | os.PathLike):
    """Hold the engine directory's manifest lock: an exclusive ``fcntl.flock`` on ``MANIFEST_LOCK``
    in it (created where missing; never followed if it is a symbolic link), released on exit."""
    lock = Path(directory) / MANIFEST_LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise EngineDirError(f"{lock}: cannot open the engine directory's lock ({err.strerror}): the directory "
                             "must be writable to record plans in it") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_manifest(directory: str | os.PathLike, change: Callable[[Manifest], None]) -> Manifest:
    """Apply ``change`` to the manifest as it is on disk now and write it back, holding the
    directory's lock throughout (``manifest_lock``): concurrent updates (builds of plans) each keep
    the others' entries. Returns the manifest written."""
    with manifest_lock(directory):
        manifest = read_manifest(Path(directory))
        change(manifest)
        manifest.write(directory)
    return manifest


def read_manifest(path: Path) -> Manifest:
    """The manifest of the engine directory at ``path``, parsed strictly and every field checked;
    an ``EngineDirError`` naming the file for whatever fails to read or parse."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise EngineDirError(f"{path}: no {MANIFEST_FILE}: not an engine directory (run `egsde-rt export`)")
    try:
        with open(manifest_path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise EngineDirError(f"{manifest_path}: cannot read the manifest ({err.strerror})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise EngineDirError(f"{manifest_path}: corrupt manifest: larger than {MAX_MANIFEST_BYTES >> 20} MiB (what "
                             "egsde-rt writes is kilobytes); export the engine again")
    try:
        document = typed_json.parse(data)
    except typed_json.ParseError as err:
        raise EngineDirError(f"{manifest_path}: corrupt manifest: {err}; export the engine again") from None
    if not isinstance(document, dict):
        raise EngineDirError(f"{manifest_path}: corrupt manifest: not a JSON object")
    return Manifest.from_dict(document, str(manifest_path))


def load_engine_dir(path: str | os.PathLike, *, verify: str = "cached", check_hashes: bool = True) -> EngineDir:
    """Read and check an engine directory (see the module docstring); ``verify``: one of
    ``verification.VERIFY_LEVELS`` (``check_hashes=False`` is ``verify="size"``)."""
    level = check_level(verify) if check_hashes else "size"
    path = Path(path)
    if not path.is_dir():
        raise EngineDirError(f"engine directory not found: {path}")
    engine = EngineDir(path, read_manifest(path), level)
    for name, entry in engine.manifest.listed_files().items():
        if name.startswith("plans."):
            engine.file(entry.file, f"{name}.file")  # confined now; verified before a runner gets it
        else:
            engine.verified(entry, name)
    return engine


# Fields of the manifest added after the first teacher identities were recorded: left out of the
# identity at their defaults, so that an engine's identity is the same whichever egsde-rt reads it.
_LATER_DEFAULTS = {"kind": "egsde", "distilled": None}


def teacher_identity(manifest: Manifest) -> str:
    """The sha256 a distilled engine names its teacher by: of the teacher's manifest as JSON, its
    plans table left out (``egsde-rt build`` adds plans per machine; the networks, settings and
    graphs are what the student was distilled from)."""
    content = asdict(manifest)
    content.pop("plans", None)
    for name, default in _LATER_DEFAULTS.items():
        if content.get(name) == default:
            content.pop(name)
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=False).encode()).hexdigest()


def check_teacher(student: EngineDir, teacher: EngineDir) -> None:
    """An ``EngineDirError`` unless ``student`` is a distilled engine whose teacher is ``teacher``:
    the sha256 it names its teacher by is ``teacher_identity(teacher.manifest)`` (plans, which
    ``egsde-rt build`` adds, do not count)."""
    info = student.manifest.distilled
    if info is None:
        raise EngineDirError(f"{student.path}: a {student.manifest.kind} engine, not a distilled one: it names no "
                             "teacher")
    identity = teacher_identity(teacher.manifest)
    if info.teacher != identity:
        raise EngineDirError(
            f"{student.path}: a foreign teacher: the student was distilled from another engine (its teacher is "
            f"{info.teacher}, and {teacher.path} is {identity}); pair it with the engine it was distilled from, or "
            "distill a student of this one")
