"""``egsde-rt``: the command line (what it says of itself: ``help.DESCRIPTION``)."""

# One module per command family, each with `register(subparsers)` (its subcommands and their flags,
# a handler per subcommand set as `func`): demo, checkpoints (reference, export), engine (build,
# translate, serve, info, verify), train, distill, evaluate (eval), bench (+ bench_serve); the flags several
# commands share are defined once in `flags`; `jobs` prints a folder job's progress and outcome; `help`
# holds what --help shows beyond each option's help (the defaults, every command's examples).
# `presets`, a listing with no flags, is here.

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__
from ..errors import EgsdeError
from . import bench, checkpoints, demo, distill, engine, evaluate, train
from .flags import SETTINGS_FLAGS, add_serve_flags, add_settings_flags, existing_flags, settings_overrides
from .help import DESCRIPTION, EPILOG, HelpFormatter, epilog

__all__ = ["main", "build_parser", "settings_overrides", "add_settings_flags", "SETTINGS_FLAGS", "add_serve_flags",
           "existing_flags"]


# The demo's networks, a preset of `bench --preset` (its default) and `bench --export --preset`.
DEMO_PRESET = ("demo", "the embedded demo: discs -> squares, its networks shipped with the package "
               "(egsde-rt demo --engine-path prints its engine; bench --preset's default)")


def _cmd_presets(args) -> int:
    from ..demo import DEMO_SCORE_CONFIG, DEMO_SETTINGS
    from ..method.presets import PRESETS

    def show(name, description, s, image_size, checkpoints) -> None:
        print(f"{name:15s} {description}")
        print(f"{'':15s} score={s.score_kind} M={s.M} ls={s.ls:g} li={s.li:g} s1={s.s1} s2={s.s2} "
              f"down_N={s.down_N} image_size={image_size} checkpoints={checkpoints}")

    for preset in PRESETS.values():
        show(preset.name, preset.description, preset.settings, preset.image_size, json.dumps(preset.checkpoints))
    show(*DEMO_PRESET, DEMO_SETTINGS, DEMO_SCORE_CONFIG["image_size"], "shipped (egsde_rt/demo/weights)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``egsde-rt`` parser: each subcommand's parsed arguments carry its handler as ``func``;
    every --help shows the options' defaults and the command's examples (``help``)."""
    parser = argparse.ArgumentParser(prog="egsde-rt", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"egsde-rt {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    demo.register(sub)
    sub.add_parser("presets", help="list the paper's presets (and the demo's) and their settings"
                   ).set_defaults(func=_cmd_presets)
    for family in (checkpoints, engine, train, distill, evaluate, bench):
        family.register(sub)
    for name, command in sub.choices.items():
        command.formatter_class, command.epilog = HelpFormatter, epilog(name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EgsdeError as err:
        print(f"egsde-rt: error: {err}", file=sys.stderr)
        return 2
