"""The guard Serve's HTTP proxy runs in front of the service: a Starlette middleware installed with
Ray's own hook (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=egsde_rt.service.proxy:middlewares``).

Serve's proxy reads a request's body ahead of any replica (while the request waits for one, too)
into an unbounded buffer, answers its own routes (``/-/routes``, ``/-/healthz``) without the
app, lets a client header turn its request timeout off (``x-request-timeout-seconds: 0``) or
its handling of a client that went away (``x-request-disconnect-disabled``), routes on client
headers (the multiplexed model id, the session id, ``x-serve-router-*``) and takes the client's
``x-request-id`` as the request's id. So the app's bounds (``http_app``) alone do not bound what
one request costs the proxy. In the proxy, before anything is forwarded, the guard

* answers a ``Host`` that is not allowed with 400 and a declared ``Content-Length`` over the
  upload limit with 413;
* drops every client header above (matched as Ray matches them: ``client_controlled``), so
  Serve's own timeout stays on and no client picks its replica or its request id;
* sets the request's id (``x-request-id``: a fresh uuid4, which Serve logs and answers as
  ``X-Request-ID``) and stamps its arrival (``x-egsde-arrived``: wall-clock epoch seconds; a
  client's copy is dropped), from which the replica counts the request's deadline;
* counts the body as the proxy reads it: once the total crosses the limit it answers 413, once
  the body is slower than the body deadline 408, and from then on the proxy sees the client as
  gone (it stops reading and cancels the request), so the proxy buffers at most about the
  upload limit per request.

Its limits come from the environment variable ``GUARD_ENV`` (JSON), which ``serve.start`` sets
with the hook before it starts Ray; a cluster started with ``ray start`` needs both variables set
there (docs/reliability.md). This module imports nothing heavy: the proxy process loads no PyTorch.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

GUARD_ENV = "EGSDE_RT_PROXY_GUARD"
HOOK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
HOOK = "egsde_rt.service.proxy:middlewares"
# Client headers Serve's proxy acts on, compared as Ray compares them (lower case, "-" as "_"):
# two would turn its timeout or disconnect handling off, one picks the replica of a multiplexed
# model, one is the request's id; the guard's own stamp of the arrival is never the client's.
DROPPED_HEADERS = ("x_request_timeout_seconds", "x_request_disconnect_disabled", "serve_multiplexed_model_id",
                   "x_request_id", "x_egsde_arrived")
# The session-id header Serve routes on (sticky sessions): Ray reads its name from this variable,
# in the proxy's process, as the guard does.
SESSION_ID_ENV, SESSION_ID_DEFAULT = "RAY_SERVE_SESSION_ID_HEADER_KEY", "x-session-id"
# Headers the ingress request router of Serve owns.
ROUTER_HEADER_PREFIX = "x_serve_router_"
REQUEST_ID_HEADER = b"x-request-id"
ARRIVED_HEADER = b"x-egsde-arrived"  # when the request reached Serve's proxy (time.time(), as text)


def guard_environment(max_upload_bytes: int, body_timeout_s: float, allowed_hosts=()) -> dict:
    """The environment variables that install the guard with these limits in Serve's proxy."""
    limits = {"max_upload_bytes": int(max_upload_bytes), "body_timeout_s": float(body_timeout_s),
              "allowed_hosts": list(allowed_hosts)}
    return {HOOK_ENV: HOOK, GUARD_ENV: json.dumps(limits)}


def middlewares() -> list:
    """Ray's proxy hook: the guard with the limits of ``GUARD_ENV`` (none: no guard)."""
    from starlette.middleware import Middleware

    text = os.environ.get(GUARD_ENV)
    return [Middleware(ProxyGuard, **json.loads(text))] if text else []


def client_controlled(name: bytes, session_header: str | None = None) -> bool:
    """Whether a request header of this name is one the guard drops: a header Serve's proxy acts
    on (``DROPPED_HEADERS``, the session id named by ``session_header``, default Ray's setting
    from ``SESSION_ID_ENV``, and every ``x-serve-router-*``), compared as Ray compares names (case
    and ``-`` against ``_`` ignored: proxies in front may rewrite either)."""
    if session_header is None:
        session_header = os.environ.get(SESSION_ID_ENV, SESSION_ID_DEFAULT)
    normal = name.decode("latin-1").lower().replace("-", "_")
    return (normal in DROPPED_HEADERS or normal == session_header.lower().replace("-", "_")
            or normal.startswith(ROUTER_HEADER_PREFIX))


