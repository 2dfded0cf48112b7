"""The service's load test: ``egsde-rt bench --serve``.

Starts the service (``egsde_rt.service.deployment``) on a local Ray instance, listening on loopback only, and
for each batching setting (max batch size, batch wait) runs ``clients`` concurrent clients that
each send ``requests`` translations one after the other (distinct seeds, one image). Bounded in
count and in time: a client stops at its request count or at ``time_limit_s``, whichever comes
first. Reports, per setting: p50 / p95 / max latency, throughput (responses per second of wall
time), the status codes and the batch sizes the service formed (from each response's
``X-Egsde-Batch-Size``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from io import BytesIO

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..service.deployment import ServeConfig, start, stop

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LoadConfig:
    clients: int = 8
    requests: int = 4  # per client
    batchings: tuple = ((1, 0.0), (4, 10.0), (8, 50.0))  # (max_batch_size, batch_wait_ms)
    port: int = 8471
    time_limit_s: float = 300.0
    query: str = ""  # extra query parameters (settings), e.g. "M=100"

    def check(self) -> "LoadConfig":
        if not (1 <= self.clients <= 64 and 1 <= self.requests <= 1000):
            raise ConfigError("the load test takes 1..64 clients of 1..1000 requests each")
        for size, wait in self.batchings:
            if size < 1 or wait < 0:
                raise ConfigError(f"bad batching setting {size}:{wait} (max batch size >= 1, wait >= 0 ms)")
        return self


def sample_png(size, seed: int = 0, mode: str = "RGB") -> bytes:
    """A PNG of random pixels (``seed``), ``size`` (h, w) or a side, converted to ``mode``."""
    h, w = (size, size) if isinstance(size, int) else size
    array = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


NO_RESPONSE = 0  # the status recorded for a request that timed out or lost its connection


def post(url: str, body: bytes, timeout: float) -> tuple[int, dict, bytes]:
    """(status, lower-case headers, body); status ``NO_RESPONSE`` when none came back in time."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
    except (urllib.error.URLError, OSError) as err:  # timeouts and refused or reset connections
        return NO_RESPONSE, {}, str(err).encode()


def wait_healthy(port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise ConfigError(f"the service did not become healthy on port {port} within {timeout_s:.0f} s")
        time.sleep(0.5)


def with_seed(url: str, seed: int) -> str:
    """``url`` (maybe with a query already) asking for ``seed``."""
    return f"{url}{'&' if '?' in url else '?'}seed={seed}"


def _percentile(values, q):
    return float(np.percentile(values, q)) if values else None


def run_load(url: str, body: bytes, clients: int, requests: int, time_limit_s: float) -> dict:
    """``clients`` threads, each sending up to ``requests`` POSTs in turn; latencies and outcomes."""
    deadline = time.monotonic() + time_limit_s

    def client(index: int) -> list:
        outcomes = []
        for r in range(requests):
            if time.monotonic() > deadline:
                break
            sent = time.perf_counter()
            status, headers, _ = post(with_seed(url, index * requests + r), body,
                                      timeout=max(1.0, deadline - time.monotonic()))
            outcomes.append((status, time.perf_counter() - sent, headers.get("x-egsde-batch-size")))
        return outcomes

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [o for per_client in pool.map(client, range(clients)) for o in per_client]
    wall = time.perf_counter() - started
    ok = [latency for status, latency, _ in outcomes if status == 200]
    return {
        "requests": len(outcomes), "ok": len(ok), "status": dict(Counter(str(s) for s, _, _ in outcomes)),
        "wall_s": wall, "throughput_per_s": len(ok) / wall if wall > 0 else None,
        "latency_p50_s": _percentile(ok, 50), "latency_p95_s": _percentile(ok, 95),
        "latency_max_s": max(ok) if ok else None,
        "batch_sizes": dict(Counter(b for s, _, b in outcomes if s == 200 and b is not None)),
    }


def load_test(service: ServeConfig, load: LoadConfig, *, image_size: int, log=print,
              ray_init_args: dict | None = None) -> list[dict]:
    """One run of ``run_load`` per batching setting, each against a freshly deployed service."""
    load.check()
    body = sample_png(image_size)
    url = f"http://{LOOPBACK}:{load.port}/translate" + (f"?{load.query}" if load.query else "")
    runs = []
    try:
        for max_batch, wait_ms in load.batchings:
            config = replace(service, max_batch_size=int(max_batch), batch_wait_ms=float(wait_ms),
                             max_queued_requests=max(service.max_queued_requests, load.clients))
            start(config, host=LOOPBACK, port=load.port, ray_init_args=ray_init_args)
            wait_healthy(load.port)
            post(with_seed(url, 0), body, timeout=load.time_limit_s)  # warm up
            log(f"load: {load.clients} clients x {load.requests} requests, max batch {max_batch}, wait {wait_ms} ms")
            result = run_load(url, body, load.clients, load.requests, load.time_limit_s)
            with urllib.request.urlopen(f"http://{LOOPBACK}:{load.port}/stats", timeout=30) as response:
                stats = json.loads(response.read())
            runs.append({"max_batch_size": int(max_batch), "batch_wait_ms": float(wait_ms),
                         "clients": load.clients, "requests_per_client": load.requests,
                         "backend": stats["backend"], "device": stats["device"], **result})
    finally:
        stop()
    return runs


def _seconds(value) -> str:
    return f"{value:.3f}" if value is not None else "-"


def format_load_table(runs: list[dict]) -> str:
    lines = ["| backend | max batch | wait ms | clients | ok / sent | p50 s | p95 s | images/s | batch sizes seen |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in runs:
        sizes = ", ".join(f"{k}x{v}" for k, v in sorted(r["batch_sizes"].items(), key=lambda kv: int(kv[0])))
        lines.append(f"| {r['backend']} | {r['max_batch_size']} | {r['batch_wait_ms']:g} | {r['clients']} "
                     f"| {r['ok']} / {r['requests']} "
                     f"| {_seconds(r['latency_p50_s'])} | {_seconds(r['latency_p95_s'])} "
                     f"| {_seconds(r['throughput_per_s'])} | {sizes} |")
    return "\n".join(lines)
