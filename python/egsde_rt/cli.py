"""``egsde-rt``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, EgsdeError
from .network_fns import PRECISIONS
from .runtime.backends import backend_names, parse_device, resolve_device
from .settings import DECLARATIONS, RUNTIME_OVERRIDABLE


def _device_arg(text: str) -> str:
    """A --device value: auto, cpu, cuda or cuda:N."""
    try:
        parse_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def _cmd_presets(args) -> int:
    from .presets import PRESETS

    for preset in PRESETS.values():
        s = preset.settings
        print(f"{preset.name:15s} {preset.description}")
        print(f"{'':15s} score={s.score_kind} M={s.M} ls={s.ls:g} li={s.li:g} s1={s.s1} s2={s.s2} "
              f"down_N={s.down_N} image_size={preset.image_size} checkpoints={json.dumps(preset.checkpoints)}")
    return 0


def _existing_policy(args) -> str:
    if args.resume and args.overwrite:
        raise EgsdeError("--resume keeps existing outputs and --overwrite replaces them: pass one")
    return "skip" if args.resume else "overwrite" if args.overwrite else "error"


def _finish_job(report, tasks, skipped) -> int:
    """Print what a folder job did (outputs on stdout, failures on stderr); its exit code.
    ``tasks`` ran, ``skipped`` (existing outputs) did not."""
    report.skipped += [t.output for t in skipped]
    total = len(tasks) + len(skipped)
    for path in report.written:
        print(path)
    for source, why in report.failed:
        print(f"egsde-rt: failed: {source}: {why}", file=sys.stderr)
    print(f"{len(report.written)} written, {len(report.skipped)} skipped (existing), {len(report.failed)} failed "
          f"of {total}", file=sys.stderr)
    return report.exit_code


def _run_with_progress(translator, tasks, batch_size: int, overrides: dict | None = None):
    """``folder_job.run_job`` with a progress bar counting images (failed files count as done)."""
    from tqdm import tqdm

    from .folder_job import run_job

    with tqdm(total=len(tasks), desc="translate", unit="image", bar_format="{l_bar}{bar}| {n:.1f}/{total} "
              "[{elapsed}<{remaining}]") as bar:
        def advance(images: float) -> None:  # fractions of images, never past the total
            bar.update(min(images, bar.total - bar.n))

        report = run_job(translator, tasks, batch_size=batch_size, overrides=overrides, on_update=advance)
        bar.update(bar.total - bar.n)
    return report


class _EagerTranslator:
    """The eager reference sampler behind what a folder job calls (``image_size``, ``max_pixels``,
    ``settings_with``, ``run_tensor``), so ``reference`` runs folders as ``translate`` does."""

    def __init__(self, score, dse, settings, image_size: int, device: str):
        from .io import max_pixels_for

        self.score, self.dse, self.settings = score, dse, settings
        self.image_size, self.device = image_size, device
        self.max_pixels = max_pixels_for(image_size)

    def settings_with(self, **overrides):
        return self.settings.with_overrides(**overrides)

    def run_tensor(self, x0, seed, callback=None, **overrides):
        from .network_fns import tf32_mode
        from .reference import translate

        step = None if callback is None else (lambda k, total, y: callback(k, total))
        with tf32_mode("fp32"):  # the oracle in IEEE float32 on a GPU too (cuDNN's default is TF32)
            y = translate(x0.to(self.device), self.score, self.dse, self.settings_with(**overrides), seed=seed,
                          callback=step)
        return y.cpu().numpy()


def _cmd_reference(args) -> int:
    from .folder_job import plan_job
    from .models import build_preset_models, load_checkpoint
    from .presets import get_preset

    preset = get_preset(args.preset)
    settings = preset.settings.with_overrides(**settings_overrides(args))
    tasks, skipped = plan_job(args.inputs, args.output_dir, args.seed, existing=_existing_policy(args))
    score, dse = build_preset_models(preset)
    load_checkpoint(score, args.score_ckpt)
    load_checkpoint(dse, args.dse_ckpt)
    eager = _EagerTranslator(score.to(args.device).eval(), dse.to(args.device).eval(), settings, preset.image_size,
                             args.device)
    # One file at a time; the files' seeds are those of `translate`, so the outputs are comparable.
    return _finish_job(_run_with_progress(eager, tasks, batch_size=1), tasks, skipped)


# Method settings as command-line flags, from their declarations (settings.DECLARATIONS: type, help,
# choices); `settings_overrides` maps them back.
SETTINGS_FLAGS = tuple(name for name, d in DECLARATIONS.items() if d.flag)


def add_settings_flags(parser, names=SETTINGS_FLAGS) -> None:
    """--M, --ls, ... for the named settings; left out, each keeps its default."""
    group = parser.add_argument_group("method settings (override the preset's or the engine's)")
    for name in names:
        d = DECLARATIONS[name]
        flag = f"--{name.replace('_', '-')}"
        if d.kind is bool:
            group.add_argument(flag, dest=name, action="store_true", default=None, help=d.help)
        else:
            group.add_argument(flag, dest=name, type=d.kind, choices=d.choices, help=d.help)


def settings_overrides(args) -> dict:
    """The method settings given on the command line, as ``EGSDESettings.with_overrides`` takes them."""
    return {k: getattr(args, k) for k in SETTINGS_FLAGS if getattr(args, k, None) is not None}


def _cmd_export(args) -> int:
    from .export import export_preset
    from .presets import get_preset

    settings = get_preset(args.preset).settings.with_overrides(**settings_overrides(args))
    formats = [f for f in args.formats if not (args.no_torch_weights and f == "torch")]
    export_preset(args.preset, args.score_ckpt, args.dse_ckpt, args.out, settings=settings, overwrite=args.overwrite,
                  opset=args.opset, formats=formats)
    return 0


def _cmd_build(args) -> int:
    if args.backend == "tensorrt":
        from .export.tensorrt_plans import build_plans

        build_plans(args.engine_dir, precision=args.precision or "fp32", min_batch=1, opt_batch=args.opt_batch,
                    max_batch=args.max_batch)
        return 0
    from .export.compiled_plans import build_compiled_plans

    build_compiled_plans(args.engine_dir, device=resolve_device(args.device), precision=args.precision or "fp32",
                         max_batch=args.max_batch)
    return 0


def _cmd_verify(args) -> int:
    import time

    from .engine import load_engine_dir
    from .engine.plans import build_command

    start = time.perf_counter()
    engine = load_engine_dir(args.engine_dir, verify="full")
    m = engine.manifest
    files = [*m.graphs.values(), *m.torch_weights.values()]
    plans = {key: plan for key, plan in m.plans.items() if engine.file(plan.file, f"plans.{key}.file").is_file()}
    for key, plan in plans.items():
        engine.verified(plan, f"plans.{key}", fix="rebuild it: run " + build_command(engine, plan.kind, plan.device,
                                                                                    plan.precision))
    total = sum(engine.file(entry.file).stat().st_size for entry in files)
    print(f"{engine.path}: {len(files)} files ({total / 2**20:.1f} MB) and {len(plans)} plans match their sha256 "
          f"({time.perf_counter() - start:.1f} s); recorded as verified on this machine")
    return 0


def _cmd_info(args) -> int:
    from .engine import load_engine_dir
    from .runtime.backends import probe

    engine = load_engine_dir(args.engine_dir)
    m = engine.manifest
    print(f"engine {engine.path}  (format {m.format_version}, egsde-rt {m.egsde_rt_version}, preset {m.preset})")
    print(f"image size {m.image_size}; settings: " + ", ".join(f"{k}={v}" for k, v in m.settings.items()))
    print(f"exported with torch {m.export.torch}, onnx {m.export.onnx}, opset {m.export.opset} on {m.export.date}")
    for name, graph in m.graphs.items():
        errors = ", ".join(f"batch {b}: {e['max_abs']:.2g}" for b, e in graph.validation.items())
        weights = f"; weights in {m.torch_weights[graph.weights].file}" if graph.weights else ""
        print(f"  {graph.file:14s} sha256 {graph.sha256[:12]}  inputs {graph.inputs} -> {graph.outputs}; "
              f"max abs error vs PyTorch: {errors}{weights}")
    if not m.graphs:
        print("  no ONNX graphs (a torch-only engine: torch and compiled backends)")
    for name, w in m.torch_weights.items():
        size = f"{w.size / 2**20:.1f} MB" if w.size is not None else ""
        print(f"  {w.file:14s} sha256 {w.sha256[:12]}  {size}  {w.model_class or 'not rebuildable by PyTorch'}")
    for plan in m.plans.values():
        print(f"  {plan.file}  {plan.kind} {plan.precision} batch {plan.profile} for {plan.device} "
              f"{plan.capability}, {plan.runtime}")
    print("backends on this machine:")
    for device in ("cuda", "cpu"):
        for name, (usable, why) in probe(engine, device).items():
            print(f"  {'yes' if usable else 'no ':3s} {name:17s} {device:4s} {why}")
    return 0


def _cmd_translate(args) -> int:
    from .folder_job import plan_job
    from .runtime.translator import Translator

    tasks, skipped = plan_job(args.inputs, args.output_dir, args.seed, existing=_existing_policy(args))
    overrides = settings_overrides(args)
    if args.ray:
        from .distributed import ray_translate

        report = ray_translate(args.engine_dir, tasks, address=args.ray_address, batch_size=args.batch_size,
                               backend=args.backend, device=args.device, precision=args.precision,
                               overrides=overrides, actors=args.ray_actors, cpus_per_actor=args.ray_cpus_per_actor)
    else:
        translator = Translator(args.engine_dir, backend=args.backend, device=args.device, precision=args.precision)
        print(f"backend: {translator.backend} on {translator.choice.device} ({translator.choice.reason})",
              file=sys.stderr)
        report = _run_with_progress(translator, tasks, args.batch_size, overrides)
    return _finish_job(report, tasks, skipped)


def _train_config(args):
    from .train import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       fixed_batch=args.fixed_batch)


def _cmd_train_score(args) -> int:
    from .train import train_score

    train_score(args.data, args.out, _train_config(args))
    return 0


def _cmd_train_dse(args) -> int:
    from .train import train_dse

    train_dse(args.source, args.target, args.out, _train_config(args))
    return 0


def _cmd_train_judge(args) -> int:
    from .train import train_judge

    train_judge(args.source, args.target, args.out, _train_config(args))
    return 0


def _cmd_demo(args) -> int:
    from .demo import format_eval, format_table, run_demo, run_eval

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.eval:
        record = run_eval(args.output_dir, count=args.count, backend=args.backend, log=log)
        print(format_eval(record))
        print(f"record: {Path(args.output_dir) / 'demo-eval.json'}")
        return 0
    result = run_demo(args.output_dir, count=8 if args.count is None else args.count, seed=args.seed,
                      backend=args.backend, log=log)
    print("realism: the target-domain probability given by an independent judge classifier;")
    print("faithfulness: PSNR and SSIM to the source image (higher is more faithful); PSNR tgt: to the paired true "
          "target; evals: network evaluations per image.")
    print(format_table(result["table"]))
    print(f"grid ({' | '.join(result['columns'])}): {result['grid']}")
    print("the quality of each method on 256 held-out images: egsde-rt demo --eval")
    return 0


def _service_config(args, engine_dir):
    """The ``ServeConfig`` of the parsed flags (``SERVE_OPTIONS`` a command does not offer keep
    their defaults)."""
    from .serve import SERVE_OPTIONS, ServeConfig

    return ServeConfig(str(engine_dir), backend=args.backend, device=args.device, precision=args.precision,
                       **{f.name: getattr(args, f.name, f.default) for f in SERVE_OPTIONS})


def add_serve_flags(parser) -> None:
    """--replicas, --max-upload-mb, ...: one flag per ``ServeConfig`` option (``serve.SERVE_OPTIONS``)."""
    from .serve import SERVE_OPTIONS

    for f in SERVE_OPTIONS:
        kind = float if f.type is float else int
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"])


def _cmd_serve(args) -> int:
    from .serve import serve_forever

    serve_forever(_service_config(args, args.engine_dir), host=args.host, port=args.port, address=args.ray_address,
                  log=lambda message: print(message, file=sys.stderr))
    return 0


def _bench_serve(args, engine: Path, log) -> int:
    from .bench.machine import command_line, device_description, now, versions
    from .bench.report import write_json
    from .bench.serve_load import LoadConfig, format_load_table, load_test
    from .engine import load_engine_dir

    def batching(text):
        size, _, wait = text.partition(":")
        try:
            return int(size), float(wait or 0)
        except ValueError:
            raise ConfigError(f"--batchings takes MAX_BATCH:WAIT_MS pairs such as 4:10, got {text!r}") from None

    from urllib.parse import parse_qsl

    from .settings import overrides_from_text

    query = dict(parse_qsl(args.query or "", keep_blank_values=True))
    query.pop("seed", None)
    overrides_from_text(query)  # a bad setting fails here, not as a 400 on every request

    args.backend = "auto"
    service = _service_config(args, engine)
    if args.hostile:
        return _bench_hostile(args, service, log)
    load = LoadConfig(clients=args.clients, requests=args.requests, port=args.port,
                      batchings=tuple(batching(b) for b in args.batchings), query=args.query or "")
    runs = load_test(service, load, image_size=load_engine_dir(engine).image_size, log=log)
    record = {"device": device_description(resolve_device(args.device)), "versions": versions(),
              "config": {"engine": str(engine), "engine_name": args.engine or args.preset or "demo",
                         "clients": load.clients, "requests_per_client": load.requests, "query": load.query,
                         "precision": args.precision},
              "command": command_line(), "date": now(), "serve_runs": runs}
    print(format_load_table(runs))
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    return 0


def _bench_hostile(args, service, log) -> int:
    from .bench.machine import command_line, device_description, now, versions
    from .bench.report import write_json
    from .bench.serve_hostile import format_hostile_table, run_hostile

    result = run_hostile(service, port=args.port, clients=args.clients, requests=args.requests,
                         query=args.query or "M=2", log=log)
    record = {"device": device_description(resolve_device(args.device)), "versions": versions(),
              "config": {"engine": service.engine_dir, "engine_name": args.engine or args.preset or "demo",
                         "query": args.query or "M=2", "precision": args.precision,
                         "service": {f: getattr(service, f) for f in ("max_batch_size", "batch_wait_ms",
                                                                        "max_queued_requests", "max_upload_mb",
                                                                        "max_updates", "body_timeout_s",
                                                                        "request_timeout_s")}},
              "command": command_line(), "date": now(), "hostile": result}
    print(format_hostile_table(result))
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    return 0 if result["all_as_expected"] else 1


def _bench_quality(args) -> int:
    from .bench.machine import command_line, device_description, now, versions
    from .bench.quality import QualityConfig, format_quality, plot_quality, run_quality

    given = {"solvers": args.solvers, "updates": args.updates, "ls": args.ls, "li": args.li_sweep,
             "eta": args.eta_sweep, "spacing": args.spacings, "lowpass": args.lowpass_forms,
             "tuning_count": args.tuning_count,
             "held_out_count": args.held_out_count, "backend": args.quality_backend,
             "batch_size": args.quality_batch_size}
    config = QualityConfig(engine_dir=Path(args.engine) if args.engine else None, seed=args.seed,
                           **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None})
    record = run_quality(config, log=lambda message: print(message, file=sys.stderr))
    record.update(device=device_description(record["config"]["device"]), versions=versions(), command=command_line(),
                  date=now())
    return _print_bench(record, args, format_quality, plot_quality)


def _print_bench(record: dict, args, table, plotter) -> int:
    """Print a bench record's table; write its JSON (--json) and plot (--plot)."""
    from .bench.report import write_json

    print(table(record))
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    if args.plot:
        print(f"wrote {plotter(record, args.plot)}")
    return 0


