"""Translation as a service on Ray Serve: ``egsde-rt serve ENGINE`` (``pip install egsde-rt[ray]``).

One deployment, ``replicas`` copies, each holding one ``Translator``, with the FastAPI app of
``serve_http`` as its ingress (``@serve.ingress``: typed query parameters, ``/openapi.json``,
``/docs``, the page at ``/``). Requests that arrive together are batched by ``serve.batch`` (up
to ``max_batch_size``, waiting at most ``batch_wait_ms`` for a batch to fill); requests of a
batch with the same settings run as one native batch, each image with its own seed, so a
response is what ``Translator.run`` gives for that image and seed whatever it was batched with
(see *The noise contract* in the README).

HTTP (on the Serve proxy, ``host``:``port``; the contract is ``serve_http``'s):

* ``POST /translate?seed=S&M=...&ls=...`` with the bytes of an image file as the body: the
  translated image as ``image/png`` (headers ``X-Egsde-Seed`` and ``X-Egsde-Batch-Size``, the
  number of requests translated together in one native batch). Query parameters: ``seed`` (default 0) and the
  run-time overridable settings (``settings.RUNTIME_OVERRIDABLE``).
* ``GET /healthz``: ``ok`` once the replica's engine is loaded.
* ``GET /stats``: the replica's request and batch counts, backend, image size and settings (JSON).

A bad image, seed or setting gets 400 with the ``EgsdeError`` message (JSON ``{"error": ...}``),
a body over ``max_upload_mb`` 413, a result that is not an image 422. More requests than the
replicas can queue (``max_queued_requests``) get 503 from Serve, never a crash. On SIGINT or
SIGTERM the service stops taking requests, lets the ones in flight finish (up to
``graceful_shutdown_s``), and shuts down.
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations, and the
# query model is local to ``_service_class``.
import asyncio
import json
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from io import BytesIO

from .distributed import actor_resources, init_ray, require_ray
from .errors import ConfigError, EgsdeError
from .settings import check_positive_int

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


def png_bytes(image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _http():
    """``serve_http`` (FastAPI, from the ``[ray]`` extra), or an ``EgsdeError`` naming the extra."""
    try:
        from . import serve_http
    except ImportError as err:
        raise EgsdeError(f"egsde-rt serve needs FastAPI ({err.name} is missing): pip install 'egsde-rt[ray]'") \
            from None
    return serve_http


def _service_class(serve):
    """The deployment class with its FastAPI ingress (defined once Ray is imported:
    ``serve.batch`` and ``serve.ingress`` decorate it)."""
    from typing import Annotated

    import torch
    from fastapi import Query, Request
    from fastapi.responses import PlainTextResponse, Response

    from .io import tensor_to_images
    from .runtime.translator import Translator

    http = _http()
    app = http.create_app()
    TranslateQuery = http.query_model()

    @serve.ingress(app)
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

        @app.post("/translate", summary="Translate one image", response_class=Response,
                  responses=http.TRANSLATE_RESPONSES, openapi_extra=http.TRANSLATE_BODY)
        async def translate(self, request: Request, query: Annotated[TranslateQuery, Query()]):
            # refused before reading the body
            http.check_upload_size(int(request.headers.get("content-length") or 0), self.config.max_upload_mb)
            overrides = query.model_dump(exclude={"seed"}, exclude_none=True)
            self.translator.settings_with(**overrides)  # checked before the image is decoded
            x0 = await asyncio.to_thread(  # decoding off the event loop
                http.decode_upload, await request.body(), self.translator.image_size, self.config.max_upload_mb)
            result = await self._translate((x0, query.seed, overrides))
            if isinstance(result, EgsdeError):
                return http.error_response(str(result), 422)
            png, batch = result
            return Response(png, media_type="image/png",
                            headers={"X-Egsde-Seed": str(query.seed), "X-Egsde-Batch-Size": str(batch)})

        @app.get("/healthz", response_class=PlainTextResponse, summary="ok once the engine is loaded")
        async def healthz(self):
            return PlainTextResponse("ok")

        @app.get("/stats", response_model=http.Stats, summary="this replica's request and batch counts")
        async def stats(self):
            return {"requests": sum(n * c for n, c in self.batch_sizes.items()),
                    "batches": sum(self.batch_sizes.values()),
                    "max_batch": max(self.batch_sizes, default=0),
                    "batch_sizes": {str(n): c for n, c in sorted(self.batch_sizes.items())},
                    "backend": self.translator.backend, "device": self.translator.choice.device,
                    "image_size": self.translator.image_size, "settings": self.translator.settings.to_dict()}

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
    _http()  # and so does a missing FastAPI
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
