"""Each graph of an engine: its file, input and output names, shapes (a dynamic batch) and sample inputs.

Export writes graphs to these contracts; runners bind buffers by these names. The graphs an engine
holds depend on its kind (``ENGINE_GRAPHS``): an ``egsde`` engine the score network and the DSE
input gradient, a ``distilled`` engine its student alone (``models.student``: the guided eps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCORE_FILE = "score.onnx"
DSE_GRAD_FILE = "dse_grad.onnx"
STUDENT_FILE = "student.onnx"
MAX_BATCH = 64


@dataclass(frozen=True)
class GraphContract:
    name: str
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    network: str = ""  # the network whose weights the graph reads (``weights/<network>.safetensors``); "": its name

    @property
    def weights(self) -> str:
        """The name of the network (its ``torch_weights`` entry) the graph is made from."""
        return self.network or self.name

    def sample_inputs(self, batch: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        images = [torch.randn(batch, 3, image_size, image_size, generator=g) for _ in self.inputs[:-1]]
        t = torch.rand(batch, generator=g) * 999.0
        return (*images, t)

    def shapes(self, image_size: int) -> dict:
        image = ["batch", 3, image_size, image_size]
        spec = {name: image for name in self.inputs[:-1]}
        spec[self.inputs[-1]] = ["batch"]
        spec.update({name: image for name in self.outputs})
        return spec


SCORE = GraphContract("score", SCORE_FILE, ("x", "t"), ("eps",))
DSE_GRAD = GraphContract("dse_grad", DSE_GRAD_FILE, ("y", "x_t", "t"), ("grad",), network="dse")
STUDENT = GraphContract("student", STUDENT_FILE, ("y", "x_t", "t"), ("eps",))
CONTRACTS = {c.name: c for c in (SCORE, DSE_GRAD, STUDENT)}
# The graphs of each kind of engine (``Manifest.kind``), in the order they are exported and built.
ENGINE_GRAPHS = {"egsde": (SCORE, DSE_GRAD), "distilled": (STUDENT,)}