def _bench_export(args) -> int:
    from .bench.export_cost import format_export, preset_spec, run_export_bench
    from .bench.machine import command_line, device_description, now, versions

    def log(message):
        print(message, file=sys.stderr)

    spec = preset_spec(args.preset or "demo", args.checkpoint_format, args.seed, log=log)
    record = run_export_bench(spec, formats=args.export_formats, work_dir=args.engine_cache, log=log)
    record.update(device=device_description("cpu"), versions=versions(), command=command_line(), date=now())
    print(format_export(record))
    if args.json:
        from .bench.report import write_json

        print(f"wrote {write_json(record, args.json)}")
    return 0


def _cmd_bench(args) -> int:
    if args.quality:
        return _bench_quality(args)
    if args.export:
        return _bench_export(args)
    device = resolve_device(args.device)
    if args.kernels:
        from .bench.kernels import main_bench

        return main_bench(batch=args.batch_size[0], size=args.size, down_N=args.down_N, device=device,
                          iters=args.iters, json_path=args.json)
    from .bench.end_to_end import BenchConfig, run_benchmark
    from .bench.engines import preset_engine
    from .bench.machine import command_line, device_description, now, versions
    from .bench.report import add_speedups, format_table, plot, write_json

    def log(message):
        print(message, file=sys.stderr)

    if args.engine:
        engine = Path(args.engine)
    else:
        engine = preset_engine(args.preset or "demo", seed=args.seed, cache=args.engine_cache, log=log)
    if args.serve:
        return _bench_serve(args, engine, log)
    config = BenchConfig(engine_dir=engine, batch_sizes=args.batch_size, steps=args.steps, repeats=args.repeats,
                         warmup=args.warmup, backends=args.backends, precision=args.precision, device=device,
                         seed=args.seed, phase_runs=args.phase_runs)

    def record_of(runs: list, complete: bool) -> dict:
        add_speedups(runs)
        return {"device": device_description(device), "versions": versions(),
                "config": {"engine": str(engine), "engine_name": args.engine or args.preset or "demo",
                           "batch_sizes": args.batch_size, "steps": args.steps, "repeats": args.repeats,
                           "warmup": args.warmup, "phase_runs": args.phase_runs,
                           "backends": list(dict.fromkeys(r["backend"] for r in runs)),
                           "precision": args.precision, "device": device, "seed": args.seed},
                "command": command_line(), "date": now(), "complete": complete, "runs": runs}

    # the record is written after every run (complete: false until the last), so a run stopped
    # at a time limit keeps what it measured
    partial = (lambda runs: write_json(record_of(list(runs), False), args.json)) if args.json else None
    record = record_of(run_benchmark(config, log=log, on_run=partial), True)
    return _print_bench(record, args, format_table, plot)


