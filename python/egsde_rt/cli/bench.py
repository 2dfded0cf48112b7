"""``egsde-rt bench``: translations timed end to end (eager reference vs every engine backend), or
one of its other modes: --serve (``bench_serve``), --quality, --export, --kernels and --contention."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from ..runtime.backends import backend_names
from ..runtime.devices import resolve
from ..method.presets import PRESETS
from ..method.settings import DECLARATIONS
from . import bench_serve
from .flags import add_device_kind_flag, add_precision_flag, add_seed_flag, add_threads_flag


MAX_CONTENTION = 16  # --contention: processes started at once


def register(sub) -> None:
    """Add ``bench`` to the subcommands."""
    p = sub.add_parser("bench", help="time translations end to end (eager reference vs every engine backend), "
                       "or the native kernels (--kernels)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--engine", help="an engine directory to benchmark")
    source.add_argument("--preset", choices=["demo", *PRESETS], help="a preset (default: demo, the demo's "
                        "networks); the others get random non-degenerate weights, exported once into the cache")
    p.add_argument("--engine-cache", help="where to export a preset's benchmark engine")
    p.add_argument("--batch-size", type=int, nargs="+", help="one or more (a sweep; default 1, --contention 4)")
    p.add_argument("--steps", type=int, help="time only the first N updates (extrapolated, and labelled so)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (medians reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after the first")
    p.add_argument("--phase-runs", type=int, help="uncaptured profiled runs per engine backend for the per-update "
                   "phases (default: --repeats)")
    p.add_argument("--backends", nargs="+", help="default: eager, then every usable backend")
    add_precision_flag(p)
    add_device_kind_flag(p)
    add_seed_flag(p, help="the seed of the translations' noise (and of a preset's random weights)")
    p.add_argument("--json", metavar="PATH", help="write the record as JSON to this path")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the per-step phases (needs matplotlib)")
    bench_serve.add_flags(p)
    p.add_argument("--student", help="a distilled engine measured beside the engine's official sampler, on its "
                                     "default backend (with --quality: by default the demo's shipped student)")
    _quality_flags(p)
    export = p.add_argument_group("--export: the time, peak memory and engine size of `egsde-rt export` of --preset "
                                  "(random weights), measured in a child process")
    export.add_argument("--export", action="store_true", help="measure the export instead of translations")
    export.add_argument("--checkpoint-format", choices=["pt", "safetensors"], default="pt",
                        help="the checkpoints the export reads")
    export.add_argument("--export-formats", nargs="+", choices=["onnx", "torch"], default=["onnx", "torch"],
                        help="what the export writes")
    kernels = p.add_argument_group("--kernels: the native kernels against their eager PyTorch equivalents")
    kernels.add_argument("--kernels", action="store_true", help="time the native kernels instead of translations")
    kernels.add_argument("--size", type=int, default=256, help="the image size the kernels run at")
    kernels.add_argument("--down-N", dest="down_N", type=int, default=32, help="the low-pass factor")
    kernels.add_argument("--iters", type=int, default=20, help="timed iterations per kernel")
    contention = p.add_argument_group("--contention N: N translating processes at once, and one beside N busy "
                                      "processes, against one alone (--batch-size, default 4; --steps, the run's "
                                      "updates, default 20; --repeats; one backend: --backends, default auto)")
    contention.add_argument("--contention", type=int, metavar="N", help=f"translating processes at once "
                            f"(1..{MAX_CONTENTION})")
    add_threads_flag(p, help="CPU threads of each translation (default auto: the CPUs this process may use)")
    p.set_defaults(func=run)


def _quality_flags(p) -> None:
    quality = p.add_argument_group("--quality: the quality-cost curve of the solvers on the demo's held-out split "
                                   "(settings chosen on its tuning split)")
    quality.add_argument("--quality", action="store_true", help="measure the quality-cost curve instead of speed")
    quality.add_argument("--solvers", nargs="+", help="the solvers swept (default: ddpm dpmpp-2m-sde)")
    quality.add_argument("--updates", type=int, nargs="+", help="update counts swept (default: 6 8 10 12 15)")
    quality.add_argument("--ls", type=float, nargs="+", help="domain-specific weights swept (default: 250 500 750 "
                         "1000)")
    quality.add_argument("--li-sweep", type=float, nargs="+", help="domain-independent weights swept (default: "
                         "the engine's)")
    quality.add_argument("--eta-sweep", type=float, nargs="+", help="eta values swept for every solver but ddpm "
                         "(default: 1)")
    quality.add_argument("--spacings", nargs="+", choices=DECLARATIONS["spacing"].choices,
                         help="step spacings swept (default: uniform)")
    quality.add_argument("--lowpass-forms", nargs="+", choices=DECLARATIONS["lowpass"].choices,
                         help="forms of the low-pass expert swept (default: gradient)")
    quality.add_argument("--tuning-count", type=int, help="images of the tuning split (default 128)")
    quality.add_argument("--held-out-count", type=int, help="images of the held-out split (default 256)")
    quality.add_argument("--quality-backend", choices=["auto", *backend_names()], help="default: auto")
    quality.add_argument("--quality-batch-size", type=int, help="images translated together (default 16)")
    quality.add_argument("--no-student", dest="with_student", action="store_false",
                         help="measure no distilled student")


def _log(message) -> None:
    print(message, file=sys.stderr)


def run(args) -> int:
    from ..bench.machine import mark_start

    mark_start()
    if args.contention is not None:
        return _run_contention(args)
    if args.quality:
        return _run_quality(args)
    if args.export:
        return _run_export(args)
    device = resolve(args.device).kind
    if args.kernels:
        from ..bench.kernels import main_bench

        return main_bench(batch=(args.batch_size or [1])[0], size=args.size, down_N=args.down_N, device=device,
                          iters=args.iters, json_path=args.json)
    from ..bench.end_to_end import BenchConfig, run_benchmark, student_speedups
    from ..bench.engines import preset_engine
    from ..bench.machine import record_envelope
    from ..bench.report import add_speedups, format_table, plot, write_json

    if args.engine:
        engine = Path(args.engine)
    else:
        engine = preset_engine(args.preset or "demo", seed=args.seed, cache=args.engine_cache, log=_log)
    if args.serve:
        return bench_serve.run(args, engine, _log)
    batch_sizes = args.batch_size or [1]
    config = BenchConfig(engine_dir=engine, batch_sizes=batch_sizes, steps=args.steps, repeats=args.repeats,
                         warmup=args.warmup, backends=args.backends, precision=args.precision, device=device,
                         seed=args.seed, phase_runs=args.phase_runs,
                         student=Path(args.student) if args.student else None)

    def record_of(runs: list, complete: bool) -> dict:
        add_speedups(runs)
        return {**record_envelope(device),
                "config": {"engine": str(engine), "engine_name": args.engine or args.preset or "demo",
                           "batch_sizes": batch_sizes, "steps": args.steps, "repeats": args.repeats,
                           "warmup": args.warmup, "phase_runs": args.phase_runs,
                           "backends": list(dict.fromkeys(r["backend"] for r in runs)),
                           "precision": args.precision, "device": device, "seed": args.seed},
                "complete": complete, "runs": runs,
                **({"student": str(config.student), "student_speedup": student_speedups(runs)}
                   if config.student else {})}

    # the record is written after every run (complete: false until the last), so a run stopped
    # at a time limit keeps what it measured
    partial = (lambda runs: write_json(record_of(list(runs), False), args.json)) if args.json else None
    record = record_of(run_benchmark(config, log=_log, on_run=partial), True)
    return _print_bench(record, args, format_table, plot)


def _run_quality(args) -> int:
    from ..bench.machine import record_envelope
    from ..bench.quality import QualityConfig, format_quality, plot_quality, run_quality

    given = {"solvers": args.solvers, "updates": args.updates, "ls": args.ls, "li": args.li_sweep,
             "eta": args.eta_sweep, "spacing": args.spacings, "lowpass": args.lowpass_forms,
             "tuning_count": args.tuning_count,
             "held_out_count": args.held_out_count, "backend": args.quality_backend,
             "batch_size": args.quality_batch_size, "student": Path(args.student) if args.student else None,
             "with_student": args.with_student}
    config = QualityConfig(engine_dir=Path(args.engine) if args.engine else None, seed=args.seed,
                           **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None})
    record = run_quality(config, log=_log)
    record.update(record_envelope(record["config"]["device"]))
    return _print_bench(record, args, format_quality, plot_quality)


def _print_bench(record: dict, args, table, plotter) -> int:
    """Print a bench record's table; write its JSON (--json) and plot (--plot)."""
    from ..bench.report import write_json

    print(table(record))
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    if args.plot:
        print(f"wrote {plotter(record, args.plot)}")
    return 0


