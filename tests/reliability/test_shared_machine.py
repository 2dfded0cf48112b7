"""A translation on a shared machine: its CPU threads (one setting, from the affinity mask and the
cgroup quota by default, applied to every pool), the passive OpenMP wait policy set before any
runtime loads, and the contention bench that measures both (docs/performance.md)."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from egsde_rt import _core, cpu_threads
from egsde_rt.cli import main
from egsde_rt.errors import ConfigError
from egsde_rt.runtime.translator import Translator


def _python(code: str, env=None, affinity=None) -> str:
    """What a fresh interpreter prints (its environment as given: no OpenMP variable of ours)."""
    base = {k: v for k, v in os.environ.items() if k not in cpu_threads.WAIT_POLICY}
    run = (lambda: os.sched_setaffinity(0, affinity)) if affinity else None
    out = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True, text=True,
                         timeout=120, preexec_fn=run, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to restrict the affinity to one")
def test_the_default_comes_from_the_affinity_mask_not_the_cpu_count():
    """A process allowed one CPU of several defaults to one thread (os.cpu_count() counts the host)."""
    code = "import os; from egsde_rt import cpu_threads; print(cpu_threads.default_threads(), os.cpu_count())"
    threads, host = map(int, _python(code, affinity={0}).split())
    assert threads == 1 and host >= 2
    assert cpu_threads.default_threads() == len(os.sched_getaffinity(0))


def test_the_default_honours_the_cgroup_quota(monkeypatch):
    """A container's CPU quota (cgroup cpu.max, as loky reads it) bounds the default too."""
    import loky.backend.context as context

    monkeypatch.setattr(context, "_cpu_count_cgroup", lambda os_cpu_count: 1)
    assert cpu_threads.default_threads() == 1
    assert cpu_threads.slot_threads(4.0) == 1


@pytest.mark.parametrize("value", [0, -1, cpu_threads.MAX_THREADS + 1, 1.5, True, "two", "", None])
def test_threads_are_checked_once_with_their_bound(value):
    if value is None:
        assert cpu_threads.resolve_threads(value) == cpu_threads.default_threads()
        return
    with pytest.raises(ConfigError, match=f"threads must be an integer in 1..{cpu_threads.MAX_THREADS}"):
        cpu_threads.resolve_threads(value)


def test_the_bound_is_the_cores():
    assert cpu_threads.MAX_THREADS == _core.MAX_THREADS
    assert cpu_threads.parse_threads(" Auto ") == "auto"
    assert cpu_threads.parse_threads("3") == 3
    assert [cpu_threads.slot_threads(c) for c in (0.25, 1.0, 1.5)] == [1, 1, min(2, cpu_threads.default_threads())]


def test_auto_threads_shrink_while_other_tasks_keep_the_cpus_busy(monkeypatch):
    monkeypatch.delenv(cpu_threads.THREADS_ENV, raising=False)
    """ThreadBudget("auto") on a machine of 4 CPUs: the limit alone, fewer for each other runnable
    task (their share of ours on a larger host), at least 1; an explicit count never changes."""
    monkeypatch.setattr(cpu_threads, "default_threads", lambda: 4)
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 4)
    running = {"n": 1}
    monkeypatch.setattr(cpu_threads, "runnable_tasks", lambda: running["n"])
    auto, fixed = cpu_threads.ThreadBudget(None), cpu_threads.ThreadBudget(4)
    assert (auto.limit, auto.adaptive, fixed.adaptive) == (4, True, False)
    seen = {}
    for n in (1, 2, 3, 4, 5, 9):
        running["n"] = n
        seen[n] = (auto.now(), fixed.now())
    assert seen == {1: (4, 4), 2: (3, 4), 3: (2, 4), 4: (1, 4), 5: (1, 4), 9: (1, 4)}
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 64)  # 2 others on a 64-CPU host: ours stay free
    running["n"] = 3
    assert auto.now() == 4
    running["n"] = None  # no /proc/loadavg: the limit
    assert auto.now() == 4


