"""The nginx front of the service, rendered from its ``ServeConfig``: ``egsde-rt serve ENGINE
--nginx-config DIR/nginx.conf [--nginx-listen HOST:PORT]`` writes it, then serves; run nginx with
the command it prints (``nginx_command``).

Why a front: Serve's HTTP proxy is uvicorn, started by Ray with only a request timeout and a
keep-alive (``ray.serve._private.http_util.start_asgi_http_server``), and uvicorn has no deadline
for a request's headers and no connection limit of its own use there. A client that opens many
connections and never finishes its headers holds them for as long as it likes; the proxy's guard
(``proxy``) sees a request only once its headers are in. What Ray lets the service set, it sets
(``keep_alive_s``); the rest is nginx's, configured here from the same declared bounds:

* ``client_header_timeout`` = ``header_timeout_s``: a connection whose request headers are not
  in by then is closed (nginx answers nothing: it resets it).
* ``limit_conn`` = ``max_connections_per_client`` per client address and ``max_connections`` in
  all (503, JSON). nginx counts a connection there only once its request's headers are read, so
  the half-open connections are bounded by ``client_header_timeout`` in time and by
  ``worker_connections`` (``worker_connections_for``) in number, not by ``limit_conn``.
* ``client_max_body_size`` = ``max_upload_mb`` (413, JSON); ``client_body_timeout`` and
  ``send_timeout`` = ``body_timeout_s`` (nginx's are between two reads or writes, not for the
  whole body: the whole body's deadline is the guard's, see below); ``keepalive_timeout`` =
  ``keep_alive_s``; ``proxy_read_timeout`` = ``request_timeout_s`` plus twice Serve's own margin
  (the replica answers at its deadline, Serve's proxy 10 s after, nginx last).
* ``proxy_request_buffering off`` (the default here): the body streams through to Serve's proxy
  as it arrives, so the guard's deadline for the whole body (408 after ``body_timeout_s``) and
  its running count against the upload limit stay in force, and the request's deadline counts
  from its arrival there; a slow upload holds one Serve connection for at most
  ``body_timeout_s``, and nginx bounds how many such there are. ``request_buffering=True``
  (``on``) has nginx take the whole body first (to disk past ``client_body_buffer_size``): Serve
  then sees only complete uploads, but nginx has no deadline for the whole body (only
  ``client_body_timeout`` between two reads), so a trickling client holds its nginx connection
  for as long as it keeps trickling. ``proxy_buffering on``: nginx takes the answer from Serve
  at once, so a slow reader holds nginx, not Serve.
* Listening on loopback, nginx answers only loopback ``Host`` names (400, JSON), as the service
  does (a web page cannot read it through DNS rebinding); nginx forwards with Serve's own
  address as ``Host``, and with the client's own as ``X-Forwarded-Host`` (the service's
  cross-origin rule, ``http_app.refused_origin``, compares a browser's ``Origin`` with it). Every
  error nginx itself answers is JSON ``{"error": ...}``, as the service's are.

nginx runs with its own prefix (the config's directory: the pid file and the temp directories
live there; errors go to stderr).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from ..errors import ConfigError
from .deployment import LOOPBACK_HOSTS, PROXY_TIMEOUT_MARGIN_S, ServeConfig
from .proxy import upload_too_large

DEFAULT_LISTEN = "127.0.0.1:8080"
UPSTREAM_KEEPALIVE = 32  # idle connections nginx keeps open to Serve's proxy
# nginx's names for the loopback Host values (an IPv6 literal keeps its brackets)
LOOPBACK_SERVER_NAMES = ("127.0.0.1", "localhost", "[::1]")


def parse_address(text: str, what: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``[IPv6]:PORT``, or a ``ConfigError`` naming ``what``."""
    host, colon, port = str(text).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536) or any(c in host for c in " \t;{}[]'\"$"):
        raise ConfigError(f"{what} must be HOST:PORT (e.g. {DEFAULT_LISTEN}, 0.0.0.0:8080 or [::1]:8080), "
                          f"got {text!r}")
    return host, int(port)


def _nginx_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_HOSTS


def worker_connections_for(config: ServeConfig) -> int:
    """nginx's ``worker_connections``: each admitted request holds a client connection and one
    to Serve's proxy, and the idle connections to Serve stay open; the rest of it is what
    half-open connections may take (each for at most ``header_timeout_s``)."""
    return 2 * config.max_connections + UPSTREAM_KEEPALIVE


def _json_error(status: int, message: str, retry: bool = False) -> str:
    assert "$" not in message  # nginx would read a variable
    body = json.dumps({"error": message})
    quoted = '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"'
    retry_after = "add_header Retry-After 1 always; " if retry else ""
    return f"default_type application/json; {retry_after}return {status} {quoted};"


