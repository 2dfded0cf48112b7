"""``egsde-rt``: the command line."""

# One module per command family, each with `register(subparsers)` (its subcommands and their flags,
# a handler per subcommand set as `func`): demo, checkpoints (reference, export), engine (build,
# translate, serve, info, verify), train, distill, evaluate (eval), bench (+ bench_serve); the flags several
# commands share are defined once in `flags`; `jobs` prints a folder job's progress and outcome.
# `presets`, a listing with no flags, is here.

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__
from ..errors import EgsdeError
from . import bench, checkpoints, demo, distill, engine, evaluate, train
from .flags import SETTINGS_FLAGS, add_serve_flags, add_settings_flags, existing_flags, settings_overrides

__all__ = ["main", "build_parser", "settings_overrides", "add_settings_flags", "SETTINGS_FLAGS", "add_serve_flags",
           "existing_flags"]


def _cmd_presets(args) -> int:
    from ..method.presets import PRESETS

    for preset in PRESETS.values():
        s = preset.settings
        print(f"{preset.name:15s} {preset.description}")
        print(f"{'':15s} score={s.score_kind} M={s.M} ls={s.ls:g} li={s.li:g} s1={s.s1} s2={s.s2} "
              f"down_N={s.down_N} image_size={preset.image_size} checkpoints={json.dumps(preset.checkpoints)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``egsde-rt`` parser: each subcommand's parsed arguments carry its handler as ``func``."""
    parser = argparse.ArgumentParser(prog="egsde-rt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"egsde-rt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.register(sub)
    sub.add_parser("presets", help="list the paper's presets and their settings").set_defaults(func=_cmd_presets)
    for family in (checkpoints, engine, train, distill, evaluate, bench):
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EgsdeError as err:
        print(f"egsde-rt: error: {err}", file=sys.stderr)
        return 2
