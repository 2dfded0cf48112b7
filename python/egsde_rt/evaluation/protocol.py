"""The paper's evaluation of a translated folder: ``evaluate_folders`` (``egsde-rt eval``).

As the official ``tool/eval_score.py`` (``fid_l2_psnr_ssim``): per pair of translated and source
images, L2, MSE, PSNR and SSIM (and MS-SSIM, which the official file defines but does not print),
each averaged over the images (``sum / count``); FID of the translated folder against the target
folder (the target domain's images) or against precomputed pytorch-fid statistics. KID is added when
a target folder is given (it needs the target's features, not only their statistics).

Differences from the official scripts: pairs are matched by stem for every metric
(``folders.pair_by_stem``; the same pairs wherever the official pairing is right), FID accepts
images of mixed sizes, L2 is summed and the per-image values are averaged in float64 (the official
float32 sums differ by float rounding only: ~1e-7 relative for the means, up to ~1e-4 for L2), and
everything a user can get wrong raises an ``EgsdeError`` before the slow work.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..errors import ConfigError, ImageError
from .fid import (frechet_distance, inception_features, kernel_inception_distance, load_statistics,
                  statistics_from_features)
from .image_pairs import list_images, pair_by_stem
from .inception import FID_FEATURE_DIM, load_fid_inception
from .metrics import PAIR_METRICS, pair_metrics
from .preprocessing import METRIC_SHORT_SIDE, check_fid_preprocessing, load_for_pair_metrics

PathLike = Union[str, os.PathLike]
Log = Callable[[str], None]


def _check_options(target, target_stats, batch_size: int, fid_preprocessing: str) -> None:
    if target is not None and target_stats is not None:
        raise ConfigError("give either a target folder or target statistics (.npz) for FID, not both")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_fid_preprocessing(fid_preprocessing)


def _pair_values(pairs, log: Log) -> list[dict]:
    rows = []
    for index, pair in enumerate(pairs, 1):
        translated = load_for_pair_metrics(pair.translated)
        source = load_for_pair_metrics(pair.source)
        if translated.shape != source.shape:
            raise ImageError(
                f"{pair.translated.name} and {pair.source.name} differ in aspect ratio: after resizing the "
                f"shorter side to {METRIC_SHORT_SIDE} they are {translated.shape[2]}x{translated.shape[1]} "
                f"and {source.shape[2]}x{source.shape[1]}; a translated image must keep its source's shape"
            )
        rows.append({"stem": pair.stem, "translated": str(pair.translated), "source": str(pair.source),
                     **pair_metrics(translated, source)})
        if index % 100 == 0 or index == len(pairs):
            log(f"pair metrics: {index}/{len(pairs)} images")
    return rows


def _means(rows: list[dict]) -> dict[str, Optional[float]]:
    means = {}
    for name in PAIR_METRICS:
        values = [row[name] for row in rows if row[name] is not None]
        means[name] = float(np.mean(np.asarray(values, dtype=np.float64))) if values else None
    return means


def evaluate_folders(translated: PathLike, source: PathLike, *, target: Optional[PathLike] = None,
                     target_stats: Optional[PathLike] = None, inception_weights: Optional[PathLike] = None,
                     batch_size: int = 50, device: Union[str, torch.device] = "cpu",
                     fid_preprocessing: str = "pytorch-fid", kid_subsets: int = 100,
                     kid_subset_size: int = 1000, log: Optional[Log] = None) -> dict:
    """Evaluate ``translated`` against ``source`` (and FID / KID against ``target`` or ``target_stats``).

    Returns a JSON-able dict:

    - ``translated``, ``source``, ``target``, ``target_stats``: the paths given (str or None);
    - ``num_pairs``: translated images, each paired with its source by stem;
      ``num_untranslated_sources``: source images without a translation (not used);
    - ``means``: ``l2``, ``mse``, ``psnr``, ``ssim``, ``ms_ssim`` averaged over the pairs
      (``ms_ssim`` None for images whose shorter side is 160 or less);
    - ``per_image``: one dict per pair: ``stem``, ``translated``, ``source`` and the five values;
    - ``fid``, ``kid``, ``kid_std``: None unless a target is given (``kid`` needs a target folder);
      ``num_target``: the target folder's image count (None for statistics);
    - ``protocol``: how the numbers were computed.

    ``fid_preprocessing`` is ``"pytorch-fid"`` (official cat2dog, wild2dog) or ``"male2female"``
    (see ``preprocessing``). ``log`` receives progress lines. Raises ``ConfigError`` (bad folders,
    options or statistics file), ``ImageError`` (no images, unpaired or unreadable images) and
    ``CheckpointNotFoundError`` / ``CheckpointMismatchError`` (Inception weights).
    """
    log = log or (lambda message: None)
    _check_options(target, target_stats, batch_size, fid_preprocessing)
    pairing = pair_by_stem(translated, source)
    wants_fid = target is not None or target_stats is not None

    # Everything a user can get wrong for FID fails here, before the slow work.
    target_files = list_images(target, what="target folder") if target is not None else None
    reference = load_statistics(target_stats) if target_stats is not None else None
    if reference is not None and reference[0].shape[0] != FID_FEATURE_DIM:
        raise ConfigError(
            f"{target_stats}: statistics of {reference[0].shape[0]}-dimensional features; FID here uses the "
            f"{FID_FEATURE_DIM} pool3 features (pytorch-fid --dims 2048)"
        )
    if wants_fid and len(pairing.pairs) < 2:
        raise ImageError("FID needs at least 2 translated images")
    if target_files is not None and len(target_files) < 2:
        raise ImageError(f"FID needs at least 2 target images, {target} has {len(target_files)}")
    model = load_fid_inception(inception_weights, device) if wants_fid else None

    rows = _pair_values(pairing.pairs, log)
    result = {
        "translated": str(translated), "source": str(source),
        "target": None if target is None else str(target),
        "target_stats": None if target_stats is None else str(target_stats),
        "num_pairs": len(rows), "num_untranslated_sources": len(pairing.untranslated_sources),
        "means": _means(rows), "per_image": rows,
        "fid": None, "kid": None, "kid_std": None, "num_target": None if target_files is None else len(target_files),
        "protocol": {
            "pair_metrics": f"RGB, shorter side resized to {METRIC_SHORT_SIDE} (PIL bicubic), values in [0, 1]; "
                            "per-image values averaged over pairs",
            "fid": None if not wants_fid else f"pytorch-fid InceptionV3 pool3 (2048), preprocessing "
                                              f"'{fid_preprocessing}', translated vs target",
            "kid": None if target is None else f"polynomial kernel (x.y/d + 1)^3, unbiased MMD^2, "
                                               f"{kid_subsets} subsets of up to {kid_subset_size}",
        },
    }
    if not wants_fid:
        return result

    def progress(what):
        return lambda done, total: log(f"Inception features ({what}): {done}/{total} images")

    translated_features = inception_features([p.translated for p in pairing.pairs], model, batch_size, device,
                                             fid_preprocessing, progress("translated"))
    mu, sigma = statistics_from_features(translated_features)
    if target_files is not None:
        target_features = inception_features(target_files, model, batch_size, device, fid_preprocessing,
                                             progress("target"))
        reference = statistics_from_features(target_features)
        result["kid"], result["kid_std"] = kernel_inception_distance(
            translated_features, target_features, num_subsets=kid_subsets, subset_size=kid_subset_size)
    result["fid"] = frechet_distance(mu, sigma, *reference)
    return result


def folder_statistics(folder: PathLike, *, inception_weights: Optional[PathLike] = None, batch_size: int = 50,
                      device: Union[str, torch.device] = "cpu", fid_preprocessing: str = "pytorch-fid",
                      log: Optional[Log] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a folder's images, to save with ``fid.save_statistics`` and pass as
    ``target_stats`` later (what ``pytorch-fid --save-stats`` computes)."""
    log = log or (lambda message: None)
    _check_options(None, None, batch_size, fid_preprocessing)
    files = list_images(folder, what="image folder")
    model = load_fid_inception(inception_weights, device)
    features = inception_features(files, model, batch_size, device, fid_preprocessing,
                                  lambda done, total: log(f"Inception features: {done}/{total} images"))
    return statistics_from_features(features)