def _run_contention(args) -> int:
    from ..bench.contention import ContentionConfig, format_contention, run_contention
    from ..bench.engines import preset_engine
    from ..bench.machine import record_envelope
    from ..method.settings import check_positive_int

    check_positive_int(args.contention, "--contention", maximum=MAX_CONTENTION)
    if args.backends and len(args.backends) > 1:
        raise ConfigError("--contention runs one backend: give --backends one name (or none: auto)")
    engine = Path(args.engine) if args.engine else preset_engine(args.preset or "demo", seed=args.seed,
                                                                  cache=args.engine_cache, log=_log)
    batch = args.batch_size[0] if args.batch_size else 4
    config = ContentionConfig(str(engine), processes=args.contention, backend=(args.backends or ["auto"])[0],
                              device=resolve(args.device).kind, threads=args.threads, batch_size=batch,
                              steps=args.steps if args.steps is not None else 20, repeats=args.repeats,
                              seed=args.seed)
    record = {**run_contention(config, log=_log), **record_envelope(config.device)}
    print(format_contention(record))
    if args.json:
        from ..bench.report import write_json

        print(f"wrote {write_json(record, args.json)}")
    return 0


def _run_export(args) -> int:
    from ..bench.export_cost import format_export, preset_spec, run_export_bench
    from ..bench.machine import record_envelope

    spec = preset_spec(args.preset or "demo", args.checkpoint_format, args.seed, log=_log)
    record = run_export_bench(spec, formats=args.export_formats, work_dir=args.engine_cache, log=_log)
    record.update(record_envelope("cpu"))
    print(format_export(record))
    if args.json:
        from ..bench.report import write_json

        print(f"wrote {write_json(record, args.json)}")
    return 0
