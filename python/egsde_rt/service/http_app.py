"""The service's HTTP contract as a FastAPI app (no Ray here: ``serve.py`` deploys it behind
``@serve.ingress``; FastAPI comes with the ``[ray]`` extra, so import this module only to serve).

* ``POST /translate?seed=S&M=...`` with the bytes of an image file as the body (``Content-Type``
  an image type or ``application/octet-stream``): the translated image as ``image/png``. The
  query parameters are typed: ``seed`` and one parameter per run-time overridable setting,
  derived from the declarations in ``method/settings.py`` (a new setting appears here, in
  ``/openapi.json`` and on the page without touching this file), each parsed by its
  declaration's own text parser (``M=1.0`` and ``ilvr=t`` are refused here as on the command
  line) and bounded by its declared maximum.
* ``GET /healthz``, ``GET /stats``; ``GET /``: the page to try it in a browser
  (``page.html``: no build step, nothing fetched from outside); ``GET /openapi.json`` and
  ``GET /docs`` (Swagger UI, its files served by the fastapi-offline package, not from a CDN).

Every answer but an image is JSON ``{"error": MESSAGE}``. What a request may cost is bounded
before any work: its declared ``Content-Length`` and then the body as it streams in (a running
total, so a chunked body cannot bypass the limit: 413), the time the body may take to arrive
(408), its network evaluations (``check_work``: 400), the image's pixels (checked from its
header by ``egsde_rt.images``: 400). A body that is not an image type is refused (415: a web page
cannot make a browser send a cross-origin simple request here), and so is a ``Host`` other
than the allowed ones (400: a service bound to loopback is not readable by DNS rebinding).
Outcomes of a translation (``translation_response``): the image (200), a result that is not an
image (422, diverged sampling), past its deadline (503), a fault of the server (500, logged
with its traceback).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from importlib.resources import files
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .._version import __version__
from ..errors import ConfigError, EgsdeError, ImageError, SamplingCancelled
from ..images import image_to_tensor
from ..method.noise import check_seed
from .proxy import refused_host, upload_too_large, upload_too_slow
from ..method.settings import DECLARATIONS, RUNTIME_OVERRIDABLE, EGSDESettings, overrides_from_text

SEED_HELP = "the noise seed: a translation depends only on the image and its seed (an integer in [0, 2^64))"
ROUTES = "POST /translate, GET /healthz, GET /stats, GET / (the page), GET /docs, GET /openapi.json"
# What /translate takes as its body's Content-Type (parameters such as "; charset" aside).
BODY_TYPES = "image/* or application/octet-stream"
log = logging.getLogger("egsde_rt.service.deployment")


class UploadTooLarge(ImageError):
    """An upload over the service's size limit (413)."""


class UploadTimeout(ImageError):
    """An upload that did not arrive within the service's body deadline (408)."""


class UploadAborted(ImageError):
    """An upload whose client went away before it was complete (400; nobody reads it)."""


class UnsupportedMediaType(ImageError):
    """A body whose Content-Type is not an image type or application/octet-stream (415)."""


# The status of each request error (the first class that matches; any other EgsdeError: 400).
REQUEST_ERROR_STATUS = ((UploadTooLarge, 413), (UploadTimeout, 408), (UnsupportedMediaType, 415))


def request_error_status(err: EgsdeError) -> int:
    return next((status for kind, status in REQUEST_ERROR_STATUS if isinstance(err, kind)), 400)


class ErrorBody(BaseModel):
    """Every 4xx answer: what is wrong, and how to fix it."""

    error: str


class Stats(BaseModel):
    """A replica's request and batch counts, its backend, its engine's image size and settings,
    the bounds of one request, and the replica process's peak resident memory (MB)."""

    requests: int
    batches: int
    max_batch: int
    batch_sizes: dict[str, int]
    backend: str
    device: str
    image_size: int
    settings: dict
    limits: dict
    peak_rss_mb: float


def check_upload_size(nbytes: int, max_upload_mb: float) -> None:
    if nbytes > max_upload_mb * 2**20:
        raise UploadTooLarge(upload_too_large(max_upload_mb, nbytes))


