"""The service's bounds, tried as an attacker would: over HTTP against a running service on
loopback (Ray Serve's proxy is uvicorn, the app is the real one: the ``limited_service`` fixture,
the tiny engine, small limits so that each bound is reached quickly). Requests go over raw
sockets (``bench.serve_hostile.send``) so that chunked and slow bodies are sent as an attacker
sends them. Every wait is bounded."""

import json
import time

import pytest

from egsde_rt.bench.serve_hostile import (EPS, WAIT, Probe, claimed_size_png, hostile_load, hostile_probes,
                                          is_json_error, png, send)

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")

PORT = 8475
LIMITS = dict(max_upload_mb=1.0, max_updates=48, body_timeout_s=2.0, request_timeout_s=30.0)


def _proxy_guard():
    from egsde_rt.service.deployment import LOOPBACK_HOSTS, ServeConfig

    return ServeConfig("", allowed_hosts=LOOPBACK_HOSTS, **LIMITS)


PROXY_GUARD = _proxy_guard()  # the limits of Serve's proxy (tests/conftest.py local_ray): the service's
TIMEOUT = 60.0
# The hostile load: 16 clients x 19 requests, one in three hostile; what the replica may grow by.
RSS_GROWTH_BOUND_MB = 300


@pytest.fixture(scope="module")
def limited_service(local_ray, tiny_engine):
    from ray import serve

    from egsde_rt.service import deployment as service_module
    from egsde_rt.bench.serve_load import wait_healthy

    config = service_module.ServeConfig(str(tiny_engine[0]), max_batch_size=4, batch_wait_ms=50,
                                        max_queued_requests=64, cpus_per_replica=0.5, **LIMITS)
    service_module.start(config, port=PORT)
    wait_healthy(PORT)
    yield config
    serve.delete(service_module.APP_NAME)


def _post(query="M=2", body=None, **probe) -> "tuple[int, dict | bytes, float]":
    answer = send(PORT, Probe("test", query, lambda: [png() if body is None else body], (), **probe), 1, TIMEOUT)
    payload = json.loads(answer.body) if answer.status != 200 and is_json_error(answer.body) else answer.body
    return answer.status, payload, answer.seconds


def test_costly_settings_are_refused_before_any_work(limited_service):
    """`?repeats=2147483647` pinned a replica; now every costly value has a bound, and a request's
    network evaluations a cap (``max_updates``), checked before the body is read."""
    for query, match in (("repeats=2147483647", "repeats must be at most 16"), ("repeats=17", "at most 16"),
                         ("M=1001", "M must be at most 1000"), ("M=12&repeats=16", "192 network evaluations"),
                         ("M=1000", "over this service's limit of 48")):
        status, payload, seconds = _post(query)
        assert status == 400 and match in payload["error"], (query, status, payload)
        assert seconds < 10, (query, seconds)
    assert _post("M=12&repeats=4")[0] == 200  # 48 evaluations: the cap itself is allowed


def test_query_text_is_parsed_as_the_command_line_parses_it(limited_service):
    for query, match in (("M=1.0", "M must be an integer"), ("ilvr=t", "ilvr must be true or false"),
                         ("repeats=1e1", "repeats must be an integer")):
        status, payload, _ = _post(query)
        assert status == 400 and match in payload["error"], (query, payload)
    assert _post("M=2&ilvr=true")[0] == 200


def test_a_chunked_body_is_refused_as_it_crosses_the_limit(limited_service):
    """An 8 MB chunked body with a 1 MB limit, sent at about 2.5 MB/s: 413 once about 1 MB has
    arrived, not after the whole body was buffered. (Sent at loopback speed, a flood is read by
    Serve's proxy faster than the 413 comes back; the hostile load test sends it so.)"""
    paced = Probe("paced flood", "M=2", lambda: [b"\0" * 2**18, WAIT] * 32, (413,), chunked=True)
    answer = send(PORT, paced, 1, TIMEOUT)
    assert answer.status == 413 and "1 MB limit" in json.loads(answer.body)["error"]
    assert answer.sent < 3 * 2**20, f"{answer.sent} bytes were taken before the 413"


def test_a_slow_body_gets_408_at_its_deadline(limited_service):
    (slow,) = [p for p in hostile_probes(1.0, 2.0) if p.name == "slow body"]
    answer = send(PORT, slow, 1, TIMEOUT)
    assert answer.status == 408 and "did not arrive in time" in json.loads(answer.body)["error"]
    assert LIMITS["body_timeout_s"] - 0.5 < answer.seconds < LIMITS["body_timeout_s"] + 5


