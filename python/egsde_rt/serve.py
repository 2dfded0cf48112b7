"""Translation as a service on Ray Serve: ``egsde-rt serve ENGINE`` (``pip install egsde-rt[ray]``).

One deployment, ``replicas`` copies, each holding one ``Translator``. Requests that arrive
together are batched by ``serve.batch`` (up to ``max_batch_size``, waiting at most
``batch_wait_ms`` for a batch to fill); requests of a batch with the same settings run as one
native batch, each image with its own seed, so a response is what ``Translator.run`` gives for
that image and seed whatever it was batched with (see *The noise contract* in the README).

HTTP (on the Serve proxy, ``host``:``port``):

* ``POST /translate?seed=S&M=...&ls=...`` with the bytes of an image file as the body: the
  translated image as ``image/png`` (headers ``X-Egsde-Seed`` and ``X-Egsde-Batch-Size``, the
  number of requests translated together in one native batch). Query parameters: ``seed`` (default 0) and the
  run-time overridable settings (``settings.RUNTIME_OVERRIDABLE``).
* ``GET /healthz``: ``ok`` once the replica's engine is loaded.
* ``GET /stats``: the replica's request and batch counts (JSON).

A bad image, seed or setting gets 400 with the ``EgsdeError`` message (JSON ``{"error": ...}``),
a body over ``max_upload_mb`` 413, a result that is not an image 422. More requests than the
replicas can queue (``max_queued_requests``) get 503 from Serve, never a crash. On SIGINT or
SIGTERM the service stops taking requests, lets the ones in flight finish (up to
``graceful_shutdown_s``), and shuts down.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from io import BytesIO

from .distributed import actor_resources, init_ray, require_ray
from .errors import ConfigError, EgsdeError, ImageError
from .io import decode_image_bytes, image_to_tensor, tensor_to_images
from .noise import check_seed
from .settings import check_positive_int, overrides_from_text

APP_NAME = "egsde-rt"


@dataclass(frozen=True)
class ServeConfig:
    """How the service runs: the engine and its backend, and Serve's batching and queueing."""

    engine_dir: str
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    replicas: int = 1
    max_batch_size: int = 4
    batch_wait_ms: float = 10.0
    max_queued_requests: int = 64
    cpus_per_replica: float = 1.0
    max_upload_mb: float = 32.0
    graceful_shutdown_s: float = 30.0

    def check(self) -> "ServeConfig":
        for name in ("replicas", "max_batch_size", "max_queued_requests"):
            check_positive_int(getattr(self, name), name)
        for name in ("batch_wait_ms", "cpus_per_replica", "max_upload_mb", "graceful_shutdown_s"):
            if not getattr(self, name) >= 0 or (name != "batch_wait_ms" and getattr(self, name) == 0):
                raise ConfigError(f"{name} must be {'>= 0' if name == 'batch_wait_ms' else 'positive'}, "
                                  f"got {getattr(self, name)!r}")
        return self


class UploadTooLarge(ImageError):
    """An upload over the service's size limit (answered with 413)."""


def check_upload_size(nbytes: int, max_upload_mb: float) -> None:
    if nbytes > max_upload_mb * 2**20:
        raise UploadTooLarge(f"the upload is {nbytes / 2**20:.1f} MB, over the service's {max_upload_mb:g} MB limit")


def parse_request(query: dict, body: bytes, image_size: int, max_upload_mb: float):
    """(x0 [3, S, S], seed, overrides) of a request, or an ``EgsdeError`` naming what is wrong."""
    check_upload_size(len(body), max_upload_mb)  # also for uploads that declared no length
    params = dict(query)
    seed_text = params.pop("seed", "0")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"seed must be an integer in [0, 2^64), got {seed_text!r}") from None
    seed = check_seed(seed)
    overrides = overrides_from_text(params)
    return image_to_tensor(decode_image_bytes(body), image_size), seed, overrides


