"""What an export costs: ``egsde-rt bench --export``.

The export runs in a child process (``python -m egsde_rt.bench.export_cost``), as a user runs
``egsde-rt export``: the preset's networks built, the two checkpoints loaded, the engine
exported. The child measures its peak resident memory exactly (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` at each stage boundary, the running maximum kept: each stage's peak
and the whole process's), and the time of each stage (``export.progress``); the parent
records the engine directory's size against the weights' size, and the time to load the engine
(``load_engine_dir``) the first time on this machine (every file hashed) and after (cached).

Checkpoints: a preset's networks with seeded random non-degenerate weights
(``models.nonzero_random_weights``), written once into the user cache, as ``.pt`` (the
official format) or ``.safetensors``; ``demo``: the demo's shipped weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .._version import __version__
from ..engine import load_engine_dir
from ..engine.verification import forget
from ..errors import EgsdeError
from ..user_cache import cache_root

CHECKPOINT_FORMATS = ("pt", "safetensors")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise EgsdeError(f"no {field} in /proc/self/status")


class StageMemory:
    """The ``on_stage`` observer of an export: each stage's seconds and peak RSS (MB), and of what
    runs before the first ("setup": imports, networks built, checkpoints loaded) and after each
    ("after validation": the manifest, the read-back check); the process's peak over its whole
    life (``peak_mb``)."""

    def __init__(self):
        self.stages: dict = {}
        self.peak_mb = 0.0
        self._begun = time.perf_counter()
        self._between = "setup"  # what ran since the last boundary

    def _boundary(self) -> float:
        """The peak since the last boundary, which is reset."""
        peak = _status_mb("VmHWM")
        self.peak_mb = max(self.peak_mb, peak)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # no reset here: every later peak is the process's so far
            pass
        return peak

    def _record(self, name: str) -> None:
        now = time.perf_counter()
        peak = self._boundary()
        entry = self.stages.setdefault(name, {"seconds": 0.0, "peak_rss_mb": 0.0})
        entry["seconds"] += now - self._begun
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], peak)
        self._begun = now

    def __call__(self, name: str, event: str) -> None:
        if event == "begin":
            self._record(self._between)
        else:
            self._record(name)
            self._between = f"after {name}"

    def finish(self) -> dict:
        self._record(self._between)
        return {"stages": self.stages, "peak_rss_mb": self.peak_mb}


def write_checkpoint(model, path: Path) -> Path:
    """``model``'s state dict at ``path`` (``.pt`` or ``.safetensors``, by its suffix), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".safetensors":
        from ..engine.weights_file import save_weights

        save_weights(model.state_dict(), tmp)
    else:
        import torch

        torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def preset_spec(preset: str, checkpoint_format: str = "pt", seed: int = 0,
                log: Callable[[str], None] = print) -> dict:
    """The export a user runs for ``preset`` (``demo``: the demo's shipped networks), with
    checkpoints of random non-degenerate weights written once into the user cache."""
    from ..models import build_preset_models, nonzero_random_weights
    from ..method.presets import get_preset

    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise EgsdeError(f"checkpoint format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}")
    if preset == "demo":
        from ..demo import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, DEMO_SETTINGS, weights_path

        return {"name": "demo", "image_size": DEMO_SCORE_CONFIG["image_size"], "settings": DEMO_SETTINGS.to_dict(),
                "score": {"class": "ADMUNet", "config": DEMO_SCORE_CONFIG, "checkpoint": str(weights_path("score"))},
                "dse": {"class": "DSE", "config": DEMO_DSE_CONFIG, "checkpoint": str(weights_path("dse"))}}
    chosen = get_preset(preset)
    folder = cache_root() / f"bench-checkpoints-{preset}-seed{seed}"
    paths = (folder / f"score.{checkpoint_format}", folder / f"dse.{checkpoint_format}")
    if not all(p.is_file() for p in paths):
        log(f"writing {preset} checkpoints with random non-degenerate weights (seed {seed}) to {folder} (once) ...")
        folder.mkdir(parents=True, exist_ok=True)
        for path, model, offset in zip(paths, build_preset_models(chosen), (0, 1)):
            write_checkpoint(nonzero_random_weights(model, seed + offset), path)
    return {"name": preset, "image_size": chosen.image_size, "settings": chosen.settings.to_dict(),
            "score": {"class": chosen.score_class, "config": chosen.score_config, "checkpoint": str(paths[0])},
            "dse": {"class": "DSE", "config": chosen.dse_config, "checkpoint": str(paths[1])}}