@pytest.mark.parametrize("content_type,status,match", [
    ("text/plain", 415, "Content-Type must be image/*, application/octet-stream or multipart/form-data"),
    ("application/x-www-form-urlencoded", 415, "-H 'Content-Type: image/png' --data-binary @cat.png"),
    ("", 415, "-F image=@cat.png"), ("multipart/form-data; boundary=x", 400, "multipart/form-data body is malformed"),
    ("image/png", 200, None), ("image/jpeg", 200, None), ("application/octet-stream", 200, None)])
def test_the_body_must_be_an_image_or_a_form(limited_service, content_type, status, match):
    """Other types are refused (415) naming the two ways that work; a PNG sent as a form it is not
    is a 400. (A page's cross-origin form post is refused by its origin: test_serve_contract.py.)"""
    got, payload, _ = _post(content_type=content_type)
    assert got == status, payload
    if match:
        assert match in payload["error"], payload


def test_a_form_is_counted_against_the_limit_as_it_streams_in(limited_service):
    """A chunked 8 MB form (one file) with a 1 MB limit: 413 once about 1 MB has arrived."""
    head = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n')
    paced = Probe("paced form", "M=2", lambda: [head] + [b"\0" * 2**18, WAIT] * 32, (413,), chunked=True,
                  content_type="multipart/form-data; boundary=b")
    answer = send(PORT, paced, 1, TIMEOUT)
    assert answer.status == 413 and "1 MB limit" in json.loads(answer.body)["error"]
    assert answer.sent < 3 * 2**20, f"{answer.sent} bytes were taken before the 413"


@pytest.mark.parametrize("host,status", [("attacker.example", 400), (f"attacker.example:{PORT}", 400),
                                         (f"localhost:{PORT}", 200), (f"[::1]:{PORT}", 200), ("127.0.0.1", 200)])
def test_a_service_on_loopback_answers_only_loopback_names(limited_service, host, status):
    """DNS rebinding: a page of attacker.example resolving to 127.0.0.1 cannot read the service."""
    got, payload, _ = _post(host=host)
    assert got == status, payload
    if status == 400:
        assert "is not served here" in payload["error"]


def _flat_png(height, width) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


UPLOADS = {"EPS (Ghostscript)": (EPS, 400, "format"),
           "10^10 pixels claimed": (claimed_size_png(100_000, 100_000), 400, "pixels"),
           # 1.1 Mpx > 2^20 (32-px engine): the message names the flag that raises it
           "over the engine's pixel cap": (_flat_png(1100, 1000), 400, "raise egsde-rt serve --max-pixels"),
           "1 x 65535 strip": (png((1, 65535)), 200, None), "65535 x 1 strip": (png((65535, 1)), 200, None)}


@pytest.mark.parametrize("name", list(UPLOADS))
def test_uploads_are_decoded_safely(limited_service, name):
    body, status, match = UPLOADS[name]
    started = time.monotonic()
    got, payload, _ = _post(body=body, content_type="application/octet-stream")
    assert got == status, (name, payload)
    if match:
        assert match in payload["error"], (name, payload)
    assert time.monotonic() - started < 20, name


