"""The engine directory format: a self-describing folder of exported graphs and their manifest.

Format version 2 (what export writes):
```
engine_dir/
  manifest.json     format_version, image size, method settings, schedule, files with their size
                    and sha256, graph contracts, validation errors, export versions, plans
  weights/score.safetensors   the networks' weights, each tensor stored once: the torch backend
  weights/dse.safetensors     loads them, and the ONNX graphs reference them as external data
  score.onnx        (x [B,3,H,W], t [B]) -> eps [B,3,H,W]            (the graph only: its weights
  dse_grad.onnx     (y, x_t, t) -> d/dy sum_batch S1(F(y, t), F(x_t, t))  are in weights/)
  plans/            compiled plans built by `egsde-rt build` (optional; see engine.plans)
```
Format version 1 (still read): self-contained ``score.onnx`` and ``dse_grad.onnx`` and state
dicts in ``torch/score.pt`` and ``torch/dse.pt`` (every weight stored two or three times).

An engine holds the ONNX graphs, the torch weights, or both (``EXPORT_FORMATS``). In version 2 the
weights are always there (the graphs read them); "torch" means that the networks can be rebuilt
from them (``model_class`` and ``config`` recorded, as for every egsde_rt network), so the torch
and compiled backends run the engine. A torch-only engine (``egsde-rt export --formats torch``)
has no graphs and is written in seconds; the ONNX Runtime and TensorRT backends need the graphs
(``EngineDir.require_graphs`` refuses with ``MissingGraphsError``, saying how to export them).
``load_engine_dir`` checks the format version and every listed file (``engine.verification``:
sizes always, sha256 once per machine and file, every byte with ``verify="full"``), and raises
``EngineDirError`` naming the problem otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError, EngineDirError, MissingGraphsError
from ..settings import EGSDESettings
from .verification import check_level, verify_file

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS_DIR = "weights"
MANIFEST_FILE = "manifest.json"
# What an engine may hold: the ONNX graphs (ONNX Runtime, TensorRT; also the source of compiled
# plans' keys) and the torch weights (torch backend, compiled plans); one or both.
EXPORT_FORMATS = ("onnx", "torch")
GRAPH_NAMES = ("score", "dse_grad")
WEIGHT_NAMES = ("score", "dse")
# The manifest's fields and their JSON types (checked on loading: a wrong type is a clear error).
FIELD_TYPES = {"format_version": int, "egsde_rt_version": str, "image_size": int, "settings": dict, "schedule": dict,
               "graphs": dict, "export": dict, "torch_weights": dict, "plans": dict}
JSON_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object"}


@dataclass
class FileEntry:
    file: str
    sha256: str
    size: int | None = None  # bytes (format 2; None in format 1)


@dataclass
class GraphEntry(FileEntry):
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)  # batch -> {"max_abs": ..., "max_rel": ...}
    # format 2: the torch_weights entry whose file holds the graph's external data, and how many
    # of the graph's initializer bytes are there (the rest, small constants, are in the graph)
    weights: str | None = None
    external_bytes: int = 0


@dataclass
class TorchWeightsEntry(FileEntry):
    """A network's weights; ``model_class`` "" for a network the torch backend cannot rebuild
    (an ONNX-only export of a module that is not an egsde_rt network)."""

    model_class: str = ""
    config: dict = field(default_factory=dict)


@dataclass
class Manifest:
    format_version: int
    egsde_rt_version: str
    image_size: int
    settings: dict
    schedule: dict
    graphs: dict  # name -> GraphEntry
    export: dict  # torch, onnx, opset, date
    torch_weights: dict = field(default_factory=dict)  # "score" / "dse" -> TorchWeightsEntry (the weights files)
    plans: dict = field(default_factory=dict)  # cache key -> {"file", "sha256", "graph", ...}
    preset: str | None = None

    @property
    def method(self) -> EGSDESettings:
        return EGSDESettings(**self.settings)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, directory: str | os.PathLike) -> None:
        path = Path(directory) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "Manifest":
        required = ("format_version", "egsde_rt_version", "image_size", "settings", "schedule", "graphs", "export")
        missing = [k for k in required if k not in data]
        if missing:
            raise EngineDirError(f"{where}: manifest lacks {missing}")
        for name, kind in FIELD_TYPES.items():
            if name in data and not (isinstance(data[name], kind) and not isinstance(data[name], bool)):
                raise EngineDirError(f"{where}: malformed manifest: {name} must be {JSON_TYPE_NAMES[kind]}, "
                                     f"got {data[name]!r}; export the engine again")
        if data["image_size"] < 1:
            raise EngineDirError(f"{where}: malformed manifest: image_size must be positive, got {data['image_size']}")
        if data["format_version"] not in READABLE_VERSIONS:
            raise EngineDirError(
                f"{where}: engine format version {data['format_version']} is not supported "
                f"(this egsde-rt reads versions {', '.join(map(str, READABLE_VERSIONS))}): export the engine again "
                "with this egsde-rt (`egsde-rt export ...`)"
            )
        try:
            graphs = {k: GraphEntry(**v) for k, v in data["graphs"].items()}
            weights = {k: TorchWeightsEntry(**v) for k, v in data.get("torch_weights", {}).items()}
            manifest = cls(**{**data, "graphs": graphs, "torch_weights": weights})
            manifest.method  # validates the settings
        except (TypeError, AttributeError, ConfigError) as err:
            raise EngineDirError(f"{where}: malformed manifest: {err}") from None
        return manifest


@dataclass
class EngineDir:
    path: Path
    manifest: Manifest

    def file(self, relative: str) -> Path:
        return self.path / relative

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

    @property
    def image_size(self) -> int:
        return self.manifest.image_size


def load_engine_dir(path: str | os.PathLike, *, verify: str = "cached", check_hashes: bool = True) -> EngineDir:
    """Read and check an engine directory (see the module docstring); ``verify``: one of
    ``verification.VERIFY_LEVELS`` (``check_hashes=False`` is ``verify="size"``)."""
    level = check_level(verify) if check_hashes else "size"
    path = Path(path)
    if not path.is_dir():
        raise EngineDirError(f"engine directory not found: {path}")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise EngineDirError(f"{path}: no {MANIFEST_FILE}: not an engine directory (run `egsde-rt export`)")
    try:
        data = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EngineDirError(f"{manifest_path}: corrupt manifest: {err}") from None
    if not isinstance(data, dict):
        raise EngineDirError(f"{manifest_path}: corrupt manifest: not a JSON object")
    manifest = Manifest.from_dict(data, str(manifest_path))
    if not manifest.graphs and not manifest.torch_weights:
        raise EngineDirError(f"{manifest_path}: the manifest lists neither ONNX graphs nor torch weights; "
                             "export the engine again")
    for kind, names, listed in (("graph", GRAPH_NAMES, manifest.graphs),
                                ("torch weights", WEIGHT_NAMES, manifest.torch_weights)):
        for name in names:
            if listed and name not in listed:
                raise EngineDirError(f"{manifest_path}: the manifest lists no '{name}' {kind}")
    for name, graph in manifest.graphs.items():
        if graph.weights is not None and graph.weights not in manifest.torch_weights:
            raise EngineDirError(f"{manifest_path}: the {name} graph reads its weights from '{graph.weights}', "
                                 "which the manifest does not list; export the engine again")
    for entry in [*manifest.graphs.values(), *manifest.torch_weights.values()]:
        verify_file(path, entry.file, entry.sha256, entry.size, level)
    return EngineDir(path, manifest)
