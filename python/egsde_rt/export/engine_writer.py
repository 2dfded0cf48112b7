"""Writing an engine directory, whatever its kind (``export_engine``: an egsde engine;
``student_engine.export_student``: a distilled one).

``write_engine(out_dir, fill)`` writes into a staging directory beside ``out_dir`` (``fill`` writes
the files and returns the manifest), writes the manifest there, reads the directory back
(``load_engine_dir``: what was written must load; files were hashed as they were written, so this
reads nothing twice) and only then renames it to ``out_dir``: a failed or interrupted export
leaves nothing under that name. The pieces every kind writes alike: each network's weights once
(``save_weights_stage``), a graph's manifest entry after its validation against PyTorch
(``validated_graph``) and its reduced-precision variants (``write_variants``), and the manifest
(``new_manifest``).
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .._version import __version__
from ..engine import EXPORT_FORMATS, FORMAT_VERSION, GraphContract, Manifest, load_engine_dir
from ..engine.format import (GRAPH_VARIANTS, WEIGHTS_DIR, ExportInfo, FileEntry, GraphEntry, ScheduleSpec,
                             TorchWeightsEntry)
from ..engine.verification import hash_and_record
from ..engine.weights_file import save_weights
from ..errors import ConfigError, EgsdeError
from ..method.settings import EGSDESettings
from ..models import MODEL_CLASSES
from .onnx_graphs import check_onnx
from .progress import StageObserver, stage
from .reduced_precision import write_variant

DEFAULT_OPSET = 18


def check_formats(formats) -> tuple:
    """``formats`` as a tuple in ``EXPORT_FORMATS`` order; a ``ConfigError`` unless it names one or both."""
    if isinstance(formats, str):
        formats = (formats,)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ConfigError(f"export formats must be one or both of {EXPORT_FORMATS}, got {list(formats)}")
    return tuple(name for name in EXPORT_FORMATS if name in formats)


def check_opset(opset: int) -> None:
    """A ``ConfigError`` unless the graphs can be exported in ONNX ``opset``."""
    if opset < 18:
        raise ConfigError(f"opset must be >= 18, got {opset}")


def write_engine(out_dir, fill: Callable[[Path], Manifest], *, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> Path:
    """Write an engine directory to ``out_dir`` atomically (see the module docstring); its path.
    ``fill(staging)`` writes the files into ``staging`` and returns their manifest."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise EgsdeError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fill(staging).write(staging)
        load_engine_dir(staging)  # what we wrote must read back (files hashed as written: no second read)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"engine written to {out_dir}")
    return out_dir


def new_manifest(*, image_size: int, settings: EGSDESettings, schedule: ScheduleSpec, graphs: dict, weights: dict,
                 formats: tuple, opset: int, preset: str | None, **kind) -> Manifest:
    """The manifest of an engine written now with this egsde-rt, torch and onnx; ``kind``: the
    ``kind`` and ``distilled`` fields of a distilled engine."""
    onnx_version = None
    if "onnx" in formats:
        import onnx

        onnx_version = onnx.__version__
    return Manifest(
        format_version=FORMAT_VERSION, egsde_rt_version=__version__, image_size=image_size,
        settings=settings.to_dict(), schedule=schedule, graphs=graphs, torch_weights=weights,
        export=ExportInfo(torch=torch.__version__, onnx=onnx_version, opset=opset if "onnx" in formats else None,
                          formats=list(formats),
                          date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
        preset=preset, **kind)


def weights_file(name: str) -> str:
    """The file of network ``name``'s weights in an engine directory."""
    return f"{WEIGHTS_DIR}/{name}.safetensors"


def save_weights_stage(root: Path, networks: dict, torch_backend: bool,
                       on_stage: StageObserver | None = None) -> tuple[dict, dict]:
    """The stage "weights": each network of ``networks`` ({name: network}) written once as
    ``weights/<name>.safetensors``; ({name: manifest entry}, {name: the state dict written})."""
    entries, states = {}, {}
    with stage("weights", len(networks), on_stage) as bar:
        for name, model in networks.items():
            entries[name], states[name] = _save_network(root, name, model, torch_backend)
            bar.update()
    return entries, states


def _save_network(root: Path, name: str, model, torch_backend: bool) -> tuple[TorchWeightsEntry, dict]:
    """(the manifest entry, the state dict written) of ``weights/<name>.safetensors``."""
    class_name = type(model).__name__
    ours = class_name in MODEL_CLASSES and hasattr(model, "config")
    if torch_backend and not ours:
        raise EgsdeError(f"{name}: only egsde_rt.models networks can be saved for the torch backend "
                         f"(got {class_name}); export the ONNX graphs only: formats=('onnx',)")
    file = root / weights_file(name)
    state = model.state_dict()
    save_weights(state, file)
    rebuildable = ours and torch_backend  # "torch" in formats: the torch backend rebuilds the network
    entry = TorchWeightsEntry(file=weights_file(name), sha256=hash_and_record(file), size=file.stat().st_size,
                              model_class=class_name if rebuildable else "",
                              config=model.config if rebuildable else {})
    return entry, state


def validated_graph(root: Path, contract: GraphContract, references: dict, image_size: int, external_bytes: int,
                    log: Callable[[str], None], on_batch=None) -> GraphEntry:
    """The manifest entry of the graph written at ``root / contract.file``, once it reproduces
    ``references`` (``onnx_graphs.reference_outputs``; ``check_onnx`` raises
    ``ExportValidationError`` otherwise): its errors recorded, its weights in the weights file
    of ``contract.weights``."""
    errors = check_onnx(root / contract.file, contract, references, on_batch=on_batch)
    log(f"  {contract.file} validated: {errors}")
    file = root / contract.file
    return GraphEntry(file=contract.file, sha256=hash_and_record(file), size=file.stat().st_size,
                      inputs=list(contract.inputs), outputs=list(contract.outputs), shapes=contract.shapes(image_size),
                      validation=errors, weights=contract.weights, external_bytes=external_bytes)


def write_variants(root: Path, contract: GraphContract, log: Callable[[str], None]) -> dict:
    """The graph's reduced-precision variants (``reduced_precision``), written beside it: their
    manifest entries."""
    variants = {}
    for precision in GRAPH_VARIANTS:
        name = variant_file(contract, precision)
        path = root / name
        report = write_variant(root / contract.file, precision, path)
        variants[precision] = FileEntry(file=name, sha256=hash_and_record(path), size=path.stat().st_size)
        log(f"  {name}: {report['half_ops']} ops in {precision}, {report['time_ops']} on the time path in float32")
    return variants


def variant_file(contract: GraphContract, precision: str) -> str:
    """The file name of a graph's variant in ``precision`` ("score.fp16.onnx")."""
    return contract.file.replace(".onnx", f".{precision}.onnx")