def test_one_group_failing_does_not_fail_another(limited_service):
    """Two requests batched together with other settings: the one whose translation diverges gets
    422, the other its image."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        diverged, good = pool.map(lambda q: _post(q), ["M=2&ls=1e38&li=1e38", "M=2"])
    assert diverged[0] == 422 and "NaN or infinite" in diverged[1]["error"], diverged
    assert good[0] == 200


def test_a_hostile_load_gets_only_the_expected_answers_within_deadlines(limited_service):
    """300 requests at concurrency 16, one third hostile: every answer is 200 or the expected
    JSON 4xx, none past its deadline, and the replica's peak memory grows by less than
    ``RSS_GROWTH_BOUND_MB``."""
    result = hostile_load(PORT, clients=16, requests=19, max_upload_mb=LIMITS["max_upload_mb"],
                          body_timeout_s=LIMITS["body_timeout_s"], request_timeout_s=LIMITS["request_timeout_s"])
    print(json.dumps(result, indent=1))
    assert result["requests"] == 304
    unexpected = {k: v for k, v in result["kinds"].items() if v["unexpected"] or v["not_json"]}
    assert not unexpected, unexpected
    assert result["slowest_s"] < LIMITS["request_timeout_s"]
    assert result["peak_rss_mb_after"] - result["peak_rss_mb_before"] < RSS_GROWTH_BOUND_MB
    assert _post()[0] == 200  # still serving


def test_a_good_request_after_the_attacks_is_answered(limited_service):
    status, payload, seconds = _post("M=3")
    assert status == 200 and seconds < 30


# --- the parts of the route, without Ray ----------------------------------------------------------

def test_each_group_of_a_batch_gets_its_own_outcome():
    """A batch of three groups: one raises an unexpected error (a TypeError), one an EgsdeError,
    one succeeds. Each request gets its own group's outcome, and the unexpected one answers as a
    JSON 500 that names no detail but the error's kind."""
    import asyncio

    import torch

    from egsde_rt.errors import NativeError
    from egsde_rt.service.deployment import Pending, translate_groups
    from egsde_rt.service.http_app import translation_response

    def run_group(x0, seeds, overrides, wanted, boxes):
        if overrides.get("M") == 1:
            raise TypeError("an int too large to convert")
        if overrides.get("M") == 2:
            raise NativeError("sampler: out of memory")
        return [f"png {s}".encode() for s in seeds]

    far = time.monotonic() + 60
    items = [Pending(torch.zeros(3, 4, 4), seed, {"M": m}, far) for seed, m in ((0, 1), (1, 3), (2, 2), (3, 3), (4, 1))]
    results = asyncio.run(translate_groups(items, run_group))
    assert results[1] == (b"png 1", 2) and results[3] == (b"png 3", 2)
    assert isinstance(results[0], TypeError) and results[4] is results[0]
    assert isinstance(results[2], NativeError)
    unexpected, native = translation_response(results[0]), translation_response(results[2])
    assert unexpected.status_code == 500
    assert json.loads(unexpected.body)["error"].startswith("internal error (TypeError)")
    assert native.status_code == 500 and "out of memory" in json.loads(native.body)["error"]


def test_a_group_past_its_deadline_or_cancelled_is_not_run_and_answers_503():
    import asyncio

    import torch

    from egsde_rt.service.deployment import Pending, translate_groups
    from egsde_rt.service.http_app import translation_response

    ran = []
    late = Pending(torch.zeros(3, 4, 4), 0, {}, time.monotonic() - 1)
    gone = Pending(torch.zeros(3, 4, 4), 1, {"M": 2}, time.monotonic() + 60)
    gone.cancelled.set()
    results = asyncio.run(translate_groups([late, gone], lambda *args: ran.append(args)))
    assert not ran
    for result in results:
        assert translation_response(result).status_code == 503
        assert "deadline passed (or its client went away) while it was queued" in str(result)


def test_a_translation_is_cancelled_between_updates_at_its_deadline(tiny_torch_engine):
    """``translate_before`` stops the native loop at the deadline (the thread cannot be killed:
    the progress callback cancels it), well before the run's end."""
    from egsde_rt.errors import SamplingCancelled
    from egsde_rt.runtime.translator import Translator
    from egsde_rt.service.deployment import translate_before

    import torch

    translator = Translator(tiny_torch_engine[0])
    x0 = torch.zeros(1, 3, 32, 32)
    started = time.monotonic()
    translator.run_tensor(x0, M=12)  # warm up, and the time of 12 updates
    full = time.monotonic() - started
    started = time.monotonic()
    deadline = time.monotonic() + full
    with pytest.raises(SamplingCancelled, match="did not finish within the service's 5 s"):
        translate_before(translator, x0, [0], {"M": 1000}, lambda: time.monotonic() < deadline, 5.0)
    assert time.monotonic() - started < 20 * full + 1  # 1000 updates would take ~80x the 12-update run
    assert len(translate_before(translator, x0, [0], {"M": 2}, lambda: True, 5.0)) == 1


class CountingTranslator:
    """A stand-in for ``Translator.run_tensor``: ``updates`` updates of ``seconds`` each, the
    progress callback asked after each (False: cancelled, as the native loop does)."""

    def __init__(self, updates=200, seconds=0.01):
        self.updates, self.seconds, self.done = updates, seconds, 0

    def run_tensor(self, x0, seed, callback, **overrides):
        import torch

        from egsde_rt.errors import SamplingCancelled

        for done in range(1, self.updates + 1):
            time.sleep(self.seconds)
            self.done = done
            if not callback(done, self.updates):
                raise SamplingCancelled("cancelled by the progress callback")
        return torch.zeros(x0.shape[0], 3, 4, 4)


