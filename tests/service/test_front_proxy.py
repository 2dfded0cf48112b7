"""Slow clients: the nginx front rendered from the service's bounds (``service.front_proxy``) and
a request whose client goes away. Serve's proxy (uvicorn, started by Ray) has no deadline for a
request's headers and no connection limit, so a real nginx (Debian's, as ``.ci/run`` installs
it; started here with its own prefix on loopback) runs in front of the live service with the
tiny engine. Every count and every wait is bounded; without nginx the tests that need it skip,
saying so (they fail instead where ``EGSDE_REQUIRE_NGINX`` is set, as in CI)."""

import json
import os
import select
import shlex
import shutil
import socket
import subprocess
import time

import pytest

from egsde_rt.bench.serve_hostile import Probe, is_json_error, legit_probe, png, send
from egsde_rt.errors import ConfigError

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")

SERVE_PORT, NGINX_PORT = 8477, 8478
HEADER_TIMEOUT_S = 2.0
HALF_OPEN = 200
LIMITS = dict(max_upload_mb=1.0, body_timeout_s=3.0, request_timeout_s=60.0, max_updates=2000,
              header_timeout_s=HEADER_TIMEOUT_S, max_connections=256, max_connections_per_client=6, keep_alive_s=4)


def _proxy_guard():
    from egsde_rt.service.deployment import LOOPBACK_HOSTS, ServeConfig

    return ServeConfig("", allowed_hosts=LOOPBACK_HOSTS, **LIMITS)


PROXY_GUARD = _proxy_guard()  # the limits of Serve's proxy (tests/conftest.py local_ray): the service's


def _nginx() -> str:
    """The nginx binary, or a skip (a failure under ``EGSDE_REQUIRE_NGINX``) naming what is missing."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not found:
        missing = "no nginx: install Debian's nginx-light (.ci/run does)"
        if os.environ.get("EGSDE_REQUIRE_NGINX"):  # CI: a missing nginx fails, never skips
            pytest.fail(missing)
        pytest.skip(missing)
    return found


def _argv(command: str, binary: str) -> list:
    """The printed command, run with ``binary``; as root, nginx's workers stay root (they reach
    the temp directories in pytest's private tmp)."""
    argv = shlex.split(command)
    argv[0] = binary
    if os.geteuid() == 0:
        argv[-1] += " user root;"
    return argv


@pytest.fixture(scope="module")
def front_service(local_ray, tiny_engine):
    """The service on loopback (``SERVE_PORT``) with the tiny engine and ``LIMITS``, warmed up."""
    from ray import serve

    from egsde_rt.bench.serve_load import wait_healthy
    from egsde_rt.service import deployment as service_module

    config = service_module.ServeConfig(str(tiny_engine[0]), max_batch_size=4, batch_wait_ms=20,
                                        max_queued_requests=16, cpus_per_replica=0.5, **LIMITS)
    service_module.start(config, port=SERVE_PORT)
    wait_healthy(SERVE_PORT)
    assert send(SERVE_PORT, legit_probe("M=2"), 0, 60).status == 200  # the engine's sessions warm
    yield config
    serve.delete(service_module.APP_NAME)


