"""Loading checkpoints safely: PyTorch files by ``torch.load(weights_only=True)``, safetensors
files (``.safetensors``, or any file with a safetensors header) by ``safetensors.torch.load_file``
(tensors only, by construction).

Accepted layouts of a PyTorch file: a plain state dict; a state dict whose keys carry a ``module.`` prefix
(``DataParallel``); the ddim list format ``[state_dict, optimizer, epoch, step, (ema)]``
(the first element, or the last with ``ema=True``); a dict with a ``state_dict`` entry.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError

_LISTED = 8  # keys named per category in a mismatch message


def read_state_dict(path: str | os.PathLike, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict stored at ``path``, without ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        return _unwrap(_read_safetensors(path), path, ema)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled objects or code, not only tensors "
            f"(egsde-rt loads checkpoints with weights_only=True). Details: {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {err}"
        ) from None
    return _unwrap(obj, path, ema)


def is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` file, or one that starts as safetensors do (a little-endian header
    length, then a JSON object); PyTorch files are zip archives ("PK")."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None


def _unwrap(obj, path: Path, ema: bool) -> dict[str, torch.Tensor]:
    if isinstance(obj, (list, tuple)):
        dicts = [o for o in obj if isinstance(o, dict)]
        if not dicts:
            raise CheckpointError(f"{path}: a list checkpoint without any state dict in it")
        obj = obj[-1] if ema else obj[0]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: the {'last' if ema else 'first'} list element is not a state dict")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        odd = [k for k in obj if k not in tensors][:_LISTED]
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {odd}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ``CheckpointMismatchError`` naming missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mis_shaped):
        return

    def listed(items):
        more = f" ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
        return ", ".join(map(str, items[:_LISTED])) + more

    lines = [f"{source} does not fit {type(model).__name__} (wrong architecture or config?):"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {listed(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {listed(unexpected)}")
    if mis_shaped:
        shapes = [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in mis_shaped]
        lines.append(f"  mis-shaped keys ({len(mis_shaped)}): {listed(shapes)}")
    raise CheckpointMismatchError("\n".join(lines), missing, unexpected, mis_shaped)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, ema: bool = False) -> nn.Module:
    """Load the checkpoint at ``path`` into ``model`` (strict) and return the model."""
    state = read_state_dict(path, ema=ema)
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return model