def _run_group_cancelling(translator, cancel, after_s=0.3):
    """A group of two requests (far deadlines) through ``translate_groups`` and ``translate_before``;
    ``cancel(members)`` runs ``after_s`` seconds in, as the routes of gone clients do. Its results."""
    import asyncio

    import torch

    from egsde_rt.service.deployment import Pending, translate_before, translate_groups

    members = [Pending(torch.zeros(3, 4, 4), seed, {"M": 2}, time.monotonic() + 60) for seed in (0, 1)]

    def run_group(x0, seeds, overrides, wanted, boxes):
        return translate_before(translator, x0, seeds, overrides, wanted, 60.0)

    async def main():
        batch = asyncio.ensure_future(translate_groups(members, run_group))
        await asyncio.sleep(after_s)
        cancel(members)
        return await asyncio.wait_for(batch, 30)

    return asyncio.run(main())


def test_a_group_whose_clients_all_went_away_stops_between_updates():
    """Requests whose client disconnected (or that Serve's proxy timed out) are cancelled in the
    replica: their ``Pending.cancelled`` is set, and the group's translation stops at the next
    update once every member is cancelled or past its deadline; a group with one live member goes
    on. (Before, only the deadline stopped it: 200 updates ran for nobody.)"""
    from egsde_rt.errors import SamplingCancelled

    gone = CountingTranslator()
    results = _run_group_cancelling(gone, lambda members: [p.cancelled.set() for p in members])
    assert all(isinstance(r, SamplingCancelled) for r in results), results
    assert gone.done < gone.updates / 2, f"{gone.done} of {gone.updates} updates ran for clients that went away"

    one_left = CountingTranslator()
    results = _run_group_cancelling(one_left, lambda members: members[0].cancelled.set())
    assert one_left.done == one_left.updates and [r[1] for r in results] == [2, 2]


def test_at_most_decodes_threads_decode_whatever_the_waits_do():
    """``--decodes 2`` with slow decodes and waits that time out: at most 2 decodes ever run at
    once, a decode whose wait timed out before a thread took it never runs, and the pool decodes
    again afterwards. (Before, a semaphore around ``asyncio.to_thread`` was released by each
    timed-out wait while its thread decoded on: 6 ran under a limit of 2.)"""
    import asyncio
    import threading

    from egsde_rt.service.deployment import Decoder

    lock, running, peak, started = threading.Lock(), [0], [0], []

    def slow_decode(body):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(body)
        time.sleep(0.4)
        with lock:
            running[0] -= 1
        return body

    async def main():
        decode = Decoder(2, slow_decode)
        for wave in range(3):  # three waves of three uploads, each wait timing out at 0.05 s
            waits = [asyncio.wait_for(decode(f"{wave}.{i}"), 0.05) for i in range(3)]
            outcomes = await asyncio.gather(*waits, return_exceptions=True)
            assert all(isinstance(o, asyncio.TimeoutError) for o in outcomes), outcomes
        return await asyncio.wait_for(decode("after"), 10)

    assert asyncio.run(main()) == "after"
    assert peak[0] <= 2, f"{peak[0]} decode threads ran at once under --decodes 2"
    assert len(started) < 9, f"all {len(started)} decodes ran, though 7 waits had timed out before a thread was free"


# --- the guard in Serve's proxy, as an ASGI middleware (serve_proxy) -------------------------------

def _guard_run(guard_kwargs, messages, *, headers=(), app_sends_after=None):
    """Run ``ProxyGuard`` around an app that, like Serve's proxy, reads the body until the client
    goes away (keeping what it reads), then answers 200 after ``app_sends_after`` seconds (None:
    never). ``messages``: what the client's receive gives, in order (None: wait forever).
    (what the app kept, the headers it saw, the answers sent, seconds)."""
    import asyncio

    from egsde_rt.service.proxy import ProxyGuard

    kept, sent, seen = [], [], {}

    async def app(scope, receive, send):
        seen.update(dict(scope["headers"]))

        async def drain():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                kept.append(message.get("body", b""))

        async def answer():
            await asyncio.sleep(app_sends_after)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"image"})

        tasks = [asyncio.ensure_future(drain())] + ([asyncio.ensure_future(answer())] if app_sends_after else [])
        await asyncio.wait(tasks, timeout=5, return_when=asyncio.ALL_COMPLETED)
        for task in tasks:
            task.cancel()

    async def main():
        queue = list(messages)

        async def receive():
            if not queue or queue[0] is None:
                await asyncio.sleep(3600)
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [(b"host", b"127.0.0.1:8000"), *headers]}
        started = time.monotonic()
        await ProxyGuard(app, **guard_kwargs)(scope, receive, send)
        return time.monotonic() - started

    seconds = asyncio.run(main())
    return kept, seen, sent, seconds


