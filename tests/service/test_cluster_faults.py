"""Faults on a cluster, with Ray's own multi-node harness (``ray.cluster_utils.Cluster``: a head
and two worker nodes, each with a raylet and an object store of its own, on this machine) and
the tiny engine: a folder job that loses a node mid-job, and the service that loses a replica
process while clients send requests. Marked ``cluster``; every wait is bounded and says what it
waited for. The cluster listens on ports 8490-8494 (not those of tests/service/test_ray.py)."""

import io
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")

from egsde_rt.bench.serve_load import NO_RESPONSE, post, wait_healthy  # noqa: E402
from egsde_rt.jobs.folders import plan_job, run_job  # noqa: E402

pytestmark = pytest.mark.cluster

GCS_PORT, DASHBOARD_PORT, AGENT_PORT, SERVE_PORT = 8490, 8491, 8492, 8493
M = 6  # sampling updates per image: ~0.2 s each on one core, so the job runs a few seconds
WAIT_S = 90.0  # the bound on every wait for the cluster (on 2 busy cores)


def _log(message: str) -> None:
    print(f"[cluster faults] {message}", flush=True)


def _wait(what: str, condition, timeout_s: float = WAIT_S, poll_s: float = 0.05):
    """``condition()``'s first true value, polled; fails the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(poll_s)


def _write_log_hook(log_path: str, stall_path: str):
    """A Ray worker setup hook (pickled by value: a closure) that wraps ``folder_job.save_atomically``:
    each call appends "pid node output inode" to ``log_path`` (the inode of the output after the
    call: an output written twice has two), and the first writer of the job, the one that creates
    ``stall_path`` (holding its node id), then stalls: its actor is caught in the middle of a batch
    with one file of the batch written, for the test to kill its node."""

    def hook():
        import os
        import time

        import ray
        from egsde_rt.jobs import folders as folder_job

        original = folder_job.save_atomically

        def save_atomically(image, dst, *args, **kwargs):
            result = original(image, dst, *args, **kwargs)
            node = ray.get_runtime_context().get_node_id()
            with open(log_path, "a") as log:
                log.write(f"{os.getpid()} {node} {dst} {os.stat(dst).st_ino}\n")
            try:
                fd = os.open(stall_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return result
            os.write(fd, node.encode())
            os.close(fd)
            time.sleep(120)  # killed with its node before this ends
            return result

        folder_job.save_atomically = save_atomically

    return hook


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPUs: the driver only) and two worker nodes of 2 CPUs; the driver connected, with
    the write log hook. Ray's files (and the address file by which ``ray.init()`` without an address
    finds a running cluster) go to a folder of its own, so that no other Ray on this machine joins
    this cluster. Everything is shut down at the end (tests/conftest.py's ``local_ray`` and
    ``service`` start their own Ray)."""
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "the cluster tests need Ray not running in this process"
    folder = Path(tempfile.mkdtemp(prefix="egsde-ray-"))  # short: Ray's socket paths are under it
    env = pytest.MonkeyPatch()
    env.setenv("RAY_TMPDIR", str(folder))
    started = time.monotonic()
    cluster = None
    try:
        # A node is declared dead after 3 missed health checks 1 s apart (Ray's default: 5, 3 s apart).
        cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, gcs_server_port=GCS_PORT, include_dashboard=True, dashboard_port=DASHBOARD_PORT,
            dashboard_agent_listen_port=AGENT_PORT,
            _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 3}))
        workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
        cluster.wait_for_nodes(timeout=WAIT_S)
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={
            "worker_process_setup_hook": _write_log_hook(str(folder / "writes.log"), str(folder / "stalled"))})
        _log(f"cluster of 3 nodes up in {time.monotonic() - started:.1f} s")
        yield cluster, workers, folder
    finally:
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        env.undo()
        shutil.rmtree(folder, ignore_errors=True)
        _log("cluster shut down")


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(28)
    for i in range(count):
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(folder / f"cat{i:02d}.png")
    return folder


