"""What ``--help`` shows, set once for every command by ``build_parser``: each option's default
after its help (``HelpFormatter``), and each command's examples (``EXAMPLES``, its epilog). The
examples are real command lines: tests/cli parses each with the parser itself."""

from __future__ import annotations

import argparse

# The demo engine's directory, so that every example runs as it stands (`egsde-rt demo --engine-path`).
DEMO_ENGINE = "ENGINE=$(egsde-rt demo --engine-path)  # the demo engine's directory"
_CHECKPOINTS = "--score-ckpt afhq_dog_4m.pt --dse-ckpt cat2dog_dse.pt"

# Each command's examples, shown under its --help.
EXAMPLES: dict[str, list[str]] = {
    "demo": ["egsde-rt demo  # every method on 8 generated images: a grid PNG",
             "egsde-rt demo --eval  # the quality protocol on 256 held-out images",
             DEMO_ENGINE],
    "presets": ["egsde-rt presets"],
    "reference": [f"egsde-rt reference cats/ --preset cat2dog {_CHECKPOINTS} --output-dir dogs-reference/"],
    "export": [f"egsde-rt export --preset cat2dog {_CHECKPOINTS} --output-dir engines/cat2dog",
               "egsde-rt info engines/cat2dog  # what it holds, which backends run it here"],
    "build": [DEMO_ENGINE,
              'egsde-rt build "$ENGINE" --device cpu  # compiled plans (AOTInductor) for this CPU',
              'egsde-rt build "$ENGINE" --backend tensorrt --max-batch 8  # needs tensorrt and a GPU'],
    "translate": [DEMO_ENGINE,
                  'egsde-rt translate "$ENGINE" images/ --output-dir out/ --batch-size 4',
                  'egsde-rt translate "$ENGINE" images/ --output-dir out/ --resume  # finish an interrupted run',
                  'egsde-rt translate "$ENGINE" a.png --output-dir out/ --seed 7 --steps 20 --solver dpmpp-2m-sde',
                  'egsde-rt translate "$ENGINE" photo.jpg --output-dir out/ --fit pad  # keep the aspect ratio'],
    "serve": [DEMO_ENGINE,
              'egsde-rt serve "$ENGINE" --port 8000 --replicas 2 --max-batch-size 8'],
    "info": [DEMO_ENGINE, 'egsde-rt info "$ENGINE"'],
    "verify": [DEMO_ENGINE, 'egsde-rt verify "$ENGINE"  # hash every file against the manifest'],
    "train-score": ["egsde-rt train-score --data procedural:target --out score.pt --steps 200"],
    "train-dse": ["egsde-rt train-dse --out dse.pt --steps 200"],
    "train-judge": ["egsde-rt train-judge --out judge.pt"],
    "distill": [DEMO_ENGINE,
                'egsde-rt distill "$ENGINE" --source procedural:source --output-dir student/ --formats torch'],
    "eval": ["egsde-rt eval out/ images/ --json metrics.json  # L2, PSNR, SSIM to the sources"],
    "bench": ["egsde-rt bench  # the demo engine on every usable backend",
              "egsde-rt bench --backends eager onnxruntime-cpu --steps 10 --json bench.json --plot bench.png",
              "egsde-rt bench --kernels  # the native kernels against PyTorch"],
}

# What the top level's --help says: what to run first.
DESCRIPTION = """\
egsde-rt translates images between two domains with EGSDE (energy-guided stochastic differential
equations), from an engine directory exported from a score model and its domain-specific expert.

Start with the demo: it ships its own small engine (discs become squares), so nothing needs
downloading. Then export your own checkpoints: docs/your-checkpoints.md walks through it."""

EPILOG = """\
first steps:
  egsde-rt demo                            # every method on generated images: a grid PNG
  ENGINE=$(egsde-rt demo --engine-path)    # the demo engine's directory
  egsde-rt info "$ENGINE"                  # what it holds, which backends run it here
  egsde-rt translate "$ENGINE" images/ --output-dir out/

Each command's --help shows its options, their defaults and an example."""


def epilog(command: str) -> str:
    """The examples under ``command``'s --help, their comments aligned where the commands are short."""
    lines = [line.split("  # ", 1) for line in EXAMPLES[command]]
    width = max((len(parts[0]) for parts in lines if len(parts) == 2 and len(parts[0]) <= 48), default=0)
    shown = [f"  {parts[0]:{width}s}  # {parts[1]}" if len(parts) == 2 else f"  {parts[0]}" for parts in lines]
    return ("example:\n" if len(lines) == 1 else "examples:\n") + "\n".join(shown)


def default_text(value) -> str:
    """A default as the command line takes it: a list's items separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilog as written (their examples keep their lines); each option's
    help followed by its default, unless it has none (None), it is a flag (it takes no value),
    or its help places it (``%(default)s``)."""

    def _get_help_string(self, action) -> str:
        help = action.help or ""
        if (action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or "%(default)" in help
                or not action.option_strings):
            return help
        return f"{help} (default: {default_text(action.default).replace('%', '%%')})"