GUARD = dict(max_upload_bytes=2**20, body_timeout_s=0.3, allowed_hosts=("127.0.0.1", "localhost"))


def _status(sent):
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_the_proxy_guard_stops_buffering_a_flood_at_the_limit():
    chunk = {"type": "http.request", "body": b"\0" * 65536, "more_body": True}
    kept, _, sent, seconds = _guard_run(GUARD, [chunk] * 200)  # 12.5 MB offered
    assert _status(sent) == 413 and "1 MB limit" in json.loads(sent[1]["body"])["error"]
    assert sum(map(len, kept)) <= 2**20 and seconds < 5


def test_the_proxy_guard_answers_a_slow_body_at_its_deadline_and_only_then():
    first = {"type": "http.request", "body": b"\x89PNG", "more_body": True}
    kept, _, sent, seconds = _guard_run(GUARD, [first, None])
    assert _status(sent) == 408 and 0.25 < seconds < 3
    whole = {"type": "http.request", "body": b"\x89PNG", "more_body": False}  # complete: no deadline after it
    _, _, sent, _ = _guard_run(GUARD, [whole, None], app_sends_after=0.8)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]


def test_the_proxy_guard_refuses_before_forwarding_and_drops_rays_timeout_headers():
    body = [{"type": "http.request", "body": b"x", "more_body": False}]
    kept, seen, sent, _ = _guard_run(GUARD, body, headers=[(b"content-length", str(2**21).encode())])
    assert _status(sent) == 413 and not seen  # never forwarded
    for host in (b"attacker.example", b"attacker.example:8000", b"[::1]evil", b""):
        _, seen, sent, _ = _guard_run({**GUARD}, body, headers=[(b"host", host)])
        # the second host header wins in a dict: the scope's own is replaced
        assert _status(sent) == 400 and not seen, host
    _, seen, sent, _ = _guard_run(GUARD, body, headers=[(b"x-request-timeout-seconds", b"0"),
                                                        (b"x-request-disconnect-disabled", b"?1")],
                                  app_sends_after=0.1)
    assert _status(sent) == 200 and b"x-request-timeout-seconds" not in seen
    assert b"x-request-disconnect-disabled" not in seen


def test_the_proxy_guard_drops_every_client_routing_header_as_ray_matches_them(monkeypatch):
    """Serve's proxy routes on the multiplexed model id and the session id (names compared with
    case and -/_ ignored), its ingress router on ``x-serve-router-*``, and takes the request id
    from ``x-request-id``: a client must pick none of them. What reaches the proxy is checked
    with Ray's own matchers; the guard's own request id is a fresh uuid4 per request."""
    from ray.serve._private.constants import (SERVE_HTTP_REQUEST_ID_HEADER, SERVE_INGRESS_ROUTER_HEADER_PREFIX,
                                              SERVE_MULTIPLEXED_MODEL_ID)
    from ray.serve._private.http_util import _matches_session_id_header

    body = [{"type": "http.request", "body": b"x", "more_body": False}]
    client = [(b"serve_multiplexed_model_id", b"m1"), (b"serve-multiplexed-model-id", b"m2"),
              (b"Serve-Multiplexed-Model-Id", b"m3"), (b"x-session-id", b"s1"), (b"x_session_id", b"s2"),
              (b"X-Session-ID", b"s3"), (b"x-serve-router-replica", b"r1"), (b"x_serve_router_zone", b"r2"),
              (b"x-request-id", b"attacker-chosen"), (b"x-request-timeout-seconds", b"0"),
              (b"x_request_disconnect_disabled", b"?1"), (b"x-egsde-arrived", b"0"), (b"x-other", b"kept")]
    ids = set()
    for _ in range(2):
        _, seen, sent, _ = _guard_run(GUARD, body, headers=client, app_sends_after=0.05)
        assert _status(sent) == 200 and seen[b"x-other"] == b"kept"
        for name in seen:
            normal = name.decode().lower().replace("-", "_")
            assert normal != SERVE_MULTIPLEXED_MODEL_ID and not _matches_session_id_header(name.decode()), name
            assert not normal.startswith(SERVE_INGRESS_ROUTER_HEADER_PREFIX.replace("-", "_")), name
            assert normal not in ("x_request_timeout_seconds", "x_request_disconnect_disabled"), name
        request_id = seen[SERVE_HTTP_REQUEST_ID_HEADER.encode()].decode()
        assert len(request_id) == 32 and int(request_id, 16) >= 0 and request_id != "attacker-chosen"
        ids.add(request_id)
    assert len(ids) == 2  # one per request

    monkeypatch.setenv("RAY_SERVE_SESSION_ID_HEADER_KEY", "X-Tenant")  # the session header as configured
    _, seen, _, _ = _guard_run(GUARD, body, headers=[(b"x_tenant", b"t"), (b"x-session-id", b"s")],
                               app_sends_after=0.05)
    assert b"x_tenant" not in seen and seen[b"x-session-id"] == b"s"