@pytest.fixture(scope="module")
def nginx_front(front_service, tmp_path_factory):
    """nginx in front of the service at ``NGINX_PORT``, with the config ``egsde-rt serve
    --nginx-config`` writes, run by the command it prints (in the foreground: stopped here)."""
    from egsde_rt.service.front_proxy import write_nginx_config

    binary = _nginx()
    prefix = tmp_path_factory.mktemp("nginx")
    command = write_nginx_config(prefix / "nginx.conf", front_service, listen=f"127.0.0.1:{NGINX_PORT}",
                                 serve_port=SERVE_PORT)
    log = open(prefix / "stderr.log", "wb")
    process = subprocess.Popen(_argv(command, binary), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited ({process.returncode}): {(prefix / 'stderr.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", NGINX_PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("nginx did not listen within 20 s") from None
                time.sleep(0.1)
        yield front_service
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _json(answer) -> dict:
    assert is_json_error(answer.body), answer
    return json.loads(answer.body)


def test_200_half_open_connections_hold_no_good_request_and_are_closed_at_the_header_deadline(nginx_front):
    """A client opens 200 connections and never finishes their headers: a good request is answered
    within 5 s all the same, and nginx closes every one of them at ``header_timeout_s`` (Serve's
    proxy, reached directly, holds them for as long as the client likes)."""
    held = []
    try:
        for _ in range(HALF_OPEN):
            sock = socket.create_connection(("127.0.0.1", NGINX_PORT), timeout=5)
            sock.sendall(b"POST /translate?M=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n")
            held.append(sock)
        opened = time.monotonic()
        answer = send(NGINX_PORT, legit_probe("M=2"), 1, 5.0)
        assert answer.status == 200 and answer.seconds < 5, answer
        still_open, deadline = set(held), opened + HEADER_TIMEOUT_S + 10
        while still_open and time.monotonic() < deadline:
            for sock in select.select(list(still_open), [], [], 0.5)[0]:
                try:
                    data = sock.recv(4096)
                except OSError:  # reset
                    data = b""
                assert not data, f"nginx answered a request it never received: {data[:80]!r}"
                still_open.discard(sock)
        closed = time.monotonic() - opened
        assert not still_open, (f"{len(still_open)} of {HALF_OPEN} half-open connections still open "
                                f"{closed:.0f} s later (header deadline {HEADER_TIMEOUT_S:g} s)")
        assert closed > HEADER_TIMEOUT_S - 1  # at the deadline, not refused at once
    finally:
        for sock in held:
            sock.close()
    assert send(NGINX_PORT, legit_probe("M=2"), 2, 10.0).status == 200


def test_nginx_refuses_what_the_service_refuses_and_answers_in_json(nginx_front):
    """nginx's own answers keep the service's contract (JSON ``{"error": ...}``): an upload
    declared over the limit 413, a foreign ``Host`` 400 (nginx on loopback answers loopback names
    only), and more connections from one address than ``max_connections_per_client`` 503."""
    limit = LIMITS["max_upload_mb"]
    over = send(NGINX_PORT, Probe("declared", "M=2", lambda: [b"\0" * 1024], (), declared_length=2 * 2**20), 0, 10)
    assert over.status == 413 and f"{limit:g} MB limit" in _json(over)["error"]
    foreign = send(NGINX_PORT, Probe("foreign", "M=2", lambda: [png()], (), host="attacker.example"), 0, 10)
    assert foreign.status == 400 and "is not served here" in _json(foreign)["error"]
    for host in (f"localhost:{NGINX_PORT}", f"[::1]:{NGINX_PORT}"):
        assert send(NGINX_PORT, Probe("loopback", "M=2", lambda: [png()], (), host=host), 0, 10).status == 200, host

    held = []  # requests whose headers are in and whose bodies never come: each holds a connection
    try:
        for _ in range(LIMITS["max_connections_per_client"]):
            sock = socket.create_connection(("127.0.0.1", NGINX_PORT), timeout=5)
            sock.sendall(b"POST /translate?M=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 4096\r\n\r\n\x89PNG")
            held.append(sock)
        time.sleep(0.3)
        refused = send(NGINX_PORT, legit_probe("M=2"), 3, 10)
        assert refused.status == 503 and "too many connections" in _json(refused)["error"], refused
    finally:
        for sock in held:
            sock.close()
    # once nginx has seen those clients go (each worker in its own time), the address is served again
    deadline = time.monotonic() + 10
    while (status := send(NGINX_PORT, legit_probe("M=2"), 4, 10).status) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200


def test_a_client_that_goes_away_stops_its_translation(front_service):
    """A client asks for a long translation (2000 updates, about a minute on the tiny engine here)
    and goes away: Serve cancels the route, the request's group stops at its next update, and the
    next request is answered in seconds (before, it waited for the whole translation)."""
    body = png()
    with socket.create_connection(("127.0.0.1", SERVE_PORT), timeout=10) as sock:
        sock.sendall(b"POST /translate?M=1000&repeats=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(2.0)  # the translation runs
    answer = send(SERVE_PORT, legit_probe("M=2"), 5, 20)
    assert answer.status == 200 and answer.seconds < 10, answer


# --- the config itself, without a service -----------------------------------------------------------

def test_the_config_is_rendered_from_the_declared_bounds_and_nginx_accepts_it(tmp_path):
    from egsde_rt.service.deployment import ServeConfig
    from egsde_rt.service.front_proxy import nginx_config

    config = ServeConfig("engine", header_timeout_s=2.5, max_connections=100, max_connections_per_client=7,
                         max_upload_mb=3, body_timeout_s=20, request_timeout_s=50, keep_alive_s=4)
    text = nginx_config(config, listen="0.0.0.0:9080", serve_host="0.0.0.0", serve_port=9000)
    for line in ("client_header_timeout 2500ms;", "limit_conn egsde_per_client 7;", "limit_conn egsde_all 100;",
                 "worker_connections 232;", "client_max_body_size 3145728;", "client_body_timeout 20s;",
                 "proxy_read_timeout 70s;", "keepalive_timeout 4s;", "keepalive_timeout 2s;", "server 127.0.0.1:9000;",
                 "listen 0.0.0.0:9080 default_server;", "server_name _;", "proxy_request_buffering off;"):
        assert line in text, line
    assert "attacker" not in text and "is not served here" not in text  # public: any Host
    loopback = nginx_config(config, listen="[::1]:9080", serve_port=9000)
    assert "listen [::1]:9080 default_server;" in loopback and "server_name 127.0.0.1 localhost [::1];" in loopback
    assert "proxy_request_buffering on;" in nginx_config(config, request_buffering=True)
    binary = _nginx()
    for name, rendered in (("public", text), ("loopback", loopback)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "nginx.conf").write_text(rendered)
        check = subprocess.run([binary, "-t", "-p", f"{tmp_path / name}/", "-c", str(tmp_path / name / "nginx.conf"),
                                "-e", "stderr"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, (name, check.stderr)


@pytest.mark.parametrize("listen", ["8080", "localhost", "host:port", "1.2.3.4:70000", "a b:80", ":80", "x;y:80"])
def test_a_bad_listen_address_is_a_config_error_naming_the_form(listen):
    from egsde_rt.service.deployment import ServeConfig
    from egsde_rt.service.front_proxy import nginx_config

    with pytest.raises(ConfigError, match=r"--nginx-listen must be HOST:PORT \(e\.g\. 127\.0\.0\.1:8080"):
        nginx_config(ServeConfig("engine"), listen=listen)


def test_the_new_bounds_are_flags_of_serve_and_checked(tmp_path):
    from egsde_rt.cli import build_parser
    from egsde_rt.cli.flags import service_config
    from egsde_rt.service.deployment import ServeConfig
    from egsde_rt.service.front_proxy import write_nginx_config

    args = build_parser().parse_args(["serve", "engine", "--header-timeout-s", "3", "--max-connections", "50",
                                      "--max-connections-per-client", "5", "--keep-alive-s", "7",
                                      "--nginx-config", str(tmp_path / "front" / "nginx.conf")])
    config = service_config(args, args.engine_dir)
    assert config.threads is None  # a replica's default: its CPU slots
    assert service_config(build_parser().parse_args(["serve", "engine", "--threads", "3"]), "engine").threads == 3
    assert (config.header_timeout_s, config.max_connections, config.max_connections_per_client,
            config.keep_alive_s) == (3.0, 50, 5, 7)
    assert args.nginx_listen == "127.0.0.1:8080"
    command = write_nginx_config(args.nginx_config, config, listen=args.nginx_listen)
    assert "client_header_timeout 3s;" in (tmp_path / "front" / "nginx.conf").read_text()
    assert command.endswith(f"-c {tmp_path / 'front' / 'nginx.conf'} -e stderr -g 'daemon off;'")
    for bad, match in ((dict(header_timeout_s=0), "header_timeout_s must be a finite number > 0"),
                       (dict(max_connections=0), "max_connections"), (dict(keep_alive_s=2.5), "keep_alive_s"),
                       (dict(max_connections_per_client=10**6), "max_connections_per_client"),
                       (dict(threads=0), "threads"), (dict(threads=10**6), "threads must be at most 256")):
        with pytest.raises(ConfigError, match=match):
            ServeConfig("engine", **bad).check()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write the nginx config"):
        write_nginx_config(tmp_path / "file" / "nginx.conf", ServeConfig("engine"))
