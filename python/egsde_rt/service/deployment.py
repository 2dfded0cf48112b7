"""Translation as a service on Ray Serve: ``egsde-rt serve ENGINE`` (``pip install egsde-rt[ray]``).

One deployment, ``replicas`` copies, each holding one ``Translator``, with the FastAPI app of
``http_app`` as its ingress (``@serve.ingress``: typed query parameters, ``/openapi.json``,
``/docs``, the page at ``/``). Requests that arrive together are batched by ``serve.batch`` (up
to ``max_batch_size``, waiting at most ``batch_wait_ms`` for a batch to fill); requests of a
batch with the same settings run as one native batch, each image with its own seed, so a
response is what ``Translator.run`` gives for that image and seed whatever it was batched with
(see *The noise contract* in docs/native-core.md).

HTTP (on the Serve proxy, ``host``:``port``; the contract is ``http_app``'s):

* ``POST /translate?seed=S&M=...&ls=...`` with an image file as the body (its bytes, or a form
  with one file field: ``upload``): the translated image as ``image/png`` (headers
  ``X-Egsde-Seed`` and ``X-Egsde-Batch-Size``, the number of requests translated together in
  one native batch). Query parameters: ``seed`` (default 0) and the run-time overridable
  settings (``settings.RUNTIME_OVERRIDABLE``).
* ``GET /healthz``: ``ok`` once the replica's engine is loaded.
* ``GET /stats``: the replica's request and batch counts, backend, image size and settings (JSON).

A bad image, seed or setting gets 400 with the ``EgsdeError`` message (JSON ``{"error": ...}``),
a body over ``max_upload_mb`` 413 (counted as it streams in), one slower than ``body_timeout_s``
408, a body of another type than ``upload.BODY_TYPES`` 415, a browser's request for a page of
another origin 403 (``http_app.refused_origin``), more network evaluations than ``max_updates``
400, a result that is not an image 422, a request not answered within ``request_timeout_s`` of its
arrival at Serve's proxy 503, a fault of the server 500 (logged with its traceback); the requests
of one batch with other settings are not affected by a failing group. A group's translation is
cancelled between updates once every request of it is past its deadline or gone (its client went
away, or Serve's proxy timed it out). Serve's HTTP proxy runs ``proxy``'s guard (the upload
limit and deadline, the Host check, the client headers Serve would act on dropped, the request's
id and arrival stamped), installed through the environment when ``start`` starts Ray. More
requests than the replicas can queue (``max_queued_requests``) get 503 from Serve, never a
crash. At most ``decodes`` threads of a replica decode uploads. On SIGINT or SIGTERM the service
stops taking requests, lets the ones in flight finish (up to ``graceful_shutdown_s``), and
shuts down. Bound to loopback (the default), the service answers only requests whose ``Host``
is a loopback name. Serve's proxy (uvicorn) has no deadline for a request's headers and no
connection limit; in the open, run the nginx front that ``front_proxy`` renders from the same
``ServeConfig`` (``header_timeout_s``, ``max_connections``, ``max_connections_per_client``).
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations, and the
# query model is local to ``_service_class``.
import asyncio
import json
import logging
import math
import os
import resource
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from io import BytesIO

from ..cpu_threads import MAX_THREADS, slot_threads
from ..jobs.ray_data import actor_resources, init_ray, require_ray
from ..runtime.devices import Device
from ..errors import ConfigError, EgsdeError, SamplingCancelled
from .proxy import ARRIVED_HEADER, guard_environment
from ..method.settings import MAX_BATCH_SIZE, check_positive_int

APP_NAME = "egsde-rt"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Serve's own proxy timeout, beyond the app's deadline: the app answers first (with JSON).
PROXY_TIMEOUT_MARGIN_S = 10.0
log = logging.getLogger("egsde_rt.service.deployment")


def option(default, help: str, *, flag: bool = True, maximum: int | None = None, zero: bool = False):
    """A field of ``ServeConfig`` with its help, whether ``egsde-rt serve`` offers it as a flag,
    and its bounds: an integer is 1..``maximum``, a number positive (or 0 too, ``zero``)."""
    return field(default=default, metadata={"help": help, "flag": flag, "maximum": maximum, "zero": zero})


@dataclass(frozen=True)
class ServeConfig:
    """How the service runs: the engine and its backend, Serve's batching and queueing, and the
    bounds of one request. Each field with ``flag`` is an option of ``egsde-rt serve``
    (``--max-upload-mb`` ...), so a new bound is declared here alone."""

    engine_dir: str
    backend: str = option("auto", "the backend", flag=False)
    device: str = option("auto", "the device", flag=False)
    precision: str = option("fp32", "the networks' precision", flag=False)
    threads: int | None = option(None, "CPU threads of each replica's translations (default: its CPU slots, "
                                       "cpus_per_replica, at least 1: cpu_threads.slot_threads)", flag=False,
                                 maximum=MAX_THREADS)
    replicas: int = option(1, "copies of the service, each with its own Translator")
    max_batch_size: int = option(4, f"requests translated together at most (1..{MAX_BATCH_SIZE})",
                                 maximum=MAX_BATCH_SIZE)
    batch_wait_ms: float = option(10.0, "how long a batch waits to fill", zero=True)
    max_queued_requests: int = option(64, "beyond this, requests get 503")
    cpus_per_replica: float = option(1.0, "CPU slots each replica reserves")
    max_upload_mb: float = option(32.0, "the largest upload (MB), counted as it streams in (413 beyond)")
    max_updates: int | None = option(None, "network evaluations (updates x repeats) one request may ask for (400 "
                                           "beyond; default: the engine's own run, its settings' updates x repeats)")
    decodes: int = option(2, "threads a replica decodes uploads with (the other uploads wait, within their "
                             "deadline)")
    max_pixels: int | None = option(None, "the largest image (pixels) a request may upload, checked from its header "
                                          "before decoding (default: the engine's, see egsde_rt.images)")
    body_timeout_s: float = option(30.0, "seconds an upload may take to arrive (408 beyond)")
    request_timeout_s: float = option(120.0, "seconds a request may take from its arrival at Serve's proxy, "
                                             "decoding, queueing and translation included (503 beyond; the "
                                             "translation of its group is cancelled once every request of it is past "
                                             "its deadline or its client went away)")
    keep_alive_s: int = option(5, "seconds an idle keep-alive connection stays open (Serve's proxy and the nginx "
                                  "front)", maximum=3600)
    header_timeout_s: float = option(10.0, "seconds a client may take to send a request's headers (the nginx front, "
                                           "--nginx-config: Serve's proxy has no such deadline)")
    max_connections: int = option(512, "connections the nginx front holds at once, from all clients (503 beyond)",
                                  maximum=65536)
    max_connections_per_client: int = option(32, "connections the nginx front holds at once from one client "
                                                 "address (503 beyond)", maximum=65536)
    graceful_shutdown_s: float = option(30.0, "seconds the requests in flight get to finish on SIGTERM")
    allowed_hosts: tuple = option((), "Host names the service answers (empty: any; start() sets the loopback "
                                      "names when it listens on loopback)", flag=False)

    def check(self) -> "ServeConfig":
        if not (isinstance(self.allowed_hosts, tuple) and all(isinstance(h, str) and h for h in self.allowed_hosts)):
            raise ConfigError(f"allowed_hosts must be a tuple of host names, got {self.allowed_hosts!r}")
        for f in fields(self):
            value, bounds = getattr(self, f.name), f.metadata
            if f.type is int or (f.type == (int | None) and value is not None):
                check_positive_int(value, f.name, maximum=bounds["maximum"])
            elif f.type is float:
                number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                if not number or value < 0 or (value == 0 and not bounds["zero"]):
                    raise ConfigError(f"{f.name} must be a finite number {'>= 0' if bounds['zero'] else '> 0'}, "
                                      f"got {value!r}")
        return self


SERVE_OPTIONS = tuple(f for f in fields(ServeConfig) if f.metadata.get("flag"))


def png_bytes(image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _http():
    """``http_app`` (FastAPI, from the ``[ray]`` extra), or an ``EgsdeError`` naming the extra."""
    try:
        from . import http_app
    except ImportError as err:
        raise EgsdeError(f"egsde-rt serve needs FastAPI ({err.name} is missing): pip install 'egsde-rt[ray]'") \
            from None
    return http_app


def _service_class(serve, config: ServeConfig):
    """The deployment class with its FastAPI ingress (defined once Ray is imported:
    ``serve.batch`` and ``serve.ingress`` decorate it)."""
    from typing import Annotated

    from fastapi import Query, Request
    from fastapi.responses import PlainTextResponse, Response

    from ..runtime.translator import Translator

    http = _http()
    from . import upload

    app = http.create_app(config.allowed_hosts)
    TranslateQuery = http.query_model()

    @serve.ingress(app)
    class TranslationService:
        def __init__(self, config: ServeConfig):
            self.config = config
            threads = slot_threads(config.cpus_per_replica) if config.threads is None else config.threads
            self.translator = Translator(config.engine_dir, backend=config.backend, device=config.device,
                                         precision=config.precision, max_pixels=config.max_pixels, threads=threads)
            if config.max_batch_size > self.translator.max_batch:
                raise ConfigError(f"--max-batch-size {config.max_batch_size} exceeds the {self.translator.backend} "
                                  f"plans' batch range 1..{self.translator.max_batch}: lower it, or rebuild the plans "
                                  "for larger batches (egsde-rt build --max-batch N)")
            self.batch_sizes: Counter = Counter()
            # the work one request may ask for: by default the engine's own run
            self.max_updates = config.max_updates or self.translator.settings.network_evaluations
            self.decode = Decoder(config.decodes, http.decode_upload)
            self._translate.set_max_batch_size(config.max_batch_size)
            self._translate.set_batch_wait_timeout_s(config.batch_wait_ms / 1000.0)

        @serve.batch
        async def _translate(self, items: list) -> list:
            """One batch of ``Pending`` requests (see ``translate_groups``)."""
            self.batch_sizes[len(items)] += 1
            return await translate_groups(items, self._run_group)

        def _run_group(self, x0, seeds, overrides, wanted, boxes) -> list:
            return translate_before(self.translator, x0, seeds, overrides, wanted, self.config.request_timeout_s, boxes)

        @app.post("/translate", summary="Translate one image", response_class=Response,
                  responses=http.TRANSLATE_RESPONSES, openapi_extra=http.TRANSLATE_BODY)
        async def translate(self, request: Request, query: Annotated[TranslateQuery, Query()]):
            config = self.config
            # from the arrival at Serve's proxy (the guard's stamp), else from now
            arrived = http.arrival(request.headers.get(ARRIVED_HEADER.decode()), config.request_timeout_s)
            # refused before reading the body (a cross-origin browser request already is: http.CrossOriginCheck)
            boundary = upload.body_boundary(request.headers.get("content-type"))
            upload.check_upload_size(upload.declared_length(request.headers), config.max_upload_mb)
            overrides = query.model_dump(exclude={http.SEED, http.FIT}, exclude_none=True)
            http.check_work(self.translator.settings_with(**overrides), self.max_updates)
            deadline = arrived + config.request_timeout_s
            busy = SamplingCancelled(f"no answer within the service's {config.request_timeout_s:g} s: retry later "
                                     "(the service is busy)")
            if time.monotonic() >= deadline:  # spent waiting for a replica, in Serve's proxy and router
                return http.translation_response(busy)
            # the body's own deadline counts from here: Serve's proxy holds a body that arrived in time
            # while the request waits for a replica (the guard bounds its arrival at the proxy)
            body = await upload.read_image(request, boundary, config.max_upload_mb,
                                           min(deadline, time.monotonic() + config.body_timeout_s))
            pending = None
            try:
                x0, box = await asyncio.wait_for(
                    self.decode(body, self.translator.image_size, self.translator.max_pixels, query.fit),
                    max(0.0, deadline - time.monotonic()))
                del body
                pending = Pending(x0, query.seed, overrides, deadline, box)
                result = await asyncio.wait_for(self._translate(pending), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                result = busy
            finally:  # answered, timed out, or cancelled (the client went away, Serve's proxy timed it out)
                if pending is not None:
                    pending.cancelled.set()  # nobody waits for its translation any more
            if isinstance(result, tuple):
                png, batch = result
                return Response(png, media_type="image/png",
                                headers={"X-Egsde-Seed": str(query.seed), "X-Egsde-Batch-Size": str(batch)})
            return http.translation_response(result)

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
                    "image_size": self.translator.image_size, "settings": self.translator.settings.to_dict(),
                    "limits": limits(self.config, self.translator, self.max_updates),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    return TranslationService


class Decoder:
    """Uploads decoded off the event loop by a pool of ``workers`` threads, so at most ``workers``
    decodes ever run at once, whatever their callers do: a wait that times out (or is cancelled)
    cancels its decode if no thread has started it; one that has started holds its thread to its
    end (a thread cannot be stopped), and the next decode waits for a free thread. (A semaphore
    around ``asyncio.to_thread`` did not bound them: a timed-out wait released the semaphore
    while its thread decoded on.)"""

    def __init__(self, workers: int, decode):
        self.decode = decode
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="egsde-decode")

    async def __call__(self, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.decode, *args)


@dataclass
class Pending:
    """One request waiting for its translation: x0, seed, the settings' overrides, the monotonic
    deadline, and ``cancelled``, set (from the event loop; read by the translation's thread)
    once nobody waits for its answer: its client went away, Serve's proxy timed it out, or its
    route stopped waiting."""

    x0: object
    seed: int
    overrides: dict
    deadline: float
    box: tuple | None = None  # the part of the answer that shows the image (fit=pad); None: all of it
    cancelled: threading.Event = field(default_factory=threading.Event)

    def wanted(self, now: float) -> bool:
        return now < self.deadline and not self.cancelled.is_set()


def still_wanted(members: list):
    """Whether some request of a group still waits for it, in time (as a callable for the progress
    callback): a group goes on while one member is before its deadline and not cancelled."""
    def wanted() -> bool:
        now = time.monotonic()
        return any(pending.wanted(now) for pending in members)
    return wanted


async def translate_groups(items: list, run_group) -> list:
    """The outcomes of one batch of ``Pending`` requests: the requests with equal settings run
    together as one native batch (a group), ``run_group(x0, seeds, overrides, wanted, boxes)`` in a
    worker thread (the event loop stays free), ``wanted`` the group's ``still_wanted``. A group's
    outcome is its own: (PNG bytes, group size) per request, or the exception that ended the group
    (the route maps it to an answer; one that is no ``EgsdeError`` is logged with its traceback),
    never another group's. A group whose every request is past its deadline or cancelled is not
    run."""
    import torch

    groups: dict = {}
    for i, pending in enumerate(items):
        groups.setdefault(json.dumps(pending.overrides, sort_keys=True), []).append(i)
    results: list = [None] * len(items)
    for key, members in groups.items():
        wanted = still_wanted([items[i] for i in members])
        try:
            if not wanted():
                raise SamplingCancelled("the request's deadline passed (or its client went away) while it was "
                                        "queued: retry later (the service is busy)")
            x0 = torch.stack([items[i].x0 for i in members])
            pngs = await asyncio.to_thread(run_group, x0, [items[i].seed for i in members], json.loads(key), wanted,
                                           [items[i].box for i in members])
            for i, png in zip(members, pngs):
                results[i] = (png, len(members))
        except Exception as err:  # noqa: BLE001 - every fault is this group's answer (a 500 if unexpected)
            if not isinstance(err, EgsdeError):
                log.error("egsde-rt serve: a group of %d request(s) failed", len(members), exc_info=err)
            for i in members:
                results[i] = err
    return results


def translate_before(translator, x0, seeds, overrides: dict, wanted, request_timeout_s: float,
                     boxes: list | None = None) -> list:
    """One native batch as PNG bytes, each cut to its box (None: the whole image), cancelled
    between updates once ``wanted()`` (the group's
    ``still_wanted``) turns false: every request of it past its deadline or gone
    (``SamplingCancelled``, saying so)."""
    import torch

    from ..images import cut_to_boxes, tensor_to_images

    def in_time(done, total):
        return wanted()

    try:
        y = translator.run_tensor(x0, seed=seeds, callback=in_time, **overrides)
    except SamplingCancelled:
        raise SamplingCancelled(f"the translation did not finish within the service's {request_timeout_s:g} s (or "
                                "its clients went away): retry later, or ask for fewer updates (M, steps, repeats)") \
            from None
    return [png_bytes(image) for image in cut_to_boxes(tensor_to_images(torch.as_tensor(y)), boxes)]


def limits(config: ServeConfig, translator, max_updates: int) -> dict:
    """The bounds of one request, as /stats reports them."""
    return {"max_upload_mb": config.max_upload_mb, "max_updates": max_updates,
            "max_pixels": translator.max_pixels, "body_timeout_s": config.body_timeout_s,
            "request_timeout_s": config.request_timeout_s, "decodes": config.decodes, "threads": translator.threads}


def _application(config: ServeConfig, actor_options: dict):
    """The Serve application of a checked ``config``; each replica reserves ``actor_options``."""
    from ray import serve

    deployment = serve.deployment(
        name="translate", num_replicas=config.replicas, ray_actor_options=actor_options,
        # enough requests in each replica for a full batch while the previous one runs
        max_ongoing_requests=2 * config.max_batch_size, max_queued_requests=config.max_queued_requests,
        # a replica that hangs (not one that is busy: translations run off its event loop) is
        # replaced after three missed health checks, about 45 s (Serve's default timeout: 30 s each)
        graceful_shutdown_timeout_s=config.graceful_shutdown_s, health_check_period_s=5, health_check_timeout_s=10,
    )(_service_class(serve, config))
    return deployment.bind(config)


def proxy_guard(config: ServeConfig) -> dict:
    """The environment that installs ``serve_proxy``'s guard, with ``config``'s limits, in Serve's
    HTTP proxy (a Ray cluster started elsewhere needs it where it starts: docs/reliability.md)."""
    return guard_environment(int(config.max_upload_mb * 2**20), config.body_timeout_s, config.allowed_hosts)


def start(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          ray_init_args: dict | None = None) -> None:
    """Start Ray (local without ``address``), Serve's HTTP proxy on host:port, and the service.
    Each replica takes one GPU where the cluster has GPUs (device auto or cuda), else
    ``cpus_per_replica`` CPU slots (the rule of ``distributed.actor_resources``)."""
    ray = require_ray()
    from ray import serve

    if not config.allowed_hosts and host in LOOPBACK_HOSTS:
        config = replace(config, allowed_hosts=LOOPBACK_HOSTS)
    config.check()
    from ..engine import load_engine_dir

    load_engine_dir(config.engine_dir)  # a bad engine fails here, before Ray starts, not in a replica
    _http()  # and so does a missing FastAPI
    global _started_ray
    guard = proxy_guard(config)
    if not ray.is_initialized():
        if address is None:  # Ray starts here: its Serve proxy inherits the guard
            os.environ.update(guard)
        init_ray(ray, address, ray_init_args)
        _started_ray = True
    if any(os.environ.get(name) != value for name, value in guard.items()):
        log.warning("egsde-rt serve: Serve's HTTP proxy may run without egsde-rt's guard (it bounds what a request "
                    "costs the proxy: the upload limit and deadline, the Host check, Ray's timeout headers dropped): "
                    "start Ray with these environment variables: %s",
                    " ".join(f"{name}='{value}'" for name, value in guard.items()))
    _, actor_options = actor_resources(ray, config.replicas, config.cpus_per_replica, Device.parse(config.device))
    app = _application(config, actor_options)
    # What Ray lets a caller set of its proxy's uvicorn: the request timeout and the keep-alive
    # (no header deadline, no connection limit: the nginx front, front_proxy, brings those).
    serve.start(http_options={"host": host, "port": int(port), "keep_alive_timeout_s": config.keep_alive_s,
                              "request_timeout_s": config.request_timeout_s + PROXY_TIMEOUT_MARGIN_S})
    try:
        with _without_record(SERVE_LOGGER, RECONNECT_NOTICE):
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as err:  # a replica could not start (e.g. its backend is not usable there)
        raise EgsdeError(f"the service did not start: {str(err).splitlines()[0]}") from None


# ``serve.start`` is the one way to give Serve's proxy its options, and ``serve.run`` then calls
# Ray's ``serve_start`` again, without options: finding the Serve just started, Ray logs "Connecting
# to existing Serve app ... New http_options/controller_options will not be applied" on every fresh
# start, though nothing was left out. That record alone is dropped, during ``serve.run`` alone: the
# same notice from ``serve.start`` (a Serve already running on a cluster joined by address, whose
# options are then not ours) is kept, with Ray's warning when its options differ.
SERVE_LOGGER = "ray.serve"  # ray.serve._private.constants.SERVE_LOGGER_NAME
RECONNECT_NOTICE = "Connecting to existing Serve app"


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def _without_record(logger_name: str, prefix: str):
    """Within the block, the records of logger ``logger_name`` whose message starts with
    ``prefix`` are dropped (its other records, and other loggers', are not)."""
    drop, logger = _DropRecords(prefix), logging.getLogger(logger_name)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


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