def _seconds(value: float) -> str:
    ms = max(1, round(value * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def nginx_config(config: ServeConfig, *, listen: str = DEFAULT_LISTEN, serve_host: str = "127.0.0.1",
                 serve_port: int = 8000, request_buffering: bool = False) -> str:
    """The text of an nginx.conf that fronts the service of ``config`` (Serve's proxy at
    ``serve_host``:``serve_port``), listening at ``listen`` (see the module docstring)."""
    config.check()
    host, port = parse_address(listen, "--nginx-listen")
    serve_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(serve_host, serve_host)
    upstream = _nginx_address(*parse_address(f"{serve_host}:{serve_port}", "the service's --host and --port"))
    connections = worker_connections_for(config)
    limit_mb = config.max_upload_mb
    loopback = is_loopback(host)
    foreign_host = (f"Host is not served here (allowed: {', '.join(LOOPBACK_SERVER_NAMES)}); to serve other names, "
                    "listen on them (egsde-rt serve --nginx-listen)")
    too_many = ("too many connections to the service, from this address or in all: retry later, with fewer "
                "connections at once")
    unreachable = "the service behind this proxy is not answering: retry later"
    header = "\n".join(f"#   {name} = {getattr(config, name)}" for name in (
        "header_timeout_s", "max_connections", "max_connections_per_client", "max_upload_mb", "body_timeout_s",
        "request_timeout_s", "keep_alive_s"))
    server_names = " ".join(LOOPBACK_SERVER_NAMES) if loopback else "_"
    refuse_foreign = f"""
    # a Host other than a loopback name: 400 (a page cannot read the service through DNS rebinding)
    server {{
        listen {_nginx_address(host, port)} default_server;
        location / {{ {_json_error(400, foreign_host)} }}
    }}
""" if loopback else ""
    return f"""# nginx in front of egsde-rt serve, rendered by egsde_rt.service.front_proxy from the service's bounds:
{header}
# Run it with this file's directory as its prefix (the pid file, the temp directories):
#   nginx -p THIS_DIRECTORY/ -c THIS_FILE -e stderr -g 'daemon off;'
worker_processes auto;
worker_rlimit_nofile {connections + 64};
pid nginx.pid;
error_log stderr warn;

events {{
    # every connection, half-open ones too: nginx's limit_conn counts a connection only once its
    # request headers are read, so half-open connections are bounded by this and the header timeout
    worker_connections {connections};
}}

http {{
    access_log off;
    server_tokens off;
    default_type application/octet-stream;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    # a request's headers within header_timeout_s, or the connection is closed (reset, no answer)
    client_header_timeout {_seconds(config.header_timeout_s)};
    client_header_buffer_size 1k;
    large_client_header_buffers 4 8k;
    reset_timedout_connection on;
    # between two reads of the body / two writes of the answer (the whole body's deadline is the guard's)
    client_body_timeout {_seconds(config.body_timeout_s)};
    send_timeout {_seconds(config.body_timeout_s)};
    client_max_body_size {int(limit_mb * 2**20)};
    keepalive_timeout {config.keep_alive_s}s;

    # connections with a request in progress: per client address and in all
    limit_conn_zone $binary_remote_addr zone=egsde_per_client:10m;
    limit_conn_zone $server_name zone=egsde_all:1m;
    limit_conn_status 503;
    limit_conn_log_level warn;
    # (here for every server: a server with a limit_conn of its own would inherit none of these)
    limit_conn egsde_per_client {config.max_connections_per_client};
    limit_conn egsde_all {config.max_connections};

    upstream egsde_serve {{
        server {upstream};
        keepalive {UPSTREAM_KEEPALIVE};
        # shorter than Serve's keep-alive ({config.keep_alive_s} s): nginx never reuses a connection Serve is closing
        keepalive_timeout {_seconds(config.keep_alive_s / 2)};
    }}
{refuse_foreign}
    server {{
        listen {_nginx_address(host, port)}{"" if loopback else " default_server"};
        server_name {server_names};

        location / {{
            proxy_pass http://egsde_serve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host "{upstream}";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # the client's own Host (a client's copy is replaced): the cross-origin rule compares Origin with it
            proxy_set_header X-Forwarded-Host $http_host;
            # off: the body streams through, the guard's whole-body deadline and count stay in force
            proxy_request_buffering {"on" if request_buffering else "off"};
            proxy_buffering on;
            proxy_connect_timeout 5s;
            proxy_send_timeout {_seconds(config.body_timeout_s)};
            # the replica answers at request_timeout_s, Serve's proxy {PROXY_TIMEOUT_MARGIN_S:g} s later, nginx last
            proxy_read_timeout {_seconds(config.request_timeout_s + 2 * PROXY_TIMEOUT_MARGIN_S)};
            error_page 413 @too_large;
            error_page 503 @too_many;
            error_page 502 504 @unreachable;
        }}
        location @too_large {{ {_json_error(413, upload_too_large(limit_mb))} }}
        location @too_many {{ {_json_error(503, too_many, retry=True)} }}
        location @unreachable {{ {_json_error(502, unreachable, retry=True)} }}
    }}
}}
"""


def nginx_command(config_path) -> str:
    """The command that runs nginx with the config at ``config_path``, its directory as the prefix."""
    path = Path(config_path).absolute()
    return f"nginx -p {path.parent}/ -c {path} -e stderr -g 'daemon off;'"


def write_nginx_config(path, config: ServeConfig, **kwargs) -> str:
    """Write ``nginx_config(config, **kwargs)`` to ``path`` (its directory created); the command
    that runs it."""
    text = nginx_config(config, **kwargs)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write the nginx config {str(path)!r} ({err.strerror}): give a path in a "
                          "writable directory (--nginx-config)") from None
    return nginx_command(path)
