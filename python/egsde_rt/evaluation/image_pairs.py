"""The images of an evaluation folder, and translated images paired with their sources by stem.

The official scripts find and pair images differently per metric: FID globs one folder level for
pytorch-fid's lower-case extensions; SSIM, PSNR and MSE walk both folders recursively and pair the
i-th of each sorted list; L2 lists the translated folder and opens ``source/<name up to the first
dot>.jpg``. On folders where every translated ``NAME.png`` has a ``NAME.jpg`` source these agree.
egsde-rt pairs once, by stem, for every metric: one folder level, extensions of any case, a
translated image without a source is an error rather than a silent mismatch, and source images that
were not translated are allowed (counted, not used) so a subset of a validation folder can be
evaluated. The listing is not recursive, unlike ``egsde_rt.images.list_images``, because FID reads one
folder level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..errors import ConfigError, ImageError

PathLike = Union[str, os.PathLike]

# pytorch-fid's IMAGE_EXTENSIONS, matched case-insensitively.
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
_LISTED = 8  # names shown in an error message


@dataclass(frozen=True)
class ImagePair:
    """A translated image and the source image it was translated from."""

    stem: str
    translated: Path
    source: Path


@dataclass(frozen=True)
class FolderPairing:
    """The pairs, sorted by translated file name, and the source images nobody translated."""

    pairs: list[ImagePair]
    untranslated_sources: list[Path]


def _listed(names) -> str:
    names = list(names)
    more = f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def list_images(folder: PathLike, *, what: str = "image folder") -> list[Path]:
    """The image files directly inside ``folder``, sorted by path; raises if there are none.

    ``what`` names the folder in error messages (e.g. "translated folder").
    """
    folder = Path(folder)
    if not folder.exists():
        raise ConfigError(f"{what} not found: {folder}")
    if not folder.is_dir():
        raise ConfigError(f"{what} is not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(
            f"no images in {what} {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return files


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    index: dict[str, Path] = {}
    clashes: list[str] = []
    for path in files:
        if path.stem in index:
            clashes.append(f"{index[path.stem].name} / {path.name}")
        else:
            index[path.stem] = path
    if clashes:
        raise ImageError(
            f"the {what} has several images with the same stem, so they cannot be paired by name: "
            f"{_listed(clashes)}; keep one file per stem"
        )
    return index


def pair_by_stem(translated: PathLike, source: PathLike) -> FolderPairing:
    """Pair ``translated/NAME.*`` with ``source/NAME.*``.

    Raises ``ImageError`` when a translated image has no source image of the same stem, or when
    a folder holds two images of one stem (``a.png`` and ``a.jpg``); ``ConfigError`` when a folder
    does not exist.
    """
    translated_files = list_images(translated, what="translated folder")
    source_files = list_images(source, what="source folder")
    translated_by_stem = _by_stem(translated_files, "translated folder")
    source_by_stem = _by_stem(source_files, "source folder")
    orphans = [path.name for stem, path in translated_by_stem.items() if stem not in source_by_stem]
    if orphans:
        raise ImageError(
            f"{len(orphans)} of {len(translated_files)} translated images have no source image with the "
            f"same name (stem) in {Path(source)}: {_listed(orphans)}. Each translated/NAME.png needs a "
            f"source/NAME.<ext>: point SOURCE at the folder the images were translated from, or remove "
            f"the translated images that have no source."
        )
    pairs = [ImagePair(path.stem, path, source_by_stem[path.stem]) for path in translated_files]
    untranslated = [path for stem, path in source_by_stem.items() if stem not in translated_by_stem]
    return FolderPairing(pairs, untranslated)
