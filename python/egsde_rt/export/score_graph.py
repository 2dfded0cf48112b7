"""The score network as the engine's ``score`` graph: (x, t) -> eps."""

from __future__ import annotations

import torch


class ScoreGraph(torch.nn.Module):
    """(x, t) -> eps: ADM models' learned-variance channels are sliced off inside the graph.

    float32 in and out (a reduced-precision network computes its torso in its dtype, see
    ``network_fns``)."""

    def __init__(self, score_model: torch.nn.Module, score_kind: str):
        super().__init__()
        self.score_model, self.score_kind = score_model, score_kind

    def forward(self, x, t):
        out = self.score_model(x, t)
        return out[:, :3] if self.score_kind == "adm" else out
