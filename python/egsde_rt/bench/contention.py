"""``egsde-rt bench --contention N``: translations on a shared machine.

Three measurements of the same translation (one batch through ``Translator.run_tensor``, the
path users take), each in fresh child processes so that nothing is shared but the machine:

* **alone**: one translating process;
* **together**: N translating processes at once;
* **beside busy**: one translating process beside N busy processes that do not translate (each
  spins one core in plain Python, as any other program on the machine might).

Each child loads its Translator and warms it up, then waits until every child is ready, so the
timed translations overlap; a child that has finished its timed runs keeps translating (untimed)
until all have finished, so the load does not drop for the slower ones. The slowdown of a
measurement is the median seconds per translation of its translating processes (their mean)
over the alone run's. ``BOUNDS`` are the slowdowns a translation must stay within (two at once
on the 2-core CPU: at most 3x, a fair share being 2x; beside two busy processes: at most 4x).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from ..errors import EgsdeError

BOUNDS = {"together": 3.0, "beside_busy": 4.0}
_READY, _GO, _STOP = "ready", "go", "stop"
_BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@dataclass(frozen=True)
class ContentionConfig:
    engine_dir: str
    processes: int = 2  # N
    backend: str = "auto"
    device: str = "cpu"
    threads: int | None = None  # None: the Translator's default (cpu_threads)
    batch_size: int = 4
    steps: int | None = 20  # the run's updates (None: the engine's own)
    repeats: int = 5  # timed translations per process
    seed: int = 0
    timeout_s: float = 1800.0  # one measurement's limit


def _child_command(config: ContentionConfig) -> list:
    return [sys.executable, "-m", "egsde_rt.bench.contention", json.dumps(asdict(config))]


def child_main(config: ContentionConfig) -> None:
    """A translating child: warm up, say ready, wait for go, time ``repeats`` translations, print
    them as JSON, then keep translating (untimed) until told to stop."""
    import torch

    from ..runtime.translator import Translator

    translator = Translator(config.engine_dir, backend=config.backend, device=config.device, threads=config.threads)
    x0 = torch.rand(config.batch_size, 3, translator.image_size, translator.image_size,
                    generator=torch.Generator().manual_seed(config.seed)) * 2 - 1
    overrides = {"steps": config.steps} if config.steps is not None else {}

    def translate():
        translator.run_tensor(x0, seed=config.seed, **overrides)

    translate()
    print(_READY, flush=True)
    if sys.stdin.readline().strip() != _GO:
        return
    seconds = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        translate()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "backend": translator.backend, "threads": translator.threads}), flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    while not stop.is_set():
        translate()


def _read_line(process: subprocess.Popen, deadline: float, what: str) -> str:
    line = process.stdout.readline()
    if not line or time.monotonic() > deadline:
        process.kill()
        process.wait()
        process.errors.seek(0)
        raise EgsdeError(f"a contention child exited or ran past the limit before {what} (exit code "
                         f"{process.returncode}): {process.errors.read()[-2000:]}")
    return line.strip()


def _translating_child(config: ContentionConfig) -> subprocess.Popen:
    errors = tempfile.TemporaryFile(mode="w+")  # read back only if the child fails
    child = subprocess.Popen(_child_command(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                             text=True)
    child.errors = errors
    return child


def measure(config: ContentionConfig, translating: int, busy: int) -> list:
    """Run ``translating`` children beside ``busy`` busy processes; each child's record."""
    deadline = time.monotonic() + config.timeout_s
    children = [_translating_child(config) for _ in range(translating)]
    spinners = []
    try:
        for child in children:
            while _read_line(child, deadline, "it was ready") != _READY:
                pass
        spinners = [subprocess.Popen([sys.executable, "-c", _BUSY.format(seconds=config.timeout_s)])
                    for _ in range(busy)]
        time.sleep(0.5 if busy else 0.0)  # the busy processes are running before the timed part
        for child in children:
            child.stdin.write(_GO + "\n")
            child.stdin.flush()
        records = []
        for child in children:
            line = _read_line(child, deadline, "its result")
            while not line.startswith("{"):
                line = _read_line(child, deadline, "its result")
            records.append(json.loads(line))
        return records
    finally:
        for child in children:
            try:
                child.stdin.write(_STOP + "\n")
                child.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        for spinner in spinners:
            spinner.kill()
        for process in [*spinners, *children]:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in children:
            child.errors.close()


def _per_translation(records: list) -> float:
    """The mean over processes of each one's median seconds per translation."""
    return statistics.mean(statistics.median(r["seconds"]) for r in records)


def run_contention(config: ContentionConfig, log=print) -> dict:
    """The three measurements and their slowdowns against the alone run (see the module docstring)."""
    n = config.processes
    log("bench: contention: one translating process alone ...")
    alone = measure(config, 1, 0)
    log(f"bench: contention: {n} translating processes at once ...")
    together = measure(config, n, 0)
    log(f"bench: contention: one translating process beside {n} busy processes ...")
    beside = measure(config, 1, n)
    base = _per_translation(alone)
    runs = {}
    for name, records in (("alone", alone), ("together", together), ("beside_busy", beside)):
        seconds = _per_translation(records)
        runs[name] = {"processes": len(records), "busy_processes": n if name == "beside_busy" else 0,
                      "seconds_per_translation": seconds, "slowdown": seconds / base,
                      "bound": BOUNDS.get(name), "within_bound": seconds / base <= BOUNDS[name] if name in BOUNDS
                      else None, "per_process_seconds": [r["seconds"] for r in records]}
    first = alone[0]
    return {"config": {**asdict(config), "backend_used": first["backend"], "threads_used": first["threads"]},
            "runs": runs}


def format_contention(record: dict) -> str:
    config = record["config"]
    lines = [f"contention: {config['backend_used']}, {config['threads_used']} thread(s), batch {config['batch_size']}, "
             f"{config['steps'] or 'the engine'} updates, {config['repeats']} timed translations per process",
             f"{'run':14s} {'translating':>11s} {'busy':>5s} {'s/translation':>14s} {'slowdown':>9s} {'bound':>6s}"]
    for name, r in record["runs"].items():
        bound = f"{r['bound']:.0f}x" if r["bound"] else "-"
        verdict = "" if r["within_bound"] is None else ("  ok" if r["within_bound"] else "  OVER THE BOUND")
        lines.append(f"{name:14s} {r['processes']:11d} {r['busy_processes']:5d} {r['seconds_per_translation']:14.3f} "
                     f"{r['slowdown']:8.2f}x {bound:>6s}{verdict}")
    return "\n".join(lines)


if __name__ == "__main__":  # a translating child (``measure``)
    child_main(ContentionConfig(**json.loads(sys.argv[1])))
