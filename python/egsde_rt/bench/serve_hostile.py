"""The service under a hostile load: ``egsde-rt bench --serve --hostile``.

``clients`` concurrent clients send ``requests`` requests each to a running service on loopback;
every third is hostile, cycling through ``HOSTILE`` (huge repeats, more work than the service
allows, a 1 x 65535 strip PNG, a header claiming 10^10 pixels, a chunked flood past the upload
limit, a body that trickles in slower than the body deadline, an EPS file, a wrong
``Content-Type``, a foreign ``Host``, bytes that are no image). Requests go over raw sockets,
so that a chunked or slow body is sent as an attacker would, and the sender stops as soon as
the service answers (it does not wait to push a whole flood). Reports, per kind of request: the
statuses, whether every answer is 200 or a JSON 4xx/503 with a message, and the slowest answer
against its deadline; and the replica's peak resident memory (``/stats``). Bounded: every
request has a client-side timeout (the service's request deadline plus a margin).
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from ..service.deployment import start, stop
from .serve_load import LOOPBACK, sample_png, wait_healthy

HOSTILE_EVERY = 3  # one request in three is hostile
WAIT = None  # a chunk of a body that means: send nothing for a while (a slow sender)


@dataclass(frozen=True)
class Probe:
    """One kind of request: its query, headers and body chunks (``WAIT`` pauses), and the
    statuses a safe service answers it with."""

    name: str
    query: str
    body: Callable[[], Iterable]
    expected: tuple
    content_type: str = "image/png"
    host: str | None = None  # None: the service's own address
    chunked: bool = False
    declared_length: int | None = None  # None: the body's real length (not for chunked bodies)


def png(size=(32, 32)) -> bytes:
    """The image of the good requests (and of most hostile ones): ``serve_load.sample_png``."""
    return sample_png(size)


def claimed_size_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (its data is one row)."""
    data = bytearray(sample_png(1, mode="L"))
    # IHDR starts at byte 8: length (4), type (4), width (4), height (4), ...; then its CRC
    import zlib

    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")


def hostile_probes(max_upload_mb: float, body_timeout_s: float) -> list[Probe]:
    """The hostile requests, each with what a safe service answers."""
    flood_chunk = b"\0" * 65536
    flood_chunks = int(8 * max(1.0, max_upload_mb) * 2**20 / len(flood_chunk))  # 8x the limit
    trickle_waits = int(body_timeout_s / 0.1) + 30  # outlasts the body deadline by 3 s
    return [
        Probe("huge repeats", "repeats=2147483647", lambda: [png()], (400,)),
        Probe("too much work", "M=1000&repeats=16", lambda: [png()], (400,)),
        Probe("1 x 65535 strip", "M=2", lambda: [png((1, 65535))], (200,)),
        Probe("10^10 pixels claimed", "M=2", lambda: [claimed_size_png(100_000, 100_000)], (400,)),
        Probe("chunked flood", "M=2", lambda: [flood_chunk] * flood_chunks, (413,), chunked=True),
        Probe("slow body", "M=2", lambda: [b"\x89PNG"] + [WAIT] * trickle_waits, (408,), declared_length=4096),
        Probe("EPS file", "M=2", lambda: [EPS], (400,), content_type="application/octet-stream"),
        Probe("wrong Content-Type", "M=2", lambda: [png()], (415,), content_type="text/plain"),
        Probe("foreign Host", "M=2", lambda: [png()], (400,), host="attacker.example"),
        Probe("no image", "M=2", lambda: [b"GIF89a" + b"\0" * 64], (400,)),
    ]


def legit_probe(query: str) -> Probe:
    return Probe("good", query, lambda: [png()], (200,))


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer within the timeout
    body: bytes
    seconds: float
    sent: int  # body bytes sent before the service answered (or the body ended)


def send(port: int, probe: Probe, seed: int, timeout: float) -> Answer:
    """One request sent over a raw socket; the body stops being sent once the service answers."""
    started = time.monotonic()
    sent = 0
    deadline = started + timeout
    chunks = list(probe.body())
    data = [c for c in chunks if c is not WAIT]
    length = probe.declared_length if probe.declared_length is not None else sum(map(len, data))
    query = f"seed={seed}" + (f"&{probe.query}" if probe.query else "")
    head = [f"POST /translate?{query} HTTP/1.1", f"Host: {probe.host or f'{LOOPBACK}:{port}'}",
            f"Content-Type: {probe.content_type}", "Connection: close",
            "Transfer-Encoding: chunked" if probe.chunked else f"Content-Length: {length}"]
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for chunk in chunks:
                if time.monotonic() > deadline:
                    break
                if chunk is WAIT:
                    if select.select([sock], [], [], 0.1)[0]:
                        break  # answered
                    continue
                if select.select([sock], [], [], 0)[0]:
                    break  # answered: stop sending
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if probe.chunked else chunk)
                except OSError:
                    break  # the service closed the connection: read its answer
                sent += len(chunk)
            else:
                if probe.chunked:
                    sock.sendall(b"0\r\n\r\n")
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            response = http.client.HTTPResponse(sock)
            response.begin()
            return Answer(response.status, response.read(), time.monotonic() - started, sent)
    except (OSError, http.client.HTTPException):
        return Answer(0, b"", time.monotonic() - started, sent)