def test_the_default_setting_can_come_from_the_environment(monkeypatch):
    """EGSDE_RT_THREADS: the default where no threads is given (a fixed count does not adapt)."""
    monkeypatch.setenv(cpu_threads.THREADS_ENV, "1")
    assert (cpu_threads.ThreadBudget().limit, cpu_threads.ThreadBudget().adaptive) == (1, False)
    monkeypatch.setenv(cpu_threads.THREADS_ENV, "auto")
    assert cpu_threads.ThreadBudget().adaptive and cpu_threads.ThreadBudget(" AUTO ").adaptive
    assert not cpu_threads.ThreadBudget(2).adaptive
    monkeypatch.setenv(cpu_threads.THREADS_ENV, "0")
    with pytest.raises(ConfigError, match="EGSDE_RT_THREADS='0': threads must be"):
        cpu_threads.ThreadBudget()


def test_the_runnable_count_is_read_from_the_machine():
    running = cpu_threads.runnable_tasks()
    assert running is None or running >= 1


def test_import_egsde_rt_sets_the_passive_wait_policy_before_openmp_loads():
    """import egsde_rt, then torch: the variables are set before libgomp reads them (none loaded
    before); torch first: the runtime was loaded before (reported); the user's own values win."""
    code = ("import os, json\n{first}\nfrom egsde_rt import cpu_threads\nimport torch\n"
            "print(json.dumps(cpu_threads.wait_policy()))")
    policy = json.loads(_python(code.format(first="")))
    assert policy == {**cpu_threads.WAIT_POLICY, "loaded_before": []}
    late = json.loads(_python(code.format(first="import torch")))
    assert any(name.startswith("libgomp") for name in late["loaded_before"])
    own = json.loads(_python(code.format(first=""), env={"OMP_WAIT_POLICY": "ACTIVE"}))
    assert own["OMP_WAIT_POLICY"] == "ACTIVE" and own["GOMP_SPINCOUNT"] == cpu_threads.WAIT_POLICY["GOMP_SPINCOUNT"]


@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "torch"])
def test_a_translators_threads_reach_every_pool(tiny_engine, backend):
    """Translator(threads=1): ONNX Runtime's intra-op pool, the native sampler's team and PyTorch's
    threads in whichever thread runs the translation (a server's worker thread included)."""
    tiny_engine = tiny_engine[0]
    before = torch.get_num_threads()
    try:
        translator = Translator(tiny_engine, backend=backend, device="cpu", threads=1)
        assert translator.threads == 1
        if backend == "onnxruntime-cpu":
            assert {s.get_session_options().intra_op_num_threads for s in translator.runner.sessions.values()} == {1}
        torch.set_num_threads(2)
        seen = {}
        x0 = np.zeros((1, 3, translator.image_size, translator.image_size), np.float32)

        def worker():
            torch.set_num_threads(2)  # a thread that ran PyTorch before, with another setting
            translator.run_tensor(x0, seed=0, steps=2, callback=lambda d, t: seen.setdefault("run", []).append(
                torch.get_num_threads()))
            seen["after"] = torch.get_num_threads()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == {"run": [1, 1], "after": 2}  # the run's threads, then the thread's own again
        sampler = next(iter(translator._samplers.values()))
        assert sampler.config.threads == 1
        assert Translator(tiny_engine, backend=backend, device="cpu").threads == cpu_threads.default_threads()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads must be"):
        Translator(tiny_engine, backend=backend, device="cpu", threads=0)


def test_threads_on_the_command_line(tiny_engine, tmp_path, capsys):
    tiny_engine = tiny_engine[0]
    with pytest.raises(SystemExit):
        main(["translate", str(tiny_engine), "x.png", "--threads", "0"])
    assert "threads must be an integer in 1.." in capsys.readouterr().err
    source = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 120, 200)).save(source)
    assert main(["translate", str(tiny_engine), str(source), "--output-dir", str(tmp_path / "out"), "--threads", "1",
                 "--backend", "onnxruntime-cpu", "--device", "cpu", "--steps", "2"]) == 0
    assert (tmp_path / "out" / "in.png").exists()