def declared_length(headers) -> int:
    """The body's declared ``Content-Length`` (0 when none is declared); a malformed one is a 400."""
    text = headers.get("content-length")
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"Content-Length must be a non-negative integer, got {text!r}")
    return value


def check_content_type(value: str | None) -> None:
    """``value`` must name an image type or ``application/octet-stream``."""
    kind = (value or "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise UnsupportedMediaType(
            f"the body's Content-Type must be {BODY_TYPES}, got {value!r}: send the image file's bytes with its "
            "type (curl: -H 'Content-Type: image/png' --data-binary @cat.png)")


def check_work(settings: EGSDESettings, max_updates: int) -> None:
    """The request's network evaluations (updates x repeats) within the service's cap."""
    if settings.network_evaluations > max_updates:
        raise ConfigError(
            f"this request asks for {settings.network_evaluations} network evaluations ({settings.num_updates} "
            f"updates x {settings.repeats} repeat(s)), over this service's limit of {max_updates}: lower M, steps "
            "or repeats")


async def read_body(request: Request, max_upload_mb: float, deadline: float) -> bytes:
    """The body as it streams in, with a running total against ``max_upload_mb`` (a chunked body
    is refused as soon as it crosses the limit, not after it is buffered) and the monotonic
    ``deadline`` for the whole of it."""
    chunks, total = [], 0
    stream = request.stream().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(stream.__anext__(), remaining)
        except StopAsyncIteration:
            return b"".join(chunks)
        except ClientDisconnect:  # nobody is left to answer: a quiet 400, not a logged fault
            raise UploadAborted(f"the client went away after {total} bytes of the upload") from None
        except asyncio.TimeoutError:
            raise UploadTimeout(upload_too_slow(total)) from None
        total += len(chunk)
        check_upload_size(total, max_upload_mb)
        chunks.append(chunk)


def arrival(stamp: str | None, request_timeout_s: float) -> float:
    """The monotonic time at which the request reached Serve's proxy, from the guard's stamp
    (``proxy.ARRIVED_HEADER``: wall-clock epoch seconds, since the proxy and the replica are
    other processes, maybe on other machines: their clocks must agree, as NTP keeps them). The
    time since the stamp is clamped to [0, ``request_timeout_s``]: a stamp in the future (a clock
    ahead) counts as now and never extends the deadline, one far in the past at most spends the
    whole of it. Without a stamp (no guard in the proxy), or with one that is not a number, the
    request arrived now."""
    now = time.monotonic()
    try:
        elapsed = time.time() - float(stamp)
    except (TypeError, ValueError):
        return now
    return now - min(max(elapsed, 0.0), request_timeout_s) if math.isfinite(elapsed) else now


def decode_upload(body: bytes, image_size: int, max_pixels: int | None = None):
    """The upload as x0 [3, S, S] (cropped and resized before it becomes RGB: ``egsde_rt.images``), or
    an ``EgsdeError`` naming what is wrong (its format, size, pixels)."""
    return image_to_tensor(body, image_size, max_pixels=max_pixels)


def translation_response(result: BaseException) -> JSONResponse:
    """The answer to a translation that failed: the JSON error of a result that is not an image
    (422), a request past its deadline (503) or a fault of the server (500)."""
    if isinstance(result, ImageError):
        return error_response(str(result), 422)
    if isinstance(result, SamplingCancelled):
        return error_response(str(result), 503, {"Retry-After": "1"})
    if isinstance(result, EgsdeError):
        return error_response(f"the translation failed: {result}", 500)
    return error_response(f"internal error ({type(result).__name__}); the server's log has the details", 500)


def parse_query(params) -> tuple[int, dict]:
    """(seed, overrides) of a query given as text, or the ``EgsdeError`` naming what is wrong."""
    params = dict(params)
    seed_text = params.pop("seed", "0")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"seed must be an integer in [0, 2^64), got {seed_text!r}") from None
    return check_seed(seed), overrides_from_text(params)


def _declared_parser(name: str):
    """The text parser of setting ``name`` as a pydantic validator (what the command line takes)."""
    def parse(value):
        return DECLARATIONS[name].parse(value, name) if isinstance(value, str) else value
    return BeforeValidator(parse)


