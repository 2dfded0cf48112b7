"""``egsde-rt``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import EgsdeError


def _cmd_presets(args) -> int:
    from .presets import PRESETS

    for preset in PRESETS.values():
        s = preset.settings
        print(f"{preset.name:15s} {preset.description}")
        print(f"{'':15s} score={s.score_kind} M={s.M} ls={s.ls:g} li={s.li:g} s1={s.s1} s2={s.s2} "
              f"down_N={s.down_N} image_size={preset.image_size} checkpoints={json.dumps(preset.checkpoints)}")
    return 0


def _output_paths(inputs: list[Path], output_dir: Path, overwrite: bool) -> list[Path]:
    outputs = [output_dir / (p.stem + ".png") for p in inputs]
    if len(set(outputs)) != len(outputs):
        raise EgsdeError("two inputs share a file name stem; their outputs would collide")
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise EgsdeError(f"outputs exist (pass --overwrite to replace them): {existing[:3]}")
    return outputs


def _cmd_reference(args) -> int:
    import torch

    from .io import images_to_batch, list_images, tensor_to_images
    from .models import load_checkpoint
    from .presets import get_preset
    from .progress import ProgressBar
    from .reference import run_reference

    preset = get_preset(args.preset)
    overrides = {k: getattr(args, k) for k in ("M", "ls", "li", "steps") if getattr(args, k) is not None}
    settings = preset.settings.with_overrides(**overrides)
    inputs: list[Path] = []
    for item in map(Path, args.inputs):
        inputs += list_images(item) if item.is_dir() else [item]
    if not inputs:
        raise EgsdeError("no input images found")
    output_dir = Path(args.output_dir)
    outputs = _output_paths(inputs, output_dir, args.overwrite)
    score, dse = preset.build_models()
    load_checkpoint(score, args.score_ckpt)
    load_checkpoint(dse, args.dse_ckpt)
    score.to(args.device).eval()
    dse.to(args.device).eval()
    output_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(inputs, outputs):
        x0 = images_to_batch([src], preset.image_size).to(args.device)
        bar = ProgressBar(settings.num_updates * settings.repeats, label=src.name)
        y = run_reference(x0, score, dse, settings, seed=args.seed, callback=bar.step_callback())
        (image,) = tensor_to_images(y)
        tmp = dst.with_suffix(".partial.png")
        image.save(tmp)
        tmp.replace(dst)
        print(dst)
    return 0


def _cmd_bench(args) -> int:
    from .bench import main_bench

    return main_bench(batch=args.batch, size=args.size, down_N=args.down_N, device=args.device,
                      iters=args.iters, json_path=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egsde-rt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"egsde-rt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the paper's presets and their settings")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("reference", help="translate images with the eager PyTorch reference sampler")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--preset", default="cat2dog")
    p.add_argument("--score-ckpt", required=True)
    p.add_argument("--dse-ckpt", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--M", type=int)
    p.add_argument("--ls", type=float)
    p.add_argument("--li", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser("bench", help="time the native kernels against their eager PyTorch equivalents")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--down-N", dest="down_N", type=int, default=32)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", help="also write the results as JSON to this path")
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
