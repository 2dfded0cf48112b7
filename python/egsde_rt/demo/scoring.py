"""What a translation of the demo's domains is worth, measured on image sets no training saw.

The splits (seeds of ``data.domain_batch``): training draws its images with seeds 0..5 and the
demo grid uses ``DEMO_IMAGE_SEED``; settings are chosen on ``tuning`` and reported on
``held_out``; ``reference_target`` is the set of real target images the Frechet distance compares
to. The metrics: realism (the independent judge's mean target probability), the Frechet distance
in the judge's feature space, faithfulness as the paper measures it (PSNR / SSIM to the source) and
the distance to the paired true target (PSNR / SSIM / L2).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..evaluation.fid import frechet_distance, statistics_from_features
from ..evaluation.metrics import psnr, ssim
from ..method.noise import derive_seed
from .data import domain_batch, paired_target
from .networks import JudgeNet, load_judge

QUALITY_SPLITS = {"tuning": 30001, "held_out": 30002, "reference_target": 30003}
SPLIT_SIZES = {"tuning": 128, "held_out": 256, "reference_target": 1024}
REPORTED_SETTINGS = ("solver", "steps", "spacing", "lowpass", "eta", "ls", "li", "M", "ilvr")


def judge_features(judge: JudgeNet, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The judge's penultimate features [N, 64] (the space of the demo's Frechet distance)."""
    with torch.no_grad():
        return torch.cat([judge.features(images[i:i + batch_size]).flatten(1)
                          for i in range(0, len(images), batch_size)]).double().numpy()


def reference_target_statistics(judge: JudgeNet, count: int = SPLIT_SIZES["reference_target"]
                                ) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the judge's features of ``count`` real target-domain images."""
    images = domain_batch("target", range(count), seed=QUALITY_SPLITS["reference_target"])
    return statistics_from_features(judge_features(judge, images))


def quality_metrics(y: torch.Tensor, x0: torch.Tensor, true_target: torch.Tensor, judge: JudgeNet,
                    reference_stats: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """What a translation ``y`` of sources ``x0`` is worth (all [N, 3, S, S] in [-1, 1]):
    realism, the Frechet distance to real target images (``reference_stats``; needs 2+ images),
    PSNR / SSIM to the source and PSNR / SSIM / L2 to the paired true target."""
    y = y.clamp(-1, 1)
    y01, x01, t01 = (y + 1) / 2, (x0 + 1) / 2, (true_target + 1) / 2
    with torch.no_grad():
        row = {"realism": float(judge(y).softmax(1)[:, 1].mean()),
               "psnr_source": float(psnr(y01, x01).mean()), "ssim_source": float(ssim(y01, x01).mean()),
               "psnr_target": float(psnr(y01, t01).mean()), "ssim_target": float(ssim(y01, t01).mean()),
               "l2_target": float((y01 - t01).flatten(1).norm(dim=1).mean())}
    if reference_stats is not None:
        row["fd"] = float(frechet_distance(*statistics_from_features(judge_features(judge, y)), *reference_stats))
    return row


def settings_row(settings) -> dict:
    """The settings a result row reports (``steps``: the updates actually run)."""
    row = {k: getattr(settings, k) for k in REPORTED_SETTINGS}
    row["steps"] = settings.num_updates
    return row


class SplitEvaluator:
    """Translates a split with one setting (run-time overrides of the translator's) and measures it;
    the translation alone is timed. Each image has its own noise seed, the same for every setting."""

    def __init__(self, translator, *, counts: dict | None = None, batch_size: int = 16, seed: int = 0,
                 log=None):
        self.translator, self.batch_size, self.seed, self.log = translator, batch_size, seed, log
        self.counts = counts = {**SPLIT_SIZES, **(counts or {})}
        self.judge = load_judge()
        self.reference = reference_target_statistics(self.judge, counts["reference_target"])
        self.splits = {}
        for name in ("tuning", "held_out"):
            indices = range(counts[name])
            self.splits[name] = (domain_batch("source", indices, seed=QUALITY_SPLITS[name]),
                                 paired_target(indices, seed=QUALITY_SPLITS[name]))

    def translate(self, split: str, overrides: dict, translator=None) -> tuple[torch.Tensor, float]:
        """The translations of a split and the seconds they took (``translator``: another engine's,
        e.g. a distilled student's, in place of this evaluator's)."""
        translator = translator or self.translator
        x0, _ = self.splits[split]
        seeds = [derive_seed(self.seed, f"quality/{split}/{i}") for i in range(len(x0))]
        start = time.perf_counter()
        y = translator.run_tensor(x0, seed=seeds, batch_size=self.batch_size, **overrides)  # at most max_batch a batch
        return y.clamp(-1, 1), time.perf_counter() - start

    def __call__(self, split: str, overrides: dict, translator=None) -> dict:
        translator = translator or self.translator
        x0, true_target = self.splits[split]
        settings = translator.settings_with(**overrides)
        y, seconds = self.translate(split, overrides, translator)
        row = {"split": split, "settings": settings_row(settings),
               "network_evaluations": settings.network_evaluations, "seconds_per_image": seconds / len(x0),
               **quality_metrics(y, x0, true_target, self.judge, self.reference)}
        if self.log is not None:
            self.log(f"{split:8s} {describe(row)}")
        return row


def setting_label(s: dict) -> str:
    li = f" li {s['li']:g}" if "li" in s else ""
    spacing = f" {s['spacing']}" if s.get("spacing", "uniform") != "uniform" else ""
    lowpass = f" {s['lowpass']}" if s.get("lowpass", "gradient") != "gradient" else ""
    return (f"{s['solver']} {s['steps']}{spacing} ls {s['ls']:g}{li}{lowpass} eta {s['eta']:g}"
            f"{' ilvr' if s.get('ilvr') else ''}")


def describe(row: dict) -> str:
    return (f"{setting_label(row['settings']):40s}: realism {row['realism']:.3f} "
            f"FD {row['fd']:7.1f} PSNR src {row['psnr_source']:.2f} tgt {row['psnr_target']:.2f} "
            f"{row['seconds_per_image']:.3f} s/image")
