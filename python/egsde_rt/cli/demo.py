"""``egsde-rt demo``: the embedded demo engine on generated images, or its quality protocol (--eval)."""

from __future__ import annotations

import sys
from pathlib import Path

from .flags import add_backend_flag, add_output_dir_flag, add_seed_flag, add_threads_flag


def register(sub) -> None:
    """Add ``demo`` to the subcommands."""
    p = sub.add_parser("demo", help="translate generated images with the embedded demo engine")
    add_output_dir_flag(p, "where the grid and its record go", default="egsde-demo")
    p.add_argument("--count", type=int, help="images: rows of the grid (default 8), or held-out images with --eval "
                   "(default 256)")
    add_seed_flag(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--eval", action="store_true", help="the quality protocol: every method on the held-out split "
                      "(settings chosen on the tuning split); writes demo-eval.json")
    mode.add_argument("--engine-path", action="store_true", help="print the demo engine's directory and nothing "
                      "else (exported into the user cache on first use), for ENGINE=$(egsde-rt demo --engine-path)")
    mode.add_argument("--distilled-engine-path", action="store_true", help="print the directory of the demo's "
                      "distilled student engine (a few updates, no expert), exported on first use as --engine-path")
    add_backend_flag(p)
    add_threads_flag(p)
    p.set_defaults(func=run)


def print_engine_path(which, log) -> int:
    """Print the directory ``which(log=log)`` returns (exporting it first if needed) as the only
    line on stdout: whatever the export says goes to stderr."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        path = which(log=log)
    print(path)
    return 0


def run(args) -> int:
    from .. import demo
    from ..demo import format_eval, format_table, run_demo, run_eval

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.engine_path or args.distilled_engine_path:
        return print_engine_path(demo.engine_dir if args.engine_path else demo.distilled_engine_dir, log)
    if args.eval:
        record = run_eval(args.output_dir, count=args.count, backend=args.backend, threads=args.threads, log=log)
        print(format_eval(record))
        print(f"record: {Path(args.output_dir) / 'demo-eval.json'}")
        return 0
    result = run_demo(args.output_dir, count=8 if args.count is None else args.count, seed=args.seed,
                      backend=args.backend, threads=args.threads, log=log)
    print("realism: the target-domain probability given by an independent judge classifier;")
    print("faithfulness: PSNR and SSIM to the source image (higher is more faithful); PSNR tgt: to the paired true "
          "target; evals: network evaluations per image.")
    print(format_table(result["table"]))
    print(f"grid ({' | '.join(result['columns'])}): {result['grid']}")
    print("the quality of each method on 256 held-out images: egsde-rt demo --eval")
    return 0
