"""Ray: folder translation on Ray Data and the service on Ray Serve, on a small local Ray instance
(2 CPUs, no dashboard) with the tiny engine. Every network call is bounded by a timeout."""

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from egsde_rt.cli import main
from egsde_rt.errors import ConfigError
from egsde_rt.jobs.folders import plan_job
from egsde_rt.runtime.translator import Translator
from egsde_rt.method.settings import overrides_from_text

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")

from helpers.serve import PORT, get as _get, png as _png, post as _post  # noqa: E402


def _images(folder, count=5, start=0):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(folder / f"cat{i}.png")
    return folder


def _tree(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# The few-step settings (a solver with a corrector, a stable low-pass form, a spacing) as flags and as a query.
FEW_STEP = {"solver": "sa-solver-2", "steps": "2", "lowpass": "implicit", "li": "300", "spacing": "karras"}


def test_a_ray_folder_run_equals_a_plain_one_byte_for_byte(local_ray, tiny_engine, tmp_path):
    inputs = _images(tmp_path / "in")
    _images(inputs / "sub", count=2, start=7)
    plain, distributed = tmp_path / "plain", tmp_path / "ray"
    flags = [arg for name, value in FEW_STEP.items() for arg in (f"--{name}", value)]
    common = [str(tiny_engine[0]), str(inputs), "--seed", "11", "--batch-size", "2", "--M", "6", *flags]
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
    from egsde_rt.jobs.ray_data import ray_translate

    tasks, _ = plan_job([_images(tmp_path / "in", count=1)], tmp_path / "out")
    with pytest.raises(ConfigError, match="positive integer"):
        ray_translate(tiny_engine[0], tasks, actors=0)
    with pytest.raises(ConfigError, match="at most 1000"):
        ray_translate(tiny_engine[0], tasks, overrides={"M": 5000})
    with pytest.raises(ConfigError, match="no GPU"):
        ray_translate(tiny_engine[0], tasks, device="cuda")


# --- the service ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, FEW_STEP])
def test_the_service_returns_what_translator_run_returns(service, tiny_engine, overrides):
    query = "&".join(["seed=5", "M=6", *(f"{k}={v}" for k, v in overrides.items())])
    status, headers, body = _post(query, _png(1))
    assert status == 200 and headers["content-type"] == "image/png" and headers["x-egsde-seed"] == "5"
    translator = Translator(tiny_engine[0])
    typed = overrides_from_text(overrides)
    expected = translator.run(Image.open(io.BytesIO(_png(1))), seed=5, M=6, **typed)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), np.asarray(expected))
    if overrides:  # the settings took effect
        assert not np.array_equal(np.asarray(expected), np.asarray(
            translator.run(Image.open(io.BytesIO(_png(1))), seed=5, M=6)))
    assert _get("/healthz") == b"ok"


def test_fit_pad_answers_with_the_uploads_aspect_ratio(service, tiny_engine):
    """``?fit=pad``: a 48 x 32 upload comes back 32 x 21, what ``Translator.run(..., fit="pad")`` gives."""
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(4).random((32, 48, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    status, _, body = _post("seed=5&M=2&fit=pad", buffer.getvalue())
    assert status == 200 and Image.open(io.BytesIO(body)).size == (32, 21)
    expected = Translator(tiny_engine[0]).run(buffer.getvalue(), seed=5, M=2, fit="pad")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), np.asarray(expected))


@pytest.mark.parametrize("query,body,status,match", [
    ("seed=abc", None, 400, "seed must be an integer"), ("seed=-1", None, 400, "seed must be in"),
    ("M=99999", None, 400, "M must be at most 1000"), ("repeats=2147483647", None, 400, "at most 16"),
    ("M=12&repeats=16", None, 400, "over this service's limit of 48"),
    ("s1=neg_l2", None, 400, "setting 's1' is fixed in this engine (baked into its graphs); overridable here: "
                             "['seed', 'fit', 'M', "),
    ("step=2", None, 400, "unknown setting 'step' (did you mean 'steps'?); overridable here: ['seed', 'fit', 'M', "),
    ("sead=2", None, 400, "unknown setting 'sead' (did you mean 'seed'?)"),
    ("ilvr=maybe", None, 400, "true"),
    ("", b"not an image", 400, "not an image file"), ("", b"", 400, "empty"),
    ("solver=euler", None, 400, "solver must be one of ['ddpm'"), ("M=3&steps=4", None, 400, "steps must be"),
    ("M=1.5", None, 400, "M must be an integer"), ("ls=-1", None, 400, "ls must be a finite number >= 0"),
])
def test_bad_requests_get_a_4xx_with_the_error(service, query, body, status, match):
    got, _, payload = _post(query, _png() if body is None else body)
    assert got == status and match in json.loads(payload)["error"]


