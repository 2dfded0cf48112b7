"""``egsde-rt train-score``, ``train-dse`` and ``train-judge``: training the score UNet, the DSE
classifier and the realism judge."""

from __future__ import annotations

from .flags import add_seed_flag


def _training_flags(p, steps: int, batch: int, lr: float) -> None:
    """--out, --steps, --batch-size, --lr, --seed and --fixed-batch, with a network's defaults."""
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the checkpoint to write (a state dict); FILE.train holds the state a rerun resumes from")
    p.add_argument("--steps", type=int, default=steps, help="training steps")
    p.add_argument("--batch-size", type=int, default=batch, help="images per training step")
    p.add_argument("--lr", type=float, default=lr, help="learning rate")
    add_seed_flag(p, help="the seed of the training's randomness (images, noise, initialisation)")
    p.add_argument("--fixed-batch", action="store_true", help="the same images every step (an overfitting check)")


def _two_domains(p) -> None:
    p.add_argument("--source", default="procedural:source",
                   help="source-domain images: a folder, or procedural:source (the demo's discs)")
    p.add_argument("--target", default="procedural:target",
                   help="target-domain images: a folder, or procedural:target (the demo's squares)")


def register(sub) -> None:
    """Add ``train-score``, ``train-dse`` and ``train-judge`` to the subcommands."""
    p = sub.add_parser("train-score", help="train a score UNet (ADM vocabulary) on the target domain")
    p.add_argument("--data", default="procedural:target", help="an image folder, or procedural:target")
    _training_flags(p, 4000, 32, 2e-4)
    p.set_defaults(func=run_train_score)

    p = sub.add_parser("train-dse", help="train a time-conditioned DSE classifier on both domains")
    _two_domains(p)
    _training_flags(p, 1500, 32, 3e-4)
    p.set_defaults(func=run_train_dse)

    p = sub.add_parser("train-judge", help="train the independent realism judge (a plain CNN on clean images)")
    _two_domains(p)
    _training_flags(p, 600, 64, 1e-3)
    p.set_defaults(func=run_train_judge)


def _train_config(args):
    from ..jobs.training import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       fixed_batch=args.fixed_batch)


def run_train_score(args) -> int:
    from ..jobs.training import train_score

    train_score(args.data, args.out, _train_config(args))
    return 0


def run_train_dse(args) -> int:
    from ..jobs.training import train_dse

    train_dse(args.source, args.target, args.out, _train_config(args))
    return 0


def run_train_judge(args) -> int:
    from ..jobs.training import train_judge

    train_judge(args.source, args.target, args.out, _train_config(args))
    return 0
