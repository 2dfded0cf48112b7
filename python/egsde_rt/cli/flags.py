"""The flags that several commands share, each defined once, with what maps them back: the
runtime's --backend, --device and --precision, --seed, the method settings, the serve options,
and what a folder job does with existing outputs."""

from __future__ import annotations

import argparse

from ..cpu_threads import MAX_THREADS, parse_threads
from ..errors import ConfigError, EgsdeError
from ..models.network_fns import PRECISIONS
from ..runtime.backends import backend_names
from ..runtime.devices import Device
from ..method.settings import DECLARATIONS


def device_arg(text: str) -> Device:
    """The argparse type of every --device: auto, cpu, cuda or cuda:N, parsed once into a ``Device``."""
    try:
        return Device.parse(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def device_kind_arg(text: str) -> Device:
    """A --device that names a kind only (auto, cpu or cuda): where plans are built or a benchmark runs."""
    device = device_arg(text)
    if device.index is not None:
        raise argparse.ArgumentTypeError(f"this --device takes auto, cpu or cuda (the current CUDA device), "
                                         f"got {text!r}")
    return device


# The positional of every command that takes an engine directory.
ENGINE_DIR_HELP = "an engine directory (egsde-rt export writes one; the demo's: egsde-rt demo --engine-path)"


def add_engine_dir_arg(parser, help: str = ENGINE_DIR_HELP) -> None:
    """The ENGINE_DIR positional."""
    parser.add_argument("engine_dir", metavar="ENGINE_DIR", help=help)


def add_seed_flag(parser, help: str = "the noise seed; a folder's files each get their own, derived from it and "
                  "the file's path, so a rerun draws the same noise") -> None:
    """--seed: the run's (or the first file's) seed, default 0."""
    parser.add_argument("--seed", type=int, default=0, help=help)


def add_backend_flag(parser) -> None:
    """--backend: auto or one of the registered backends (``runtime.backends``)."""
    parser.add_argument("--backend", default="auto", choices=["auto", *backend_names()],
                        help="what runs the networks; auto: the fastest usable here (egsde-rt info ENGINE_DIR lists "
                        "them)")


def add_precision_flag(parser) -> None:
    """--precision of the networks, default fp32."""
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="the networks' precision (the sampler stays float32)")


def threads_arg(text: str) -> int:
    """The argparse type of --threads: an integer 1..MAX_THREADS or auto, checked once."""
    try:
        return parse_threads(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def add_threads_flag(parser, help: str | None = None) -> None:
    """--threads: the CPU threads of a translation (``cpu_threads``), default auto."""
    parser.add_argument("--threads", type=threads_arg, default=None, metavar="N|auto",
                        help=help or f"CPU threads a translation uses, 1..{MAX_THREADS} (default auto: the CPUs this "
                        "process may use, from its affinity mask and cgroup quota; docs/api.md#threads)")


def add_runtime_flags(parser) -> None:
    """--backend, --device (auto, cpu, cuda or cuda:N), --precision and --threads: what a Translator
    runs on."""
    add_backend_flag(parser)
    parser.add_argument("--device", default=Device("auto"), type=device_arg, help="auto, cpu, cuda or cuda:N")
    add_precision_flag(parser)
    add_threads_flag(parser)


def add_device_kind_flag(parser, help: str | None = None) -> None:
    """--device auto, cpu or cuda (no index): where compiled plans or a benchmark run."""
    parser.add_argument("--device", type=device_kind_arg, default=Device("auto"), help=help or "auto, cpu or cuda")


def add_torch_device_flag(parser) -> None:
    """--device of the eager PyTorch code (the reference sampler, the metrics): cpu (the default),
    cuda or cuda:N."""
    parser.add_argument("--device", type=device_arg, default=Device("cpu"), help="cpu, cuda or cuda:N")


def add_output_dir_flag(parser, help: str, default: str | None = None) -> None:
    """--output-dir DIR, the one spelling of the directory a command writes (--out is an alias);
    required unless it has a default."""
    parser.add_argument("--output-dir", "--out", dest="output_dir", metavar="DIR", required=default is None,
                        default=default, help=help)


def existing_flags(p) -> None:
    """--resume and --overwrite: what a folder job does with outputs that exist (``existing_policy``)."""
    p.add_argument("--resume", action="store_true", help="skip inputs whose output exists (finish an interrupted run)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def existing_policy(args) -> str:
    """What a folder job does with existing outputs (``folder_job.plan_job``'s ``existing``), from
    --resume and --overwrite."""
    if args.resume and args.overwrite:
        raise EgsdeError("--resume keeps existing outputs and --overwrite replaces them: pass one")
    return "skip" if args.resume else "overwrite" if args.overwrite else "error"


# Method settings as command-line flags, from their declarations (settings.DECLARATIONS: type, help,
# choices); `settings_overrides` maps them back.
SETTINGS_FLAGS = tuple(name for name, d in DECLARATIONS.items() if d.flag)


def add_settings_flags(parser, names=SETTINGS_FLAGS) -> None:
    """--M, --ls, ... for the named settings; left out, each keeps its default."""
    group = parser.add_argument_group("method settings", "each left out keeps the engine's (or the preset's) "
                                      "value:\negsde-rt info ENGINE_DIR and egsde-rt presets show them")
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


def add_serve_flags(parser) -> None:
    """--replicas, --max-upload-mb, ...: one flag per ``ServeConfig`` option (``serve.SERVE_OPTIONS``)."""
    from ..service.deployment import SERVE_OPTIONS

    for f in SERVE_OPTIONS:
        kind = float if f.type is float else int
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"])


def service_config(args, engine_dir):
    """The ``ServeConfig`` of the parsed flags (``SERVE_OPTIONS`` a command does not offer keep
    their defaults)."""
    from ..service.deployment import SERVE_OPTIONS, ServeConfig

    return ServeConfig(str(engine_dir), backend=args.backend, device=str(args.device), precision=args.precision,
                       threads=None if getattr(args, "threads", None) == "auto" else getattr(args, "threads", None),
                       **{f.name: getattr(args, f.name, f.default) for f in SERVE_OPTIONS})
