"""``egsde-rt eval``: the paper's metrics of a folder of translated images."""

from __future__ import annotations

import sys

from ..errors import EgsdeError
from .flags import add_torch_device_flag


def register(sub) -> None:
    """Add ``eval`` to the subcommands."""
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
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception batch")
    add_torch_device_flag(p)
    p.add_argument("--kid-subsets", type=int, default=100, help="random subsets KID is averaged over")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="images per KID subset")
    p.add_argument("--json", help="write the results (means and per image) as JSON to this path")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.machine import command_line, now
    from ..bench.report import write_json
    from ..evaluation import evaluate_folders, folder_statistics, format_table, save_statistics

    def log(message):
        print(message, file=sys.stderr)

    if args.save_target_stats:
        if not args.target:
            raise EgsdeError("--save-target-stats needs --target DIR (the folder whose statistics to save)")
        mu, sigma = folder_statistics(args.target, inception_weights=args.inception_weights,
                                      batch_size=args.batch_size, device=args.device.torch,
                                      fid_preprocessing=args.fid_preprocessing, log=log)
        save_statistics(args.save_target_stats, mu, sigma)
        log(f"wrote {args.save_target_stats}")
    result = evaluate_folders(args.translated, args.source, target=args.target, target_stats=args.target_stats,
                              inception_weights=args.inception_weights, batch_size=args.batch_size,
                              device=args.device.torch, fid_preprocessing=args.fid_preprocessing,
                              kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, log=log)
    print(format_table(result))
    if args.json:
        print(f"wrote {write_json({**result, 'command': command_line(), 'date': now()}, args.json)}")
    return 0