def host_name(host: str) -> str | None:
    """The name of a ``Host`` header value (``name``, ``name:port``, ``[v6]``, ``[v6]:port``),
    lower-case; None for a malformed one."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name if rest == "" or (rest.startswith(":") and rest[1:].isdigit()) else None
    name, colon, port = host.partition(":")
    return name if not colon or port.isdigit() else None


def refused_host(headers, allowed) -> str | None:
    """Why a request with these ASGI ``headers`` is not answered, when ``allowed`` (lower-case
    host names; empty: any) does not name its ``Host``; else None. The one Host rule, of the
    guard and of the app (``http_app``: where Serve's proxy runs no guard)."""
    if not allowed:
        return None
    host = dict(headers).get(b"host", b"").decode("latin-1")
    if host_name(host) in allowed:
        return None
    return (f"Host {host!r} is not served here (allowed: {sorted(allowed)}); to serve other names, bind to them "
            "(egsde-rt serve --host)")


def upload_too_large(limit_mb: float, nbytes: int | None = None, declared: bool = False) -> str:
    """The message of an upload over the limit (``nbytes``: what is known of its size)."""
    known = "" if nbytes is None else f" ({nbytes / 2**20:.1f} MB {'declared' if declared else 'at least'})"
    return f"the upload is over the service's {limit_mb:g} MB limit{known}: send a smaller image"


def upload_too_slow(received: int) -> str:
    """The message of an upload that did not arrive within the body deadline."""
    return (f"the upload did not arrive in time ({received} bytes received before the deadline): send the whole "
            "image at once")


async def send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class ProxyGuard:
    """The pure ASGI middleware (see the module docstring)."""

    def __init__(self, app, max_upload_bytes: int, body_timeout_s: float, allowed_hosts=()):
        self.app, self.max_upload_bytes, self.body_timeout_s = app, max_upload_bytes, body_timeout_s
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.session_header = os.environ.get(SESSION_ID_ENV, SESSION_ID_DEFAULT)  # read once, as Ray does

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        arrived = time.time()
        headers = [(k, v) for k, v in scope["headers"] if not client_controlled(k, self.session_header)]
        headers += [(REQUEST_ID_HEADER, uuid.uuid4().hex.encode()), (ARRIVED_HEADER, repr(arrived).encode())]
        scope = {**scope, "headers": headers}
        refusal = refused_host(headers, self.allowed_hosts)
        if refusal:
            return await send_error(send, 400, refusal)
        limit_mb = self.max_upload_bytes / 2**20
        declared = dict(headers).get(b"content-length", b"0").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_upload_bytes:
            return await send_error(send, 413, upload_too_large(limit_mb, int(declared), declared=True))
        await self.app(scope, *self._guarded(receive, send, limit_mb))

    def _guarded(self, receive, send, limit_mb: float):
        """(receive, send) for the proxy: the body counted against the limit and the deadline; once
        the guard has answered, the proxy sees a client that went away, and its own answer is dropped."""
        deadline = time.monotonic() + self.body_timeout_s
        state = {"received": 0, "complete": False, "answered": False, "started": False}

        async def refuse(status: int, message: str):
            if not state["started"]:  # the app has not answered yet: the guard does
                state["started"] = state["answered"] = True
                await send_error(send, status, message)
            return {"type": "http.disconnect"}

        async def guarded_receive():
            if state["answered"]:
                return {"type": "http.disconnect"}
            if state["complete"]:  # the body is in: the proxy now only waits for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return await refuse(408, upload_too_slow(state["received"]))
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_upload_bytes:
                    return await refuse(413, upload_too_large(limit_mb))
                state["complete"] = not message.get("more_body", False)
            return message

        async def guarded_send(message):
            if state["answered"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        return guarded_receive, guarded_send
