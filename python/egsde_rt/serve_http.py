"""The service's HTTP contract as a FastAPI app (no Ray here: ``serve.py`` deploys it behind
``@serve.ingress``; FastAPI comes with the ``[ray]`` extra, so import this module only to serve).

* ``POST /translate?seed=S&M=...`` with the bytes of an image file as the body: the translated
  image as ``image/png``. The query parameters are typed: ``seed`` and one parameter per
  run-time overridable setting, derived from the declarations in ``settings.py`` (a new setting
  appears here, in ``/openapi.json`` and on the page without touching this file).
* ``GET /healthz``, ``GET /stats``; ``GET /``: the page to try it in a browser
  (``serve_page.html``: no build step, nothing fetched from outside); ``GET /openapi.json`` and
  ``GET /docs`` (Swagger UI, its files served by the fastapi-offline package, not from a CDN).

Every 4xx body is JSON ``{"error": MESSAGE}``. A query that does not fit the typed parameters
gets the ``EgsdeError`` message of the settings' own text parser (``parse_query``), so the
service and the command line word a bad value alike; values that fit the types are checked by
the ``Translator`` (``EgsdeError``: 400).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException

from ._version import __version__
from .errors import ConfigError, EgsdeError, ImageError
from .io import decode_image_bytes, image_to_tensor
from .noise import check_seed
from .settings import DECLARATIONS, RUNTIME_OVERRIDABLE, overrides_from_text

SEED_HELP = "the noise seed: a translation depends only on the image and its seed (an integer in [0, 2^64))"
ROUTES = "POST /translate, GET /healthz, GET /stats, GET / (the page), GET /docs, GET /openapi.json"


class UploadTooLarge(ImageError):
    """An upload over the service's size limit (answered with 413)."""


class ErrorBody(BaseModel):
    """Every 4xx answer: what is wrong, and how to fix it."""

    error: str


class Stats(BaseModel):
    """A replica's request and batch counts, its backend, and its engine's image size and settings."""

    requests: int
    batches: int
    max_batch: int
    batch_sizes: dict[str, int]
    backend: str
    device: str
    image_size: int
    settings: dict


def check_upload_size(nbytes: int, max_upload_mb: float) -> None:
    if nbytes > max_upload_mb * 2**20:
        raise UploadTooLarge(f"the upload is {nbytes / 2**20:.1f} MB, over the service's {max_upload_mb:g} MB limit")


def decode_upload(body: bytes, image_size: int, max_upload_mb: float):
    """The upload as x0 [3, S, S], or an ``EgsdeError`` naming what is wrong."""
    check_upload_size(len(body), max_upload_mb)  # also for uploads that declared no length
    return image_to_tensor(decode_image_bytes(body), image_size)


def parse_query(params) -> tuple[int, dict]:
    """(seed, overrides) of a query given as text, or the ``EgsdeError`` naming what is wrong."""
    params = dict(params)
    seed_text = params.pop("seed", "0")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"seed must be an integer in [0, 2^64), got {seed_text!r}") from None
    return check_seed(seed), overrides_from_text(params)


def query_model() -> type[BaseModel]:
    """/translate's query: ``seed`` and each run-time overridable setting, typed from its
    declaration (choices as an enum; unset: the engine's value); unknown names are refused."""
    fields = {"seed": (int, Field(0, ge=0, lt=2**64, description=SEED_HELP))}
    for name in RUNTIME_OVERRIDABLE:
        declaration = DECLARATIONS[name]
        kind = Literal[declaration.choices] if declaration.choices else declaration.kind
        # unset (None) is no value of the parameter's type: the schema states the type alone
        fields[name] = (kind, Field(None, description=f"{declaration.help} (unset: the engine's)"))
    return create_model("TranslateQuery", __config__=ConfigDict(extra="forbid"), **fields)


ERROR_RESPONSES = {
    400: {"model": ErrorBody, "description": "a bad image, seed or setting (the message says which and why)"},
    413: {"model": ErrorBody, "description": "an upload over the service's size limit"},
}
TRANSLATE_RESPONSES = {
    200: {"content": {"image/png": {}}, "description": "the translated image",
          "headers": {"X-Egsde-Seed": {"description": "the seed used", "schema": {"type": "string"}},
                      "X-Egsde-Batch-Size": {"description": "requests translated together in one native batch",
                                             "schema": {"type": "string"}}}},
    **ERROR_RESPONSES,
    422: {"model": ErrorBody, "description": "the translation is not an image (diverged sampling)"},
    503: {"description": "more requests than the service can queue: retry later"},
}
TRANSLATE_BODY = {"requestBody": {
    "required": True, "description": "the bytes of an image file (PNG, JPEG, ...)",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def error_response(message: str, status: int, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app() -> FastAPI:
    """The app with its error handlers and the page; the deployment adds its routes to it."""
    app = FastAPIOffline(title="egsde-rt", version=__version__, redoc_url=None,
                         description="EGSDE image-to-image translation: POST an image file's bytes to /translate. "
                                     "Try it in a browser at /.")

    @app.exception_handler(EgsdeError)
    async def egsde_error(request: Request, err: EgsdeError):
        return error_response(str(err), 413 if isinstance(err, UploadTooLarge) else 400)

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

    page = files(__package__).joinpath("serve_page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, summary="A page to try the service in a browser")
    async def index():
        return HTMLResponse(page)

    return app
