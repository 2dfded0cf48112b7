"""``egsde-rt demo``: the embedded demo engine on generated images, or its quality protocol (--eval)."""

from __future__ import annotations

import sys
from pathlib import Path

from .flags import add_backend_flag, add_seed_flag, add_threads_flag


def register(sub) -> None:
    """Add ``demo`` to the subcommands."""
    p = sub.add_parser("demo", help="translate generated images with the embedded demo engine")
    p.add_argument("--output-dir", default="egsde-demo")
    p.add_argument("--count", type=int, help="images: rows of the grid (default 8), or held-out images with --eval "
                   "(default 256)")
    add_seed_flag(p)
    p.add_argument("--eval", action="store_true", help="the quality protocol: every method on the held-out split "
                   "(settings chosen on the tuning split); writes demo-eval.json")
    add_backend_flag(p)
    add_threads_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import format_eval, format_table, run_demo, run_eval

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
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
