"""``egsde-rt build``, ``translate``, ``serve``, ``info`` and ``verify``: the commands that take an
engine directory."""

from __future__ import annotations

import sys

from ..images import FITS
from ..models.network_fns import PRECISIONS
from ..runtime.devices import resolve
from ..method.settings import RUNTIME_OVERRIDABLE
from .flags import (ENGINE_DIR_HELP, add_device_kind_flag, add_engine_dir_arg, add_output_dir_flag, add_runtime_flags,
                    add_seed_flag, add_serve_flags, add_settings_flags, existing_flags, existing_policy, service_config,
                    settings_overrides)
from .jobs import finish_job, run_with_progress


def register(sub) -> None:
    """Add ``build``, ``translate``, ``serve``, ``info`` and ``verify`` to the subcommands."""
    p = sub.add_parser("build", help="build plans for this machine: compiled (AOTInductor, CPU or CUDA) or "
                       "TensorRT (needs tensorrt and a GPU)")
    add_engine_dir_arg(p, help=ENGINE_DIR_HELP + "; the plans are written into it")
    p.add_argument("--backend", choices=["compiled", "tensorrt"], default="compiled",
                   help="compiled: AOTInductor plans (CPU or CUDA); tensorrt: TensorRT engines (needs tensorrt and a "
                   "GPU)")
    add_device_kind_flag(p, help="compiled plans: where they run")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="networks' precision (the sampler stays float32); default fp32 (tensorrt: fp32 only, the "
                   "precision of the exported graphs)")
    p.add_argument("--opt-batch", type=int, default=1, help="tensorrt: the batch size to optimise for")
    p.add_argument("--max-batch", type=int, default=16, help="the largest batch the plans run (a larger "
                   "translate --batch-size or serve --max-batch-size needs plans rebuilt for it)")
    p.set_defaults(func=run_build)

    _register_translate(sub)

    p = sub.add_parser("serve", help="serve translations over HTTP with Ray Serve (needs the [ray] extra)")
    add_engine_dir_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="where Serve's HTTP proxy listens (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="the port of Serve's HTTP proxy")
    add_serve_flags(p)
    add_runtime_flags(p)
    p.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray instance)")
    front = p.add_argument_group("the nginx front (header deadline, connection limits: docs/reliability.md)")
    front.add_argument("--nginx-config", metavar="PATH", help="write an nginx.conf that fronts the service with its "
                       "bounds (--header-timeout-s, --max-connections, ...), then serve; run nginx with the command "
                       "printed")
    front.add_argument("--nginx-listen", metavar="HOST:PORT", default="127.0.0.1:8080",
                       help="where the nginx front listens (0.0.0.0:8080: every interface)")
    p.set_defaults(func=run_serve)

    p = sub.add_parser("info", help="what an engine directory holds and which backends can run it")
    add_engine_dir_arg(p)
    p.set_defaults(func=run_info)

    p = sub.add_parser("verify", help="hash every file of an engine directory against its manifest (loading "
                       "checks sizes, and hashes a file once per machine: docs/engine-format.md)")
    add_engine_dir_arg(p)
    p.set_defaults(func=run_verify)


