"""An engine's weights files: one safetensors file per network (``weights/score.safetensors``,
``weights/dse.safetensors``), each tensor stored once.

The torch backend loads them as state dicts (``models.load_checkpoint``); the ONNX graphs
reference the same bytes as ONNX external data (location, offset, length), which is possible
because a safetensors file stores each tensor as contiguous little-endian bytes at a recorded
offset: an 8-byte header length, a JSON header (name -> dtype, shape, data_offsets), then the data.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import EngineDirError
from . import typed_json


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes are in a weights file (``offset`` from the file's start)."""

    name: str
    offset: int
    length: int


def save_weights(state: dict, path: str | os.PathLike) -> None:
    """Write a state dict as safetensors (contiguous copies only of non-contiguous tensors)."""
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous() for name, t in state.items()}, str(path))


def stored_tensors(path: str | os.PathLike) -> dict[str, StoredTensor]:
    """{tensor name: where its bytes are} from a safetensors file's header (parsed strictly,
    ``typed_json.parse``); an ``EngineDirError`` naming the file for a header that is not one."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise EngineDirError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > os.fstat(f.fileno()).st_size - 8:
            raise EngineDirError(f"{path}: not a safetensors file (its header claims {header_len} bytes, more than "
                                 "the file holds)")
        try:
            header = typed_json.parse(f.read(header_len))
            base = 8 + header_len
            return {name: StoredTensor(name, base + int(info["data_offsets"][0]),
                                       int(info["data_offsets"][1]) - int(info["data_offsets"][0]))
                    for name, info in header.items() if name != "__metadata__"}
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:  # typed_json.ParseError too
            raise EngineDirError(f"{path}: not a safetensors file (its header: {type(err).__name__}: {err})") from None


def tensor_key(t: torch.Tensor) -> tuple:
    """What identifies a tensor's bytes in memory (storage address, dtype, shape, strides)."""
    return t.data_ptr(), t.dtype, tuple(t.shape), t.stride()