def png_bytes(image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _service_class(serve):
    """The deployment class (defined once Ray is imported: ``serve.batch`` decorates it)."""
    import torch
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    from .runtime.translator import Translator

    class TranslationService:
        def __init__(self, config: ServeConfig):
            self.config = config
            self.translator = Translator(config.engine_dir, backend=config.backend, device=config.device,
                                         precision=config.precision)
            self.batch_sizes: Counter = Counter()
            self._translate.set_max_batch_size(config.max_batch_size)
            self._translate.set_batch_wait_timeout_s(config.batch_wait_ms / 1000.0)

        @serve.batch
        async def _translate(self, items: list) -> list:
            """One batch of (x0, seed, overrides): groups of equal settings run as one native batch."""
            self.batch_sizes[len(items)] += 1
            groups: dict = {}
            for i, (_, _, overrides) in enumerate(items):
                groups.setdefault(json.dumps(overrides, sort_keys=True), []).append(i)
            results: list = [None] * len(items)
            for key, members in groups.items():
                x0 = torch.stack([items[i][0] for i in members])
                seeds = [items[i][1] for i in members]
                try:
                    pngs = await asyncio.to_thread(self._run_group, x0, seeds, json.loads(key))
                    for i, png in zip(members, pngs):
                        results[i] = (png, len(members))
                except EgsdeError as err:
                    for i in members:
                        results[i] = err
            return results

        def _run_group(self, x0, seeds, overrides) -> list:
            """One native batch, encoded as PNGs (in a worker thread: the event loop stays free)."""
            y = self.translator.run_tensor(x0, seed=seeds, **overrides)
            return [png_bytes(image) for image in tensor_to_images(torch.as_tensor(y))]

        def stats(self) -> dict:
            return {"requests": sum(n * c for n, c in self.batch_sizes.items()),
                    "batches": sum(self.batch_sizes.values()),
                    "max_batch": max(self.batch_sizes, default=0),
                    "batch_sizes": {str(n): c for n, c in sorted(self.batch_sizes.items())},
                    "backend": self.translator.backend, "device": self.translator.choice.device}

        async def __call__(self, request):
            path, method = request.url.path.rstrip("/"), request.method
            if path == "/healthz" and method == "GET":
                return PlainTextResponse("ok")
            if path == "/stats" and method == "GET":
                return JSONResponse(self.stats())
            if path != "/translate":
                return JSONResponse({"error": f"no route {path}: POST /translate, GET /healthz, GET /stats"},
                                    status_code=404)
            if method != "POST":
                return JSONResponse({"error": "POST the image file's bytes to /translate"}, status_code=405)
            try:
                # refused before reading the body
                check_upload_size(int(request.headers.get("content-length") or 0), self.config.max_upload_mb)
                body = await request.body()
                x0, seed, overrides = await asyncio.to_thread(  # decoding off the event loop
                    parse_request, dict(request.query_params), body, self.translator.image_size,
                    self.config.max_upload_mb)
                self.translator.settings_with(**overrides)
            except EgsdeError as err:
                return JSONResponse({"error": str(err)}, status_code=413 if isinstance(err, UploadTooLarge) else 400)
            result = await self._translate((x0, seed, overrides))
            if isinstance(result, EgsdeError):
                return JSONResponse({"error": str(result)}, status_code=422)
            png, batch = result
            return Response(png, media_type="image/png",
                            headers={"X-Egsde-Seed": str(seed), "X-Egsde-Batch-Size": str(batch)})

    return TranslationService


def _application(config: ServeConfig, actor_options: dict):
    """The Serve application of a checked ``config``; each replica reserves ``actor_options``."""
    from ray import serve

    deployment = serve.deployment(
        name="translate", num_replicas=config.replicas, ray_actor_options=actor_options,
        # enough requests in each replica for a full batch while the previous one runs
        max_ongoing_requests=2 * config.max_batch_size, max_queued_requests=config.max_queued_requests,
        graceful_shutdown_timeout_s=config.graceful_shutdown_s, health_check_period_s=5,
    )(_service_class(serve))
    return deployment.bind(config)


def start(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          ray_init_args: dict | None = None) -> None:
    """Start Ray (local without ``address``), Serve's HTTP proxy on host:port, and the service.
    Each replica takes one GPU where the cluster has GPUs (device auto or cuda), else
    ``cpus_per_replica`` CPU slots (the rule of ``distributed.actor_resources``)."""
    ray = require_ray()
    from ray import serve

    config.check()
    from .engine import load_engine_dir

    load_engine_dir(config.engine_dir)  # a bad engine fails here, before Ray starts, not in a replica
    global _started_ray
    if not ray.is_initialized():
        init_ray(ray, address, ray_init_args)
        _started_ray = True
    _, actor_options = actor_resources(ray, config.replicas, config.cpus_per_replica, config.device)
    app = _application(config, actor_options)
    serve.start(http_options={"host": host, "port": int(port)})
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as err:  # a replica could not start (e.g. its backend is not usable there)
        raise EgsdeError(f"the service did not start: {str(err).splitlines()[0]}") from None


_started_ray = False  # whether start() started Ray in this process (then stop() stops it)


def stop() -> None:
    """Graceful: Serve drains the requests in flight of this service. If this process started
    Ray, Serve and Ray stop too; on a cluster joined by address, only this application goes."""
    global _started_ray
    ray = require_ray()
    from ray import serve

    if _started_ray:
        serve.shutdown()
        ray.shutdown()
        _started_ray = False
    else:
        serve.delete(APP_NAME)


def serve_forever(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
                  log=print) -> None:
    """``egsde-rt serve``: start, then wait for SIGINT or SIGTERM and stop gracefully."""
    start(config, host=host, port=port, address=address)
    log(f"serving {config.engine_dir} at http://{host}:{port}/translate ({config.replicas} replica(s), batches of "
        f"up to {config.max_batch_size}, waiting {config.batch_wait_ms:g} ms); Ctrl-C stops")
    stopping = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        log("stopping: letting the requests in flight finish ...")
        stop()