def _register_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate images (files or folders) with an engine directory")
    add_engine_dir_arg(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and folders (folders are searched "
                   "recursively)")
    add_output_dir_flag(p, help="where the outputs go: DIR/<path relative to its input folder>.png")
    p.add_argument("--batch-size", type=int, default=1, help="images translated together")
    p.add_argument("--fit", choices=FITS, default="crop", help="how an image becomes the engine's S x S square: "
                   "crop (its centre square; outputs are S x S) or pad (the whole image, padded with its edge; "
                   "outputs keep its aspect ratio, the longer side S)")
    add_seed_flag(p)
    add_runtime_flags(p)
    existing_flags(p)
    ray = p.add_argument_group("--ray: translate on a Ray cluster (pip install egsde-rt[ray])")
    ray.add_argument("--ray", action="store_true", help="run the folder on Ray Data actors, each with a Translator")
    ray.add_argument("--ray-address", help="an existing cluster (e.g. ray://head:10001 or auto); default: a "
                     "local Ray instance")
    ray.add_argument("--ray-actors", type=int, help="translator actors (default: one per GPU, or 1 on CPUs)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="CPU slots each actor reserves")
    add_settings_flags(p, RUNTIME_OVERRIDABLE)
    p.set_defaults(func=run_translate)


def run_build(args) -> int:
    if args.backend == "tensorrt":
        from ..export.tensorrt_plans import build_plans

        build_plans(args.engine_dir, precision=args.precision or "fp32", min_batch=1, opt_batch=args.opt_batch,
                    max_batch=args.max_batch)
        return 0
    from ..export.compiled_plans import build_compiled_plans

    build_compiled_plans(args.engine_dir, device=resolve(args.device).kind, precision=args.precision or "fp32",
                         max_batch=args.max_batch)
    return 0


def run_translate(args) -> int:
    from ..jobs.folders import plan_job
    from ..runtime.translator import Translator

    tasks, skipped = plan_job(args.inputs, args.output_dir, args.seed, existing=existing_policy(args))
    overrides = settings_overrides(args)
    if args.ray:
        from ..jobs.ray_data import ray_translate

        report = ray_translate(args.engine_dir, tasks, address=args.ray_address, batch_size=args.batch_size,
                               backend=args.backend, device=args.device, precision=args.precision,
                               overrides=overrides, actors=args.ray_actors, cpus_per_actor=args.ray_cpus_per_actor,
                               threads=args.threads, fit=args.fit)
    else:
        translator = Translator(args.engine_dir, backend=args.backend, device=args.device, precision=args.precision,
                                threads=args.threads)
        print(f"backend: {translator.backend} on {translator.choice.device} ({translator.choice.reason})",
              file=sys.stderr)
        report = run_with_progress(translator, tasks, args.batch_size, overrides, args.fit)
    return finish_job(report, tasks, skipped)


def run_serve(args) -> int:
    from ..service.deployment import serve_forever

    config = service_config(args, args.engine_dir)
    if args.nginx_config:
        from ..service.front_proxy import write_nginx_config

        command = write_nginx_config(args.nginx_config, config, listen=args.nginx_listen, serve_host=args.host,
                                     serve_port=args.port)
        print(f"wrote {args.nginx_config}: run the nginx front at {args.nginx_listen} with: {command}",
              file=sys.stderr)
    serve_forever(config, host=args.host, port=args.port, address=args.ray_address,
                  log=lambda message: print(message, file=sys.stderr))
    return 0


def run_info(args) -> int:
    from ..engine import load_engine_dir
    from ..runtime.backends import probe
    from ..runtime.devices import cuda_usable

    engine = load_engine_dir(args.engine_dir)
    m = engine.manifest
    print(f"engine {engine.path}  (format {m.format_version}, egsde-rt {m.egsde_rt_version}, preset {m.preset})")
    print(f"kind {m.kind}" + (f": {_distilled_summary(m)}" if m.distilled else " (a score network and its expert)"))
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
    cuda_ok, cuda_why = cuda_usable()
    if not cuda_ok:  # said once, not once per backend
        print(f"  no  {'(every backend)':17s} cuda {cuda_why}")
    for device in ("cuda", "cpu") if cuda_ok else ("cpu",):
        for name, (usable, why) in probe(engine, device).items():
            print(f"  {'yes' if usable else 'no ':3s} {name:17s} {device:4s} {why}")
    return 0


def _distilled_summary(m) -> str:
    """What ``info`` says of a distilled engine: its stage, teacher, run and what it needs."""
    run = m.method
    runs = (f"distilled for {run.num_updates} updates of {run.solver} (its only run)" if m.distilled.stage == 2
            else f"runs {run.num_updates} updates of {run.solver} by default (any count and solver)")
    teacher = m.distilled.teacher_settings
    folded = (f"needs no DSE at run time (folded in: the teacher's ls={teacher.get('ls')}; its low-pass expert, "
              f"li={run.li}, runs natively, {run.lowpass})" if run.li else
              f"needs no expert at run time (folded in: the teacher's ls={teacher.get('ls')}, li={teacher.get('li')})")
    return (f"stage {m.distilled.stage} student of teacher {m.distilled.teacher} (preset {m.distilled.teacher_preset})"
            f"; {runs}; {folded}")


def run_verify(args) -> int:
    import time

    from ..engine import load_engine_dir
    from ..engine.plans import build_command

    start = time.perf_counter()
    engine = load_engine_dir(args.engine_dir, verify="full")
    m = engine.manifest
    files = [*m.graphs.values(), *m.torch_weights.values()]
    plans = {key: plan for key, plan in m.plans.items() if engine.file(plan.file, f"plans.{key}.file").is_file()}
    for key, plan in plans.items():
        engine.verified(plan, f"plans.{key}", fix="rebuild it: run " + build_command(engine, plan.kind, plan.device,
                                                                                    plan.precision))
    total = sum(engine.file(entry.file).stat().st_size for entry in files)
    print(f"{engine.path}: checked {len(files) + len(plans)} files, all match their sha256: {len(files)} engine "
          f"files ({total / 2**20:.1f} MB) and {len(plans)} plans ({time.perf_counter() - start:.1f} s); recorded as "
          "verified on this machine")
    return 0