def query_model() -> type[BaseModel]:
    """/translate's query: ``seed`` and each run-time overridable setting, typed from its
    declaration (choices as an enum, the bound of a costly integer as its maximum; unset: the
    engine's value) and parsed by the declaration's own parser; unknown names are refused."""
    fields = {"seed": (int, Field(0, ge=0, lt=2**64, description=SEED_HELP))}
    for name in RUNTIME_OVERRIDABLE:
        declaration = DECLARATIONS[name]
        kind = Literal[declaration.choices] if declaration.choices else declaration.kind
        bounds = {"ge": declaration.minimum, "le": declaration.maximum} if declaration.maximum else {}
        # unset (None) is no value of the parameter's type: the schema states the type alone
        fields[name] = (Annotated[kind, _declared_parser(name)],
                        Field(None, description=f"{declaration.help} (unset: the engine's)", **bounds))
    return create_model("TranslateQuery", __config__=ConfigDict(extra="forbid"), **fields)


class HostCheck:
    """ASGI middleware: a request whose ``Host`` header names none of ``allowed`` (host names,
    any port) gets a JSON 400 (a service bound to loopback answers only loopback names, so a
    web page cannot reach it through DNS rebinding)."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        refusal = refused_host(scope["headers"], self.allowed) if scope["type"] == "http" else None
        if refusal:
            return await error_response(refusal, 400)(scope, receive, send)
        await self.app(scope, receive, send)


ERROR_RESPONSES = {
    400: {"model": ErrorBody, "description": "a bad image, seed or setting, or more work than the service allows "
                                             "(the message says which and why)"},
    408: {"model": ErrorBody, "description": "the upload did not arrive within the service's body deadline"},
    413: {"model": ErrorBody, "description": "an upload over the service's size limit"},
    415: {"model": ErrorBody, "description": f"a body whose Content-Type is not {BODY_TYPES}"},
}
TRANSLATE_RESPONSES = {
    200: {"content": {"image/png": {}}, "description": "the translated image",
          "headers": {"X-Egsde-Seed": {"description": "the seed used", "schema": {"type": "string"}},
                      "X-Egsde-Batch-Size": {"description": "requests translated together in one native batch",
                                             "schema": {"type": "string"}}}},
    **ERROR_RESPONSES,
    422: {"model": ErrorBody, "description": "the translation is not an image (diverged sampling)"},
    500: {"model": ErrorBody, "description": "a fault of the server (its log has the details)"},
    503: {"description": "more requests than the service can queue, or the request's deadline passed: retry later"},
}
TRANSLATE_BODY = {"requestBody": {
    "required": True, "description": "the bytes of an image file (PNG, JPEG, WebP, BMP, PPM or TIFF)",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def error_response(message: str, status: int, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(allowed_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The app with its error handlers and the page; the deployment adds its routes to it.
    ``allowed_hosts``: the Host names it answers (empty: any)."""
    app = FastAPIOffline(title="egsde-rt", version=__version__, redoc_url=None,
                         description="EGSDE image-to-image translation: POST an image file's bytes to /translate. "
                                     "Try it in a browser at /.")
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=tuple(allowed_hosts))

    @app.exception_handler(EgsdeError)
    async def egsde_error(request: Request, err: EgsdeError):
        return error_response(str(err), request_error_status(err))

    @app.exception_handler(Exception)
    async def server_fault(request: Request, err: Exception):
        log.error("egsde-rt serve: %s %s failed", request.method, request.url.path, exc_info=err)
        return error_response(f"internal error ({type(err).__name__}); the server's log has the details", 500)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, err: RequestValidationError):
        try:
            parse_query(request.query_params)
        except EgsdeError as parsed:
            return error_response(str(parsed), 400)
        first = err.errors()[0]  # text the parser accepts but the typed parameter does not
        where = ".".join(map(str, first.get("loc", ())[1:])) or "the request"
        return error_response(f"{where}: {first.get('msg')}, got {first.get('input')!r}", 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = {404: f"no route {request.url.path}: {ROUTES}",
                   405: f"{request.method} is not allowed on {request.url.path}: {ROUTES}"}
        return error_response(message.get(err.status_code, str(err.detail)), err.status_code,
                              getattr(err, "headers", None))

    page = files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, summary="A page to try the service in a browser")
    async def index():
        return HTMLResponse(page)

    return app
