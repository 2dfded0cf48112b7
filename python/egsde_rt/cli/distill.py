"""``egsde-rt distill ENGINE --source DATA --output-dir DIR``: a distilled student of an engine, as an
engine of its own (``jobs.distillation`` stage 1, ``jobs.trajectory_distillation`` stage 2)."""

from __future__ import annotations

from pathlib import Path

from ..engine.format import EXPORT_FORMATS
from .flags import add_engine_dir_arg, add_output_dir_flag, add_seed_flag


def register(sub) -> None:
    p = sub.add_parser("distill", help="distill an engine's guided sampler into a student engine that needs no "
                                       "expert (stage 1) and runs in a handful of updates (stage 2)")
    add_engine_dir_arg(p, help="the teacher: an engine directory (the demo's: egsde-rt demo --engine-path)")
    p.add_argument("--source", required=True,
                   help="source-domain training images: a folder, or procedural:source (the demo's domain)")
    add_output_dir_flag(p, help="the student engine directory to write")
    p.add_argument("--stage", type=int, choices=(1, 2), default=2,
                   help="1: the guidance folded in, any update count; 2: also the updates cut to --updates")
    p.add_argument("--updates", type=int, default=5, help="stage 2: the student's updates")
    p.add_argument("--init", default=None, help="stage 2: start from these student weights (e.g. stage 1's "
                                                "student.pt) instead of the teacher's score UNet")
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate")
    p.add_argument("--ema", type=float, default=0.999, help="decay of the exponential moving average of the "
                   "weights (the student exported is the average)")
    p.add_argument("--teacher-images", type=int, default=2048,
                   help="stage 2: source images the teacher translates in all (made as training goes, kept)")
    p.add_argument("--teacher-batch", type=int, default=64, help="images per teacher run")
    p.add_argument("--refresh-every", type=int, default=25, help="training steps between two teacher runs")
    p.add_argument("--checkpoint-every", type=int, default=100, help="training steps between two saves of the "
                   "training state (--resume goes on from the last)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 autocast)")
    p.add_argument("--work", default=None, metavar="DIR", help="where the training state goes (default: "
                   "<output-dir>.training)")
    p.add_argument("--resume", action="store_true", help="go on from the training state in --work")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir engine")
    p.add_argument("--eval-images", type=int, default=64,
                   help="held-out images measured against the teacher after training (procedural:source only)")
    p.add_argument("--formats", nargs="+", choices=EXPORT_FORMATS, default=list(EXPORT_FORMATS),
                   help="what the student engine holds (torch alone exports in seconds and serves the torch and "
                        "compiled backends)")
    add_seed_flag(p, help="the seed of the training's randomness (images, noise, initialisation)")
    p.set_defaults(func=run_distill)


def run_distill(args) -> int:
    from ..jobs.student_engines import DistillPlan, distill

    plan = DistillPlan(engine=Path(args.engine_dir), source=args.source, out=Path(args.output_dir),
                       stage=args.stage, updates=args.updates, init=args.init,
                       work=Path(args.work) if args.work else None, resume=args.resume, overwrite=args.overwrite,
                       eval_images=args.eval_images, formats=tuple(args.formats),
                       train={"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema,
                              "seed": args.seed, "checkpoint_every": args.checkpoint_every, "device": args.device,
                              "teacher_batch": args.teacher_batch, "refresh_every": args.refresh_every,
                              **({"teacher_images": args.teacher_images} if args.stage == 2 else {})})
    record = distill(plan)
    print(record["engine"])
    return 0