def _cmd_eval(args) -> int:
    from .bench.machine import command_line, now
    from .bench.report import write_json
    from .evaluation import evaluate_folders, folder_statistics, format_table, save_statistics

    def log(message):
        print(message, file=sys.stderr)

    if args.save_target_stats:
        if not args.target:
            raise EgsdeError("--save-target-stats needs --target DIR (the folder whose statistics to save)")
        mu, sigma = folder_statistics(args.target, inception_weights=args.inception_weights,
                                      batch_size=args.batch_size, device=args.device,
                                      fid_preprocessing=args.fid_preprocessing, log=log)
        save_statistics(args.save_target_stats, mu, sigma)
        log(f"wrote {args.save_target_stats}")
    result = evaluate_folders(args.translated, args.source, target=args.target, target_stats=args.target_stats,
                              inception_weights=args.inception_weights, batch_size=args.batch_size,
                              device=args.device, fid_preprocessing=args.fid_preprocessing,
                              kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, log=log)
    print(format_table(result))
    if args.json:
        print(f"wrote {write_json({**result, 'command': command_line(), 'date': now()}, args.json)}")
    return 0


def existing_flags(p) -> None:
    p.add_argument("--resume", action="store_true", help="skip inputs whose output exists (finish an interrupted run)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egsde-rt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"egsde-rt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="translate generated images with the embedded demo engine")
    p.add_argument("--output-dir", default="egsde-demo")
    p.add_argument("--count", type=int, help="images: rows of the grid (default 8), or held-out images with --eval "
                   "(default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", action="store_true", help="the quality protocol: every method on the held-out split "
                   "(settings chosen on the tuning split); writes demo-eval.json")
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("presets", help="list the paper's presets and their settings")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("reference", help="translate images with the eager PyTorch reference sampler")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--preset", default="cat2dog")
    p.add_argument("--score-ckpt", required=True, help="a .pt or .safetensors file")
    p.add_argument("--dse-ckpt", required=True, help="a .pt or .safetensors file")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    existing_flags(p)
    add_settings_flags(p)
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser("export", help="export a preset's checkpoints to an engine directory")
    p.add_argument("--preset", default="cat2dog")
    p.add_argument("--score-ckpt", required=True, help="a .pt or .safetensors file")
    p.add_argument("--dse-ckpt", required=True, help="a .pt or .safetensors file")
    p.add_argument("--out", required=True, help="the engine directory to write")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--formats", nargs="+", choices=["onnx", "torch"], default=["onnx", "torch"],
                   help="what to write: the ONNX graphs (ONNX Runtime, TensorRT) and/or the torch weights (torch and "
                   "compiled backends); --formats torch takes seconds instead of minutes")
    p.add_argument("--no-torch-weights", action="store_true", help="the same as --formats onnx (the weights are "
                   "stored once either way; the torch backend does not run the engine)")
    p.add_argument("--overwrite", action="store_true")
    add_settings_flags(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("build", help="build plans for this machine: compiled (AOTInductor, CPU or CUDA) or "
                       "TensorRT (needs tensorrt and a GPU)")
    p.add_argument("engine_dir")
    p.add_argument("--backend", choices=["compiled", "tensorrt"], default="compiled")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="compiled plans: where they run")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="networks' precision (the sampler stays float32); default fp32 (tensorrt: fp32 only, the "
                   "precision of the exported graphs)")
    p.add_argument("--opt-batch", type=int, default=1, help="tensorrt: the batch size to optimise for")
    p.add_argument("--max-batch", type=int, default=16)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("translate", help="translate images (files or folders) with an engine directory")
    p.add_argument("engine_dir")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    p.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    existing_flags(p)
    ray = p.add_argument_group("--ray: translate on a Ray cluster (pip install egsde-rt[ray])")
    ray.add_argument("--ray", action="store_true", help="run the folder on Ray Data actors, each with a Translator")
    ray.add_argument("--ray-address", help="an existing cluster (e.g. ray://head:10001 or auto); default: a "
                     "local Ray instance")
    ray.add_argument("--ray-actors", type=int, help="translator actors (default: one per GPU, or 1 on CPUs)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="CPU slots each actor reserves")
    add_settings_flags(p, RUNTIME_OVERRIDABLE)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("serve", help="serve translations over HTTP with Ray Serve (needs the [ray] extra)")
    p.add_argument("engine_dir")
    p.add_argument("--host", default="127.0.0.1", help="where Serve's HTTP proxy listens (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    add_serve_flags(p)
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()])
    p.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray instance)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("info", help="what an engine directory holds and which backends can run it")
    p.add_argument("engine_dir")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("verify", help="hash every file of an engine directory against its manifest (loading "
                       "checks sizes, and hashes a file once per machine: docs/engine-format.md)")
    p.add_argument("engine_dir")
    p.set_defaults(func=_cmd_verify)

    def training(p, steps, batch, lr):
        p.add_argument("--out", required=True, help="the checkpoint (state dict); <out>.train holds the resume state")
        p.add_argument("--steps", type=int, default=steps)
        p.add_argument("--batch-size", type=int, default=batch)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--fixed-batch", action="store_true", help="the same images every step (an overfitting check)")

    p = sub.add_parser("train-score", help="train a score UNet (ADM vocabulary) on the target domain")
    p.add_argument("--data", default="procedural:target", help="an image folder, or procedural:target")
    training(p, 4000, 32, 2e-4)
    p.set_defaults(func=_cmd_train_score)

    p = sub.add_parser("train-dse", help="train a time-conditioned DSE classifier on both domains")
    p.add_argument("--source", default="procedural:source")
    p.add_argument("--target", default="procedural:target")
    training(p, 1500, 32, 3e-4)
    p.set_defaults(func=_cmd_train_dse)

    p = sub.add_parser("train-judge", help="train the independent realism judge (a plain CNN on clean images)")
    p.add_argument("--source", default="procedural:source")
    p.add_argument("--target", default="procedural:target")
    training(p, 600, 64, 1e-3)
    p.set_defaults(func=_cmd_train_judge)

    p = sub.add_parser("eval", help="the paper's metrics: L2, PSNR, SSIM (MSE, MS-SSIM) to the sources by file "
                       "stem, FID (KID) against target images or statistics")
    p.add_argument("translated", help="folder of translated images")
    p.add_argument("source", help="folder of source images (matched by file stem)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target", help="folder of target-domain images (for FID and KID)")
    target.add_argument("--target-stats", help="precomputed target statistics (.npz with mu and sigma)")
    p.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (for FID)")
    p.add_argument("--save-target-stats", help="also save the --target folder's statistics to this .npz")
    p.add_argument("--fid-preprocessing", choices=["pytorch-fid", "male2female"], default="pytorch-fid",
                   help="as the official code: pytorch-fid's (cat2dog, wild2dog) or its male2female variant")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--json", help="write the results (means and per image) as JSON to this path")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("bench", help="time translations end to end (eager reference vs every engine backend), "
                       "or the native kernels (--kernels)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--engine", help="an engine directory to benchmark")
    source.add_argument("--preset", help="a preset (default: demo); presets other than demo get random "
                        "non-degenerate weights, exported once into the cache")
    p.add_argument("--engine-cache", help="where to export a preset's benchmark engine")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1], help="one or more (a sweep)")
    p.add_argument("--steps", type=int, help="time only the first N updates (extrapolated, and labelled so)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (medians reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after the first")
    p.add_argument("--phase-runs", type=int, help="uncaptured profiled runs per engine backend for the per-update "
                   "phases (default: --repeats)")
    p.add_argument("--backends", nargs="+", help="default: eager, then every usable backend")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the record as JSON to this path")
    p.add_argument("--plot", help="write a PNG of the per-step phases (needs matplotlib)")
    load = p.add_argument_group("--serve: a load test of `egsde-rt serve` on loopback (needs the [ray] extra)")
    load.add_argument("--serve", action="store_true")
    load.add_argument("--clients", type=int, default=8, help="concurrent clients")
    load.add_argument("--requests", type=int, default=4, help="requests per client, sent one after the other")
    load.add_argument("--batchings", nargs="+", default=["1:0", "4:10", "8:50"],
                      help="batching settings to compare, MAX_BATCH:WAIT_MS each (they replace --max-batch-size and "
                      "--batch-wait-ms; not with --hostile)")
    load.add_argument("--port", type=int, default=8471)
    load.add_argument("--query", help="settings for every request, as a query string (e.g. M=100)")
    load.add_argument("--hostile", action="store_true", help="one request in three hostile (huge repeats, strips, "
                      "chunked floods, slow bodies, EPS, wrong Content-Type, foreign Host ...): every answer must be "
                      "200 or a JSON error within its deadline; reports the replica's peak memory")
    add_serve_flags(load)
    quality = p.add_argument_group("--quality: the quality-cost curve of the solvers on the demo's held-out split "
                                   "(settings chosen on its tuning split)")
    quality.add_argument("--quality", action="store_true")
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
    export = p.add_argument_group("--export: the time, peak memory and engine size of `egsde-rt export` of --preset "
                                  "(random weights), measured in a child process")
    export.add_argument("--export", action="store_true")
    export.add_argument("--checkpoint-format", choices=["pt", "safetensors"], default="pt",
                        help="the checkpoints the export reads")
    export.add_argument("--export-formats", nargs="+", choices=["onnx", "torch"], default=["onnx", "torch"])
    kernels = p.add_argument_group("--kernels: the native kernels against their eager PyTorch equivalents")
    kernels.add_argument("--kernels", action="store_true")
    kernels.add_argument("--size", type=int, default=256)
    kernels.add_argument("--down-N", dest="down_N", type=int, default=32)
    kernels.add_argument("--iters", type=int, default=20)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EgsdeError as err:
        print(f"egsde-rt: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
