"""The eps networks as the engine's graphs, in their contracts' argument order: the score network
as the ``score`` graph, (x, t) -> eps; a distilled student as the ``student`` graph,
(y, x_t, t) -> the guided eps."""

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


class StudentGraph(torch.nn.Module):
    """(y, x_t, t) -> the guided eps of a ``models.student.GuidedStudent`` (whose own order is
    ``student(y, t, x_t)``): the ``student`` graph's contract (``engine.contracts.STUDENT``)."""

    def __init__(self, student: torch.nn.Module):
        super().__init__()
        self.student = student

    def forward(self, y, x_t, t):
        return self.student(y, t, x_t)