def _files_mb(root: Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): round(p.stat().st_size / 2**20, 2) for p in files}


def _load_seconds(engine: Path, **options) -> float:
    start = time.perf_counter()
    load_engine_dir(engine, **options)
    return time.perf_counter() - start


def _forget_verified(engine: Path) -> None:
    """Drop this machine's record of the engine's files (as on a machine that never loaded it)."""
    for file in engine.rglob("*"):
        if file.is_file():
            forget(file)


def run_export_bench(spec: dict, *, formats=("onnx", "torch"), work_dir: str | None = None, keep: bool = False,
                     log: Callable[[str], None] = print) -> dict:
    """Export ``spec`` (``preset_spec``'s form) in a child process; the record (see the module docstring)."""
    parent = Path(work_dir) if work_dir else cache_root()
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-export-", dir=parent))
    engine, spec_json, result_json = scratch / "engine", scratch / "spec.json", scratch / "result.json"
    spec_json.write_text(json.dumps({**spec, "formats": list(formats), "out": str(engine), "result": str(result_json)}))
    command = [sys.executable, "-m", "egsde_rt.bench.export_cost", str(spec_json)]
    load_before = os.getloadavg()
    log(f"exporting {spec['name']} in a child process: {' '.join(command[1:])}")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise EgsdeError(f"the export child failed (exit code {done.returncode})")
        child = json.loads(result_json.read_text())
        files = _files_mb(engine)
        _forget_verified(engine)
        first_load, cached_load = _load_seconds(engine), _load_seconds(engine)
        full_load = _load_seconds(engine, verify="full")
        record = {
            "name": spec["name"], "checkpoints": [spec["score"]["checkpoint"], spec["dse"]["checkpoint"]],
            "formats": list(formats),
            "seconds": seconds, "peak_rss_mb": child["peak_rss_mb"],
            "stages": child["stages"], "weights_mb": child["weights_mb"],
            "engine_mb": round(sum(files.values()), 2), "files_mb": files,
            "engine_over_weights": sum(files.values()) / child["weights_mb"],
            "load_seconds": {"first_on_this_machine": first_load, "cached": cached_load, "full_verify": full_load},
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "egsde_rt_version": __version__,
        }
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    if keep:
        record["engine_dir"] = str(engine)
    return record


def format_export(record: dict) -> str:
    lines = [f"export of {record['name']} ({', '.join(record['formats'])}): {record['seconds']:.1f} s, "
             f"peak RSS {record['peak_rss_mb']:.0f} MB",
             f"engine {record['engine_mb']:.1f} MB for {record['weights_mb']:.1f} MB of weights "
             f"({record['engine_over_weights']:.3f}x)",
             f"{'stage':16s} {'seconds':>8s} {'peak MB':>8s}"]
    for name, stage in record["stages"].items():
        lines.append(f"{name:16s} {stage['seconds']:8.1f} {stage['peak_rss_mb']:8.0f}")
    loads = record["load_seconds"]
    lines.append(f"load: first on this machine {loads['first_on_this_machine']:.2f} s, then {loads['cached']:.3f} s "
                 f"(full verification {loads['full_verify']:.2f} s)")
    lines.append(f"machine load average before / after: {record['loadavg_before'][0]:.2f} / "
                 f"{record['loadavg_after'][0]:.2f}")
    return "\n".join(lines)


def _child(spec_json: str) -> None:
    """The measured process: build the networks, load the checkpoints, export (as ``egsde-rt
    export`` does), with the stage observer; writes the result JSON the spec names."""
    memory = StageMemory()
    from ..export import export_engine
    from ..models import build_model, load_checkpoint
    from ..method.settings import EGSDESettings

    spec = json.loads(Path(spec_json).read_text())
    networks = []
    for name in ("score", "dse"):
        model = build_model(spec[name]["class"], spec[name]["config"])
        networks.append(load_checkpoint(model, spec[name]["checkpoint"]))
    engine = export_engine(*networks, spec["out"], image_size=spec["image_size"],
                           settings=EGSDESettings(**spec["settings"]), preset=spec["name"], formats=spec["formats"],
                           release_networks=True, on_stage=memory, log=lambda message: print(message, file=sys.stderr))
    del networks
    record = memory.finish()
    manifest = load_engine_dir(engine, verify="size").manifest
    record["weights_mb"] = sum(entry.size for entry in manifest.torch_weights.values()) / 2**20
    Path(spec["result"]).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    _child(sys.argv[1])