def is_json_error(body: bytes) -> bool:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(message, str) and bool(message.strip())


def peak_rss_mb(port: int) -> float:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/stats", timeout=30) as response:
        return json.loads(response.read())["peak_rss_mb"]


def hostile_load(port: int, *, clients: int = 16, requests: int = 19, query: str = "M=2",
                 max_upload_mb: float = 1.0, body_timeout_s: float = 2.0, request_timeout_s: float = 60.0) -> dict:
    """``clients`` x ``requests`` requests against the service on ``port`` (its limits as given),
    one in ``HOSTILE_EVERY`` hostile; the outcome per kind (see the module docstring)."""
    probes = hostile_probes(max_upload_mb, body_timeout_s)
    good = legit_probe(query)
    timeout = request_timeout_s + 10.0

    def client(index: int) -> list:
        outcomes = []
        for r in range(requests):
            n = index * requests + r
            probe = probes[(n // HOSTILE_EVERY) % len(probes)] if n % HOSTILE_EVERY == HOSTILE_EVERY - 1 else good
            answer = send(port, probe, n, timeout)
            outcomes.append((probe, answer.status, answer.body, answer.seconds))
        return outcomes

    rss_before = peak_rss_mb(port)
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [o for per_client in pool.map(client, range(clients)) for o in per_client]
    wall = time.monotonic() - started
    kinds: dict = defaultdict(lambda: {"sent": 0, "status": Counter(), "unexpected": 0, "not_json": 0,
                                       "max_s": 0.0})
    for probe, status, body, seconds in outcomes:
        kind = kinds[probe.name]
        kind["sent"] += 1
        kind["status"][str(status)] += 1
        kind["unexpected"] += status not in probe.expected
        kind["not_json"] += status != 200 and not is_json_error(body)
        kind["max_s"] = max(kind["max_s"], seconds)
    return {"requests": len(outcomes), "clients": clients, "hostile_every": HOSTILE_EVERY, "wall_s": wall,
            "deadline_s": timeout, "peak_rss_mb_before": rss_before, "peak_rss_mb_after": peak_rss_mb(port),
            "all_as_expected": all(k["unexpected"] == 0 and k["not_json"] == 0 for k in kinds.values()),
            "slowest_s": max(k["max_s"] for k in kinds.values()),
            "kinds": {name: {**k, "status": dict(k["status"]),
                             "expected": list(next(p.expected for p in [*probes, good] if p.name == name))}
                      for name, k in kinds.items()}}


def format_hostile_table(result: dict) -> str:
    lines = ["| request | sent | answers | expected | not JSON | slowest s |",
             "| --- | ---: | --- | --- | ---: | ---: |"]
    for name, k in result["kinds"].items():
        answers = ", ".join(f"{s}x{n}" for s, n in sorted(k["status"].items()))
        lines.append(f"| {name} | {k['sent']} | {answers} | {', '.join(map(str, k['expected']))} | {k['not_json']} "
                     f"| {k['max_s']:.2f} |")
    lines.append(f"\n{result['requests']} requests from {result['clients']} clients in {result['wall_s']:.1f} s; "
                 f"replica peak RSS {result['peak_rss_mb_before']:.0f} MB before, "
                 f"{result['peak_rss_mb_after']:.0f} MB after")
    return "\n".join(lines)


def run_hostile(service, *, port: int, clients: int, requests: int, query: str = "M=2", log=print,
                ray_init_args: dict | None = None) -> dict:
    """Start the service (``ServeConfig`` ``service``) on loopback, warm it up, run
    ``hostile_load`` against it with its limits, and stop it."""
    start(service, host=LOOPBACK, port=port, ray_init_args=ray_init_args)
    try:
        wait_healthy(port)
        send(port, legit_probe(query), 0, service.request_timeout_s)  # warm up
        log(f"hostile load: {clients} clients x {requests} requests, one in {HOSTILE_EVERY} hostile")
        return hostile_load(port, clients=clients, requests=requests, query=query,
                            max_upload_mb=service.max_upload_mb, body_timeout_s=service.body_timeout_s,
                            request_timeout_s=service.request_timeout_s)
    finally:
        stop()
