"""`egsde-rt bench --plot`: the title fits the figure and every run's bar can be seen, however far
apart the runs' times are (eager against TensorRT on a GPU: a hundredfold)."""

import pytest

from egsde_rt.bench.report import BAR_PHASES, figure, pyplot

pytest.importorskip("matplotlib")


def _run(name: str, ms: float, speedup: float) -> dict:
    share = {phase: {"median": ms / len(BAR_PHASES)} for phase in BAR_PHASES}
    return {"name": name, "backend": name.split()[0], "batch_size": 1, "per_step_ms": share,
            "speedup_vs_eager": speedup}


def test_the_title_fits_and_every_bar_shows():
    record = {"runs": [_run("eager b1", 40.0, 1.0), _run("tensorrt b1", 0.2, 200.0), _run("torch b1", 8.0, 5.0)],
              "device": {"gpu": "NVIDIA H100 80GB HBM3 (driver 550.54.15, CUDA 12.4, compute capability 9.0)"},
              "config": {"engine_name": "/home/someone/engines/cat2dog-distilled-student-stage-2"}}
    fig = figure(record)
    renderer = fig.canvas.get_renderer()
    box, title = fig.bbox, fig._suptitle.get_window_extent(renderer)
    assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1, "the title is clipped"
    times = fig.axes[0]
    heights = [bar.get_window_extent(renderer).height for bar in times.patches]
    assert len(heights) == 3 and min(heights) > 0.1 * max(heights), f"bar heights in pixels: {heights}"
    labels = " ".join(t.get_text() for t in times.texts)
    assert "0.2 ms" in labels and "200x" in labels
    pyplot().close(fig)