@pytest.mark.slow
def test_the_contention_bench_measures_three_runs(tiny_engine, tmp_path):
    """--contention 2 on the tiny engine: the alone, together and beside-busy runs, their slowdowns
    against the alone run (measured here, not judged: the test machine is busy), and the load."""
    tiny_engine = tiny_engine[0]
    record_path = tmp_path / "contention.json"
    assert main(["bench", "--engine", str(tiny_engine), "--contention", "2", "--repeats", "1", "--steps", "2",
                 "--batch-size", "1", "--backends", "onnxruntime-cpu", "--threads", "1",
                 "--json", str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    runs = record["runs"]
    assert [(runs[n]["processes"], runs[n]["busy_processes"]) for n in ("alone", "together", "beside_busy")] == \
        [(1, 0), (2, 0), (1, 2)]
    assert runs["alone"]["slowdown"] == 1.0
    for name, run in runs.items():
        assert run["slowdown"] == pytest.approx(run["seconds_per_translation"] /
                                                runs["alone"]["seconds_per_translation"])
        assert len(run["per_process_seconds"]) == run["processes"]
    assert record["config"]["threads_used"] == 1 and record["config"]["backend_used"] == "onnxruntime-cpu"
    assert set(record["load"]) >= {"before", "after", "cpus", "busy"} and len(record["load"]["before"]) == 3


def test_every_bench_record_stores_the_load_and_warns_when_busy(monkeypatch):
    from egsde_rt.bench import machine

    cpus = cpu_threads.default_threads()
    warnings = []
    busy = machine.BUSY_LOAD_SHARE * cpus + 0.5
    monkeypatch.setattr(machine, "_at_start", ((0.0, 0.0, 0.0), busy))  # other tasks running as it began
    load = machine.machine_load(warn=warnings.append)
    assert load["busy"] and len(warnings) == 1 and "busy" in warnings[0] and len(load["after"]) == 3
    monkeypatch.setattr(machine, "_at_start", ((busy, 1.0, 1.0), 0.0))  # a bench just ended: quiet now
    assert not machine.machine_load(warn=warnings.append)["busy"] and len(warnings) == 1
    monkeypatch.setattr(machine, "_at_start", ((busy, 1.0, 1.0), None))  # no runnable count: the average
    assert machine.machine_load(warn=warnings.append)["busy"] and len(warnings) == 2
    monkeypatch.setattr(machine, "_at_start", ((0.0, 0.0, 0.0), 0.0))
    envelope = machine.record_envelope("cpu")
    assert envelope["load"]["before"] == [0.0, 0.0, 0.0] and envelope["device"]["cpus_usable"] == cpus
    assert envelope["load"]["others_runnable_before"] == 0.0
    machine.mark_start()
    assert machine._at_start[1] is None or machine._at_start[1] >= 0
    assert envelope["device"]["openmp_wait"]["OMP_WAIT_POLICY"] is not None


@pytest.mark.skipif(cpu_threads.default_threads() < 2, reason="needs two usable CPUs to shrink from")
def test_a_translator_on_auto_shrinks_its_team_between_updates(tiny_engine, monkeypatch):
    """threads="auto" on the CPU: each update runs with the budget's threads, read between updates
    (the progress callback sees the team the next update gets); an explicit count holds."""
    running = {"n": 1}
    monkeypatch.setattr(cpu_threads, "runnable_tasks", lambda: running["n"])
    monkeypatch.delenv(cpu_threads.THREADS_ENV, raising=False)  # the suite's fixed default (conftest.py)
    before = torch.get_num_threads()
    try:
        for threads, busy, expected in ((None, 1, cpu_threads.default_threads()), (None, 50, 1), (2, 50, 2)):
            translator = Translator(tiny_engine[0], backend="torch", device="cpu", threads=threads)
            running["n"] = busy
            seen = []
            translator.run_tensor(np.zeros((1, 3, 32, 32), np.float32), seed=0, steps=3,
                                  callback=lambda done, total: seen.append(torch.get_num_threads()))
            assert seen == [expected] * 3, (threads, busy)
    finally:
        torch.set_num_threads(before)