def test_unknown_routes_and_methods_get_a_message(service):
    import urllib.error
    import urllib.request

    for path, method, status in (("/nowhere", "GET", 404), ("/translate", "GET", 405), ("/healthz", "POST", 405)):
        request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", method=method, data=b"" if method == "POST"
                                         else None)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
        assert raised.value.code == status and "POST /translate" in json.loads(raised.value.read())["error"]


def test_openapi_documents_every_setting_and_docs_and_page_are_served_locally(service):
    """The query parameters are the declarations' (seed, then each overridable setting, typed,
    choices as an enum); /docs and the page load nothing from another host."""
    from egsde_rt.method.settings import DECLARATIONS, RUNTIME_OVERRIDABLE

    spec = json.loads(_get("/openapi.json"))
    params = {p["name"]: p["schema"] for p in spec["paths"]["/translate"]["post"]["parameters"]}
    assert list(params) == ["seed", "fit", *RUNTIME_OVERRIDABLE] and params["fit"]["enum"] == ["crop", "pad"]
    kinds = {int: "integer", float: "number", bool: "boolean", str: "string"}
    for name in RUNTIME_OVERRIDABLE:
        assert params[name]["type"] == kinds[DECLARATIONS[name].kind], name
        assert params[name].get("enum") == (list(DECLARATIONS[name].choices) if DECLARATIONS[name].choices else None)
    assert set(spec["paths"]) == {"/", "/translate", "/healthz", "/stats"}
    docs, page = _get("/docs").decode(), _get("/").decode()
    assert "swagger-ui-bundle.js" in docs and "<form" in page
    for html in (docs, page):
        assert not [u for u in re.findall(r"(?:src|href)=[\"']([^\"']+)", html) if "//" in u]  # no other host
    assert len(_get("/static-offline-docs/swagger-ui-bundle.js")) > 100_000


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
    assert after["limits"]["threads"] == 1  # a replica's threads: its CPU slots (0.5 here), at least 1
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
    its image, and the process exits 0; its log has no notice of an existing Serve app."""
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
    output = process.stdout.read()
    assert "stopping" in output
    # a fresh serve: Ray's notice that serve.run found the Serve that serve.start had just started
    assert "Connecting to existing Serve app" not in output, output


def test_serve_refuses_a_bad_engine_or_config_before_starting_ray(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size must be a positive integer" in capsys.readouterr().err
    for flags, message in ((["--max-batch-size", "65"], "max_batch_size must be at most 64"),
                           (["--max-upload-mb", "0"], "max_upload_mb must be a finite number > 0"),
                           (["--max-updates", "0"], "max_updates must be a positive integer"),
                           (["--request-timeout-s", "inf"], "request_timeout_s must be a finite number > 0"),
                           (["--max-pixels", "-5"], "max_pixels must be a positive integer")):
        assert main(["serve", str(tmp_path), *flags]) == 2
        assert message in capsys.readouterr().err


def test_ray_datas_context_is_made_without_deprecation_notices(monkeypatch):
    """``translate --ray`` prints no deprecation notice: the ones Ray Data's DataContext gives of its
    own fields when it is made (nothing a user can act on) are silenced, and only those."""
    import warnings

    pytest.importorskip("ray.data")
    from ray.data import context

    from egsde_rt.jobs.ray_data import data_context

    monkeypatch.setattr(context, "_default_context", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert data_context(ray) is ray.data.DataContext.get_current()
