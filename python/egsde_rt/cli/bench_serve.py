"""``egsde-rt bench --serve``: a load test of ``egsde-rt serve`` on loopback, or (with --hostile)
its answers to hostile requests."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..runtime.devices import resolve
from .flags import add_serve_flags, service_config


def add_flags(parser) -> None:
    """The --serve group of ``bench``: the load, the batchings compared and the service's options."""
    load = parser.add_argument_group("--serve: a load test of `egsde-rt serve` on loopback (needs the [ray] extra)")
    load.add_argument("--serve", action="store_true", help="load-test the service instead of timing translations")
    load.add_argument("--clients", type=int, default=8, help="concurrent clients")
    load.add_argument("--requests", type=int, default=4, help="requests per client, sent one after the other")
    load.add_argument("--batchings", nargs="+", default=["1:0", "4:10", "8:50"],
                      help="batching settings to compare, MAX_BATCH:WAIT_MS each (they replace --max-batch-size and "
                      "--batch-wait-ms; not with --hostile)")
    load.add_argument("--port", type=int, default=8471, help="the loopback port the service listens on")
    load.add_argument("--query", help="settings for every request, as a query string (e.g. M=100)")
    load.add_argument("--hostile", action="store_true", help="one request in three hostile (huge repeats, strips, "
                      "chunked floods, slow bodies, EPS, wrong Content-Type, foreign Host ...): every answer must be "
                      "200 or a JSON error within its deadline; reports the replica's peak memory")
    add_serve_flags(load)


def run(args, engine: Path, log) -> int:
    """Serve ``engine`` on loopback and load it (one run per --batchings), or send it hostile requests."""
    from ..bench.machine import record_envelope
    from ..bench.report import write_json
    from ..bench.serve_load import LoadConfig, format_load_table, load_test
    from ..engine import load_engine_dir

    def batching(text):
        size, _, wait = text.partition(":")
        try:
            return int(size), float(wait or 0)
        except ValueError:
            raise ConfigError(f"--batchings takes MAX_BATCH:WAIT_MS pairs such as 4:10, got {text!r}") from None

    from urllib.parse import parse_qsl

    from ..method.settings import overrides_from_text

    query = dict(parse_qsl(args.query or "", keep_blank_values=True))
    query.pop("seed", None)
    overrides_from_text(query)  # a bad setting fails here, not as a 400 on every request

    args.backend = "auto"
    service = service_config(args, engine)
    if args.hostile:
        return _run_hostile(args, service, log)
    load = LoadConfig(clients=args.clients, requests=args.requests, port=args.port,
                      batchings=tuple(batching(b) for b in args.batchings), query=args.query or "")
    runs = load_test(service, load, image_size=load_engine_dir(engine).image_size, log=log)
    record = {**record_envelope(resolve(args.device).kind),
              "config": {"engine": str(engine), "engine_name": args.engine or args.preset or "demo",
                         "clients": load.clients, "requests_per_client": load.requests, "query": load.query,
                         "precision": args.precision},
              "serve_runs": runs}
    print(format_load_table(runs))
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    return 0


def _run_hostile(args, service, log) -> int:
    from ..bench.machine import record_envelope
    from ..bench.report import write_json
    from ..bench.serve_hostile import format_hostile_table, run_hostile

    result = run_hostile(service, port=args.port, clients=args.clients, requests=args.requests,
                         query=args.query or "M=2", log=log)
    record = {**record_envelope(resolve(args.device).kind),
              "config": {"engine": service.engine_dir, "engine_name": args.engine or args.preset or "demo",
                         "query": args.query or "M=2", "precision": args.precision,
                         "service": {f: getattr(service, f) for f in ("max_batch_size", "batch_wait_ms",
                                                                        "max_queued_requests", "max_upload_mb",
                                                                        "max_updates", "body_timeout_s",
                                                                        "request_timeout_s")}},
              "hostile": result}
    print(format_hostile_table(result))
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    return 0 if result["all_as_expected"] else 1