def _png(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _writes(log: Path) -> list[tuple[str, str, str, int]]:
    """(pid, node, output, inode after the write) of every save_atomically call in the workers."""
    if not log.exists():
        return []
    return [(pid, node, out, int(ino)) for pid, node, out, ino in
            (line.split() for line in log.read_text().splitlines() if line)]


def test_a_job_that_loses_a_node_writes_every_output_exactly_once(cluster, tiny_engine, tmp_path):
    from egsde_rt.jobs.ray_data import ray_translate
    from egsde_rt.runtime.translator import Translator

    cluster, workers, hooks = cluster
    inputs = _images(tmp_path / "in", 16)
    plain, out = tmp_path / "plain", tmp_path / "out"
    run_job(Translator(tiny_engine[0]), plan_job(inputs, plain, seed=5)[0], overrides={"M": M})
    tasks, _ = plan_job(inputs, out, seed=5)
    out.mkdir()
    (out / ".cat03.png.4242-17.partial").write_bytes(b"half a png")  # left by a writer killed earlier

    result = {}

    def job():
        try:
            result["report"] = ray_translate(tiny_engine[0], tasks, batch_size=1, actors=2, overrides={"M": M},
                                             progress=False)
        except BaseException as err:  # reported by the test below
            result["error"] = err

    started = time.monotonic()
    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    stalled = _wait("an actor to write its first output", lambda: (hooks / "stalled").exists() and
                    (hooks / "stalled").read_text())
    _wait("3 outputs written", lambda: len(list(out.glob("*.png"))) >= 3)
    victim = next((w for w in workers if w.node_id == stalled), None)
    assert victim is not None, "the first writer ran on the head: its actors should run on the workers only"
    written_before = len(list(out.glob("*.png")))
    cluster.remove_node(victim, allow_graceful=False)
    killed = time.monotonic()
    _log(f"killed node {stalled[:8]} (its actor in the middle of a batch) with {written_before} of "
         f"{len(tasks)} outputs written, {killed - started:.1f} s into the job")
    thread.join(WAIT_S)
    assert not thread.is_alive(), f"the job did not finish within {WAIT_S:.0f} s of losing a node"
    if "error" in result:
        raise result["error"]
    report = result["report"]
    _log(f"the job finished {time.monotonic() - killed:.1f} s after the node was lost, "
         f"{time.monotonic() - started:.1f} s after it started")

    expected = {t.output for t in tasks}
    names = sorted(p.name for p in out.iterdir())
    lost = sorted(p.name for p in expected if not p.exists())
    differ = sorted(p.name for p in expected if p.exists() and p.read_bytes() != (plain / p.name).read_bytes())
    inodes: dict[str, set] = {}
    for _, _, output, inode in _writes(hooks / "writes.log"):
        inodes.setdefault(output, set()).add(inode)
    twice = sorted(Path(o).name for o, seen in inodes.items() if len(seen) > 1)
    listed = Counter(report.written)
    partial = [n for n in names if n.endswith(".partial")]
    _log(f"outputs lost {len(lost)}, differing from the plain run {len(differ)}, written twice {len(twice)}, "
         f"listed twice {sum(c > 1 for c in listed.values())}, partial files left {len(partial)}")
    assert not lost and not differ, f"lost: {lost}; not the plain run's bytes: {differ}"
    assert not twice, f"written more than once: {twice}"
    assert set(listed) == expected and max(listed.values()) == 1 and not report.failed and not report.skipped, \
        (report.written, report.failed, report.skipped)
    assert names == sorted(p.name for p in expected), f"files other than the outputs left: {partial}"
    assert {Path(o) for o in inodes} == expected, "the write log does not list every output (the hook did not run)"

    todo, skipped = plan_job(inputs, out, seed=5, existing="skip")  # resume: nothing left to do
    assert not todo and {t.output for t in skipped} == expected
    assert ray_translate(tiny_engine[0], todo).written == []
    # a driver that joined a cluster keeps Ray's usage statistics on unless told otherwise: the suite
    # turns them off (conftest), or Ray Data's poller thread would run for the rest of the session
    assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}


