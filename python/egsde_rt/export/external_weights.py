"""An exported ONNX model's weights pointed at the engine's weights file (ONNX external data).

The dynamo exporter's initializers wrap the very tensors of the network (or, for the traced DSE
gradient, tensors equal to them); each one that is a tensor of the network's state dict becomes
an external tensor at that tensor's offset in ``weights/<network>.safetensors``, so the graph
file holds the graph and small constants only, and every weight is stored once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..engine.weights_file import StoredTensor, stored_tensors, tensor_key

INLINE_LIMIT = 1 << 16  # bytes: an initializer this large that is no weight is reported as inline


def _content_key(t: torch.Tensor) -> tuple:
    data = t.detach().contiguous().view(-1).view(torch.uint8).numpy()
    return t.dtype, tuple(t.shape), hashlib.blake2b(data, digest_size=16).digest()


class WeightIndex:
    """Finds where a tensor equal to one of ``state``'s is stored in the weights file at ``path``:
    by memory identity first, by content (dtype, shape and a hash of the bytes) otherwise."""

    def __init__(self, state: dict, path: Path):
        stored = stored_tensors(path)
        self.state, self.stored = state, stored
        self.by_identity = {tensor_key(t): stored[name] for name, t in state.items() if t.is_contiguous()}
        self._by_content: dict | None = None

    def find(self, t: torch.Tensor) -> StoredTensor | None:
        found = self.by_identity.get(tensor_key(t)) if t.is_contiguous() else None
        if found is not None or t.numel() == 0:
            return found
        if self._by_content is None:
            self._by_content = {_content_key(v): self.stored[name] for name, v in self.state.items() if v.numel()}
        return self._by_content.get(_content_key(t))


def link_initializers(model, index: WeightIndex, location: str, base_dir: Path) -> dict:
    """Replace ``model``'s (an ``onnx_ir.Model``) initializers that are weights by external
    tensors at ``location`` (relative to ``base_dir``, the graph's folder); returns
    {"external_bytes", "inline_bytes", "inline_large": [names of inline initializers of at least
    ``INLINE_LIMIT`` bytes]}."""
    import onnx_ir as ir

    report = {"external_bytes": 0, "inline_bytes": 0, "inline_large": []}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        raw = getattr(tensor, "raw", None)
        stored = index.find(raw) if isinstance(raw, torch.Tensor) else None
        if stored is None:
            nbytes = tensor.nbytes if tensor is not None else 0
            report["inline_bytes"] += nbytes
            if nbytes >= INLINE_LIMIT:
                report["inline_large"].append(name)
            continue
        value.const_value = ir.ExternalTensor(location, stored.offset, stored.length, tensor.dtype,
                                              shape=tensor.shape, name=name, base_dir=base_dir)
        report["external_bytes"] += stored.length
    return report
