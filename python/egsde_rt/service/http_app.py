"""The service's HTTP contract as a FastAPI app (no Ray here: ``serve.py`` deploys it behind
``@serve.ingress``; FastAPI comes with the ``[ray]`` extra, so import this module only to serve).

* ``POST /translate?seed=S&M=...`` with an image file as the body (its bytes, ``Content-Type`` an
  image type or ``application/octet-stream``, or a ``multipart/form-data`` form with one file
  field: ``upload``): the translated image as ``image/png``. The query parameters are typed:
  ``seed`` (which the route takes itself) and one parameter per run-time overridable setting,
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
header by ``egsde_rt.images``: 400, naming ``--max-pixels``). A body of another type is refused
(415), a browser request from another origin too (403: ``refused_origin``, the cross-site
request forgery rule), and so is a ``Host`` other than the allowed ones (400: a service bound to
loopback is not readable by DNS rebinding).
Outcomes of a translation (``translation_response``): the image (200), a result that is not an
image (422, diverged sampling), past its deadline (503), a fault of the server (500, logged
with its traceback).
"""

from __future__ import annotations

import logging
import math
import time
from importlib.resources import files
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException

from .._version import __version__
from ..errors import ConfigError, EgsdeError, ImageError, ImageTooLargeError, SamplingCancelled
from ..images import FITS, check_fit, fit_square
from ..method.noise import check_seed
from .proxy import refused_host
from .upload import BODY_TYPES, UnsupportedMediaType, UploadTimeout, UploadTooLarge
from ..method.settings import DECLARATIONS, RUNTIME_OVERRIDABLE, EGSDESettings, overrides_from_text

SEED_HELP = "the noise seed: a translation depends only on the image and its seed (an integer in [0, 2^64))"
ROUTES = "POST /translate, GET /healthz, GET /stats, GET / (the page), GET /docs, GET /openapi.json"
# The query parameter the route takes itself, beside the settings.
SEED = "seed"
# ... and how the upload becomes the engine's square (``images.FITS``: crop, the default, or pad).
FIT = "fit"
FIT_HELP = ("how the image becomes the engine's S x S square: crop (its centre square; the answer is S x S) or pad "
            "(the whole image, padded; the answer keeps its aspect ratio, its longer side S)")
# Methods that change nothing (RFC 9110's safe methods): the cross-origin rule leaves them alone.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Sec-Fetch-Site values of a request the service's own page (or the user, not a page) made.
SAME_ORIGIN_SITES = ("same-origin", "none")
# How the pixel limit is raised in a service (images.check_pixels names the Python argument).
SERVE_PIXELS_HINT = "ask the service's operator to raise egsde-rt serve --max-pixels"
log = logging.getLogger("egsde_rt.service.deployment")


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


def check_work(settings: EGSDESettings, max_updates: int) -> None:
    """The request's network evaluations (updates x repeats) within the service's cap."""
    if settings.network_evaluations > max_updates:
        raise ConfigError(
            f"this request asks for {settings.network_evaluations} network evaluations ({settings.num_updates} "
            f"updates x {settings.repeats} repeat(s)), over this service's limit of {max_updates}: lower M, steps "
            "or repeats")


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


def decode_upload(body: bytes, image_size: int, max_pixels: int | None = None, fit: str = "crop"):
    """The upload as (x0 [3, S, S], the box of x0 that shows the image) made by ``fit`` (cropped, or
    resized whole and padded, before it becomes RGB: ``egsde_rt.images.fit_square``), or
    an ``EgsdeError`` naming what is wrong (its format, size, pixels: what raises the pixel limit of
    a service is its ``--max-pixels``, not the Python argument ``images`` names)."""
    try:
        return fit_square(body, image_size, max_pixels, fit)
    except ImageTooLargeError as err:
        raise err.with_fix(SERVE_PIXELS_HINT) from None


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
    overrides = overrides_from_text(params, handled=(SEED, FIT))
    check_fit(params.get(FIT, "crop"))
    seed_text = params.get(SEED, "0")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"seed must be an integer in [0, 2^64), got {seed_text!r}") from None
    return check_seed(seed), overrides


def _declared_parser(name: str):
    """The text parser of setting ``name`` as a pydantic validator (what the command line takes)."""
    def parse(value):
        return DECLARATIONS[name].parse(value, name) if isinstance(value, str) else value
    return BeforeValidator(parse)