# --- the service ----------------------------------------------------------------------------------

REPLICA_CLASS = "ServeReplica:egsde-rt:translate"  # Serve's actor class name of a replica of the service
DEADLINE_S = 20.0  # each request's client-side timeout


def _replicas() -> dict[int, str]:
    """pid -> node id of the service's live replicas (Ray's state API)."""
    from ray.util.state import list_actors

    return {a.pid: a.node_id for a in list_actors(filters=[("class_name", "=", REPLICA_CLASS), ("state", "=", "ALIVE")],
                                                  timeout=10)}


def test_the_service_keeps_answering_when_a_replica_process_is_killed(cluster, tiny_engine):
    from egsde_rt.service import deployment as service

    config = service.ServeConfig(str(tiny_engine[0]), replicas=2, max_batch_size=2, batch_wait_ms=20,
                                 max_queued_requests=32, cpus_per_replica=0.5)
    started = time.monotonic()
    service.start(config, port=SERVE_PORT)
    wait_healthy(SERVE_PORT, timeout_s=WAIT_S)
    before = _wait("2 live replicas", lambda: len(_replicas()) == 2 and _replicas(), poll_s=0.5)
    _log(f"service of 2 replicas up in {time.monotonic() - started:.1f} s")

    url = f"http://127.0.0.1:{SERVE_PORT}/translate"
    body = _png()
    results = []  # (sent, elapsed, status, detail)
    stop = threading.Event()

    def client(k: int):
        i = 0
        while not stop.is_set():
            sent = time.monotonic()
            status, _, answer = post(f"{url}?seed={k * 1000 + i}&M=3", body, DEADLINE_S)
            results.append((sent, time.monotonic() - sent, status, answer[:200]))
            i += 1

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    try:
        _wait("8 answers before the kill", lambda: sum(r[2] == 200 for r in results) >= 8)
        pid = next(iter(before))
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _log(f"killed replica process {pid} with {len(results)} requests answered")
        after = _wait("Serve to replace the killed replica", lambda: (r := _replicas()) and len(r) == 2 and
                      pid not in r and r, poll_s=0.5)
        recovered = time.monotonic()
        _log(f"replica replaced in {recovered - killed:.1f} s (pids {sorted(before)} -> {sorted(after)})")
        _wait("8 answers sent after the replacement", lambda: sum(r[0] > recovered for r in results) >= 8)
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE_S + 5)
        service.stop()
    assert not any(t.is_alive() for t in threads), "a client is still waiting past its deadline"

    statuses = Counter(r[2] for r in results)
    failed = [r for r in results if r[2] != 200]
    late = [r for r in results if r[1] > DEADLINE_S]
    _log(f"{len(results)} requests, the test took {time.monotonic() - started:.1f} s: statuses {dict(statuses)}, "
         f"failed {len(failed)} {[(round(r[0] - killed, 1), r[2], r[3][:40]) for r in failed]} (sent s after the "
         f"kill, status, body); slowest {max(r[1] for r in results):.1f} s")
    assert not late and NO_RESPONSE not in statuses, f"requests that got no answer within their deadline: {late}"
    assert all(r[2] == 200 for r in results if r[0] > recovered), "requests sent after the replacement failed"
    assert all(r[2] == 200 for r in results if r[0] + r[1] < killed), "requests answered before the kill failed"
    # Serve does not send a request again once a replica has taken it: those the killed replica was
    # running get a 500 from Serve's proxy, at most its max_ongoing_requests
    assert {r[2] for r in failed} <= {500, 503} and len(failed) <= 2 * config.max_batch_size, failed
