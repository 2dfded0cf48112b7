"""Ray: folder translation on Ray Data and the service on Ray Serve, on a small local Ray instance
(2 CPUs, no dashboard) with the tiny engine. Every network call is bounded by a timeout."""

import io
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from egsde_rt.cli import main
from egsde_rt.errors import ConfigError
from egsde_rt.folder_job import plan_job
from egsde_rt.runtime.translator import Translator

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")

RAY_INIT = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}
PORT = 8473


@pytest.fixture(scope="module")
def local_ray():
    ray.init(**RAY_INIT)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _images(folder, count=5, start=0):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(folder / f"cat{i}.png")
    return folder


def _tree(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_ray_folder_run_equals_a_plain_one_byte_for_byte(local_ray, tiny_engine, tmp_path):
    inputs = _images(tmp_path / "in")
    _images(inputs / "sub", count=2, start=7)
    plain, distributed = tmp_path / "plain", tmp_path / "ray"
    common = [str(tiny_engine[0]), str(inputs), "--seed", "11", "--batch-size", "2", "--M", "3"]
    assert main(["translate", *common, "--output-dir", str(plain)]) == 0
    assert main(["translate", *common, "--output-dir", str(distributed), "--ray", "--ray-actors", "2"]) == 0
    files = _tree(plain)
    assert len(files) == 7 and "sub/cat7.png" in files
    assert _tree(distributed) == files


def test_resume_skips_finished_files_and_a_corrupt_file_is_reported(local_ray, tiny_engine, tmp_path, capsys):
    inputs = _images(tmp_path / "in", count=4)
    (inputs / "cat2.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cat0.png").write_bytes(b"finished before")
    args = ["translate", str(tiny_engine[0]), str(inputs), "--output-dir", str(out), "--M", "3", "--ray"]
    assert main(args) == 2  # existing outputs need --resume or --overwrite
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1  # one file failed
    err = capsys.readouterr().err
    assert "cat2.png" in err and "2 written, 1 skipped (existing), 1 failed of 4" in err
    assert (out / "cat0.png").read_bytes() == b"finished before"
    assert sorted(p.name for p in out.iterdir()) == ["cat0.png", "cat1.png", "cat3.png"]  # no partial files


def test_ray_arguments_are_checked(local_ray, tiny_engine, tmp_path):
    from egsde_rt.distributed import ray_translate

    tasks, _ = plan_job([_images(tmp_path / "in", count=1)], tmp_path / "out")
    with pytest.raises(ConfigError, match="positive integer"):
        ray_translate(tiny_engine[0], tasks, actors=0)
    with pytest.raises(ConfigError, match="exceeds"):
        ray_translate(tiny_engine[0], tasks, overrides={"M": 5000})
    with pytest.raises(ConfigError, match="no GPU"):
        ray_translate(tiny_engine[0], tasks, device="cuda")


# --- the service ----------------------------------------------------------------------------------

def _png(seed=0, size=(32, 32)):
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _post(query, body, timeout=120):
    from egsde_rt.bench.serve_load import post

    return post(f"http://127.0.0.1:{PORT}/translate?{query}", body, timeout)


def _get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def service(local_ray, tiny_engine):
    from egsde_rt import serve as service_module
    from egsde_rt.bench.serve_load import wait_healthy

    # A queue of 8: enough that requests the router has not yet placed on the replica (it probes
    # the replica's load first) are not refused while the replica has room.
    config = service_module.ServeConfig(str(tiny_engine[0]), max_batch_size=4, batch_wait_ms=300,
                                        max_queued_requests=8, cpus_per_replica=0.5)
    service_module.start(config, port=PORT)
    wait_healthy(PORT)
    yield config
    from ray import serve

    serve.delete(service_module.APP_NAME)


def test_the_service_returns_what_translator_run_returns(service, tiny_engine):
    status, headers, body = _post("seed=5&M=3", _png(1))
    assert status == 200 and headers["content-type"] == "image/png" and headers["x-egsde-seed"] == "5"
    expected = Translator(tiny_engine[0]).run(Image.open(io.BytesIO(_png(1))), seed=5, M=3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), np.asarray(expected))
    assert _get("/healthz") == b"ok"


@pytest.mark.parametrize("query,body,status,match", [
    ("seed=abc", None, 400, "seed must be an integer"), ("seed=-1", None, 400, "seed must be in"),
    ("M=99999", None, 400, "exceeds"), ("s1=neg_l2", None, 400, "fixed setting"), ("ilvr=maybe", None, 400, "true"),
    ("", b"not an image", 400, "not an image file"), ("", b"", 400, "empty"),
])
def test_bad_requests_get_a_4xx_with_the_error(service, query, body, status, match):
    got, _, payload = _post(query, _png() if body is None else body)
    assert got == status and match in json.loads(payload)["error"]


def test_concurrent_requests_are_batched_and_each_keeps_its_seed(service, tiny_engine):
    """Four requests sent together run as one batch (the response header and /stats say so), and
    each response is its own image and seed's translation, not its batch neighbours'."""
    before = json.loads(_get("/stats"))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: _post(f"seed={s}&M=3", _png(s)), range(4)))
    assert [r[0] for r in results] == [200] * 4
    assert max(int(r[1]["x-egsde-batch-size"]) for r in results) > 1
    after = json.loads(_get("/stats"))
    assert after["max_batch"] > 1 and after["requests"] == before["requests"] + 4
    translator = Translator(tiny_engine[0])
    for s, (_, _, body) in enumerate(results):
        expected = translator.run(Image.open(io.BytesIO(_png(s))), seed=s, M=3)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), np.asarray(expected))


def test_overload_gets_503_and_the_service_survives(service):
    with ThreadPoolExecutor(40) as pool:  # 8 running + 8 queued at most: the rest must get 503
        statuses = [r[0] for r in pool.map(lambda s: _post(f"seed={s}&M=6", _png(s)), range(40))]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
    assert _post("seed=1&M=2", _png())[0] == 200 and _get("/healthz") == b"ok"


def test_serve_stops_gracefully_on_sigterm(tiny_engine, tmp_path):
    """`egsde-rt serve` in its own process: a request in flight when SIGTERM arrives still gets
    its image, and the process exits 0."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from egsde_rt.bench.serve_load import post, wait_healthy

    port = PORT + 1
    env = {**os.environ, "RAY_ADDRESS": "", "TQDM_DISABLE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "egsde_rt.cli", "serve", str(tiny_engine[0]), "--port", str(port),
                                "--cpus-per-replica", "0.5"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(port, timeout_s=180)
        result = {}
        request = threading.Thread(target=lambda: result.update(
            reply=post(f"http://127.0.0.1:{port}/translate?seed=1&M=6", _png(), timeout=120)))
        request.start()
        import time

        time.sleep(1.0)  # the request is in flight (M=6 takes a few seconds on 2 cores)
        process.send_signal(signal.SIGTERM)
        request.join(timeout=120)
        assert result["reply"][0] == 200
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "stopping" in process.stdout.read()


def test_serve_refuses_a_bad_engine_or_config_before_starting_ray(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size must be a positive integer" in capsys.readouterr().err