def query_model() -> type[BaseModel]:
    """/translate's query: ``seed`` and each run-time overridable setting, typed from its
    declaration (choices as an enum, the bound of a costly integer as its maximum; unset: the
    engine's value) and parsed by the declaration's own parser; unknown names are refused."""
    fields = {SEED: (int, Field(0, ge=0, lt=2**64, description=SEED_HELP)),
              FIT: (Literal[FITS], Field("crop", description=FIT_HELP))}
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


def refused_origin(method: str, headers) -> str | None:
    """Why a request with these ASGI ``headers`` is refused as a cross-site request forgery (a
    browser made it for a page of another origin); None when it is not one.

    Why: a page anywhere can make its visitor's browser POST to this service (an HTML form, or
    ``fetch`` with ``mode: "no-cors"``) without asking it first, for the "simple" body types:
    ``text/plain``, ``application/x-www-form-urlencoded`` and ``multipart/form-data``. The page
    cannot read the answer, but the translation would run: a page could spend the service's
    work, or a loopback service's on the visitor's own machine. Any other body type needs the
    browser's CORS preflight, which this service never grants. With ``multipart/form-data``
    accepted, the body type alone no longer refuses such a request, so the request's origin
    does, as Go's ``net/http.CrossOriginProtection`` decides it (browsers set these headers;
    a page cannot forge them):

    * ``Sec-Fetch-Site`` (every current browser): ``same-origin`` (the page at ``/``) or ``none``
      (the user, not a page) pass; ``same-site`` (another port of the same host) and
      ``cross-site`` are refused;
    * without it (older browsers), ``Origin``: passes when its host and port are the request's
      ``Host`` (or the ``X-Forwarded-Host`` the nginx front sets: a browser cannot send that
      header cross-origin without a preflight); ``null`` or another origin is refused;
    * with neither, the request is no browser's (curl, Python, a server) or a same-origin
      request of a browser that sends neither: it passes.

    Safe methods (``SAFE_METHODS``) change nothing and pass."""
    if method.upper() in SAFE_METHODS:
        return None
    named = {name.lower(): value.decode("latin-1").strip() for name, value in headers}
    site, origin = named.get(b"sec-fetch-site"), named.get(b"origin")
    if site is not None:
        if site.lower() in SAME_ORIGIN_SITES:
            return None
        evidence = f"Sec-Fetch-Site: {site}"
    elif origin is None:
        return None
    else:
        hosts = {named.get(b"host", "").lower(), named.get(b"x-forwarded-host", "").lower()} - {""}
        if origin.lower() != "null" and urlsplit(origin).netloc.lower() in hosts:
            return None
        evidence = f"Origin: {origin}"
    return (f"a page of another origin cannot make a browser run a translation here ({evidence}): translate "
            "from this service's own page (/), or call it from a program (curl, Python requests, a server), "
            "which sends no Origin")


class CrossOriginCheck:
    """ASGI middleware: a request ``refused_origin`` refuses gets a JSON 403 before anything is
    read (its body included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        refusal = refused_origin(scope["method"], scope["headers"]) if scope["type"] == "http" else None
        if refusal:
            return await error_response(refusal, 403)(scope, receive, send)
        await self.app(scope, receive, send)


ERROR_RESPONSES = {
    400: {"model": ErrorBody, "description": "a bad image, form, seed or setting, or more work than the service "
                                             "allows (the message says which and why)"},
    403: {"model": ErrorBody, "description": "a browser's request for a page of another origin (cross-site request "
                                             "forgery): call the service from its page or from a program"},
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
IMAGE_FILE = "an image file (PNG, JPEG, WebP, BMP, PPM or TIFF)"
TRANSLATE_BODY = {"requestBody": {
    "required": True,
    "description": f"{IMAGE_FILE}: its bytes as the body (Content-Type an image type or application/octet-stream), "
                   "or a multipart/form-data form with one field, the file (any name; the seed and settings go in "
                   "the query)",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"], "additionalProperties": False,
                    "properties": {"image": {"type": "string", "format": "binary", "description": IMAGE_FILE}}}}}}}


def error_response(message: str, status: int, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(allowed_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The app with its error handlers and the page; the deployment adds its routes to it.
    ``allowed_hosts``: the Host names it answers (empty: any)."""
    app = FastAPIOffline(title="egsde-rt", version=__version__, redoc_url=None,
                         description="EGSDE image-to-image translation: POST an image file to /translate (its bytes, "
                                     "or a form with one file field). Try it in a browser at /.")
    app.add_middleware(CrossOriginCheck)
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