def test_the_proxy_guard_stamps_the_arrival_and_the_replica_counts_the_deadline_from_it():
    """The deadline counts from the request's arrival at Serve's proxy: the guard stamps it (wall
    clock: the replica is another process), a client's copy is dropped, and the replica's
    ``arrival`` clamps the time since the stamp to [0, request_timeout_s]."""
    from egsde_rt.service.http_app import arrival

    body = [{"type": "http.request", "body": b"x", "more_body": False}]
    before = time.time()
    _, seen, _, _ = _guard_run(GUARD, body, headers=[(b"x-egsde-arrived", b"1e12")], app_sends_after=0.05)
    assert before <= float(seen[b"x-egsde-arrived"]) <= time.time()

    def spent(stamp, timeout=30.0):
        now = time.monotonic()
        return now - arrival(stamp, timeout)

    assert 2.9 < spent(repr(time.time() - 3)) < 3.5  # 3 s spent before the replica
    assert abs(spent(repr(time.time() + 100))) < 0.5  # a clock ahead never extends the deadline
    assert 29.9 < spent(repr(time.time() - 1e6)) < 30.5  # nor a clock behind spends more than all of it
    for stamp in (None, "", "soon", "nan", "inf", "-inf"):
        assert abs(spent(stamp)) < 0.5, stamp  # no stamp: arrived at the replica


def test_serves_proxy_runs_the_guard(limited_service):
    """Serve's own routes are answered by its proxy, never by the app: a foreign Host refused
    there shows the guard is installed in the proxy (``serve.start`` sets its environment)."""
    import socket

    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as sock:
        sock.sendall(b"GET /-/routes HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"is not served here" in answer


def test_the_running_service_answers_with_its_own_request_id_and_ignores_a_clients_arrival(limited_service):
    """Through Serve's proxy: the answer's ``X-Request-ID`` is the guard's (not the client's), and
    a client's ``x-egsde-arrived: 0`` (the epoch, so a replica that took it would find the
    request's whole deadline spent) changes nothing."""
    import http.client

    for _ in range(2):
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=TIMEOUT)
        try:
            connection.request("POST", "/translate?M=2", body=png(), headers={
                "Content-Type": "image/png", "X-Request-ID": "attacker-chosen", "X-Egsde-Arrived": "0",
                "serve-multiplexed-model-id": "m1", "x-session-id": "s1"})
            answer = connection.getresponse()
            answer.read()
        finally:
            connection.close()
        assert answer.status == 200
        request_id = answer.getheader("X-Request-ID")
        assert request_id and len(request_id) == 32 and request_id != "attacker-chosen", request_id


def test_a_client_that_goes_away_mid_upload_is_a_quiet_400_not_a_logged_fault():
    import asyncio

    from starlette.requests import ClientDisconnect

    from egsde_rt.service.http_app import request_error_status
    from egsde_rt.service.upload import UploadAborted, read_body

    class GoneClient:
        async def _chunks(self):
            yield b"\x89PNG"
            raise ClientDisconnect()

        def stream(self):
            return self._chunks()

    with pytest.raises(UploadAborted, match="went away after 4 bytes") as raised:
        asyncio.run(read_body(GoneClient(), 1.0, time.monotonic() + 5))
    assert request_error_status(raised.value) == 400
