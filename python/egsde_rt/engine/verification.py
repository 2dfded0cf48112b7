"""Verifying an engine's files against their manifest entries, fully once and cheaply after.

Every file the manifest lists is verified the same way: the graphs and weights when the engine
is loaded, each plan before a runner gets it (``plans.matching_plans``), at the level the engine
was loaded with; and each is first confined to the engine directory (``confinement``).
Three levels (``VERIFY_LEVELS``):

* ``"full"``: every file's size and sha256 (reads every byte). ``egsde-rt verify ENGINE`` and
  ``load_engine_dir(..., verify="full")``.
* ``"cached"`` (loading's default): every file's size; its sha256 only when this machine has not
  yet verified this very file. A file that matched its sha256 is recorded in the user cache
  (``user_cache.private_dir("verified")``) under its identity: device, inode, size, modification
  and status-change times in nanoseconds. Any write to the file, a replacement, a copy or a
  truncation changes that identity (the status-change time cannot be set back by a user), so
  the file is hashed again before it is used. What this does not catch is the medium changing
  bytes under an unchanged identity (bit rot): ``egsde-rt verify`` reads everything again.
* ``"size"``: existence and size only (``check_hashes=False``).

``verify_file`` checks a file where it lies. What is then loaded into the process is read once
more, so a file replaced between the check and the read would escape the check: a plan a runner
deserialises from bytes (TensorRT) is read through ``VerifiedFile.read``, which checks the size
and sha256 of the very bytes it returns (at every level but ``"size"``).

The record is one small file per verified identity, written atomically: concurrent loaders
(Ray actors, Serve replicas) at worst hash the same file twice. Records are trusted only in a
private cache (``user_cache.private_dir``: the directory and each record owned by this user and
writable by no one else), since a record planted by another user would let a changed file pass
unhashed; where the cache is not private (warned once) or cannot be written, every load hashes,
as ``"full"``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, EngineDirError
from ..user_cache import private_dir, read_private, write_private
from .confinement import confined

VERIFY_LEVELS = ("full", "cached", "size")
RECORD_DIR = "verified"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_level(level: str) -> str:
    if level not in VERIFY_LEVELS:
        raise ConfigError(f"verify must be one of {VERIFY_LEVELS}, got {level!r}")
    return level


def _identity(stat: os.stat_result) -> str:
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _record_path(stat: os.stat_result) -> Path | None:
    records = private_dir(RECORD_DIR)
    return None if records is None else records / hashlib.sha256(_identity(stat).encode()).hexdigest()[:32]


def _recorded(stat: os.stat_result) -> str | None:
    record = _record_path(stat)
    data = read_private(record, 128) if record is not None else None
    return data.decode("ascii", "replace").strip() if data else None


def _write_record(stat: os.stat_result, sha256: str) -> None:
    record = _record_path(stat)
    if record is None:
        return  # no private cache: the next load hashes again
    try:
        write_private(record, f"{sha256}\n".encode())
    except OSError:
        pass  # a full disk: the next load hashes again


def _hash_unchanged(path: Path) -> tuple[str, os.stat_result | None]:
    """(sha256, the file's stat if it did not change while being hashed, else None)."""
    before = path.stat()
    digest = sha256_file(path)
    return digest, before if _identity(path.stat()) == _identity(before) else None


def forget(path: str | os.PathLike) -> None:
    """Drop the record of the file at ``path`` as it is now (it is hashed at its next check)."""
    record = _record_path(os.stat(path))
    if record is not None:
        record.unlink(missing_ok=True)


def hash_and_record(path: str | os.PathLike) -> str:
    """The sha256 of a file just written (export, plans), recorded as verified."""
    digest, stat = _hash_unchanged(Path(path))
    if stat is not None:
        _write_record(stat, digest)
    return digest


def matches(path: str | os.PathLike, sha256: str) -> bool:
    """Whether the file at ``path`` has ``sha256``: recorded for its identity, or hashed (and recorded)."""
    path = Path(path)
    try:
        if _recorded(path.stat()) == sha256:
            return True
        digest, unchanged = _hash_unchanged(path)
    except OSError:
        return False
    if digest == sha256 and unchanged is not None:
        _write_record(unchanged, sha256)
    return digest == sha256


def verify_file(root: Path, relative: str, sha256: str | None, size: int | None, level: str = "cached", *,
                entry: str = "a file entry", fix: str = "export the engine again") -> Path:
    """Check one listed file at ``level``: confined to ``root`` (``confinement``; ``entry`` names
    the manifest field, for messages), present, of its size and sha256; its path, or an
    ``EngineDirError`` naming the file and ``fix``."""
    file = confined(root, relative, entry)
    if not file.is_file():
        raise EngineDirError(f"{root}: missing file {relative} listed in the manifest: {fix}")
    stat = file.stat()
    if size is not None and stat.st_size != size:
        raise EngineDirError(f"{root}: {relative} has {stat.st_size} bytes, the manifest says {size} "
                             f"(truncated, corrupt or replaced): {fix}")
    if sha256 is None or level == "size":
        return file
    if not (matches(file, sha256) if level == "cached" else sha256_file(file) == sha256):
        raise EngineDirError(f"{root}: {relative} does not match its sha256 in the manifest (corrupt or replaced): "
                             f"{fix}")
    if level == "full":
        _write_record(stat, sha256)
    return file


@dataclass(frozen=True)
class VerifiedFile(os.PathLike):
    """A listed file that passed ``verify_file``: its path (``os.fspath`` and ``str`` give it), the
    sha256 and size its manifest entry records (sha256 None at the ``"size"`` level) and the fix an
    error names. ``read()`` gives its bytes checked on those very bytes, for a reader that loads
    bytes (no gap between the check and the use)."""

    path: Path
    sha256: str | None
    size: int | None
    fix: str = "export the engine again"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> bytes:
        """The file's bytes, read once (at most its recorded size and one byte more), of its
        recorded size and sha256; an ``EngineDirError`` naming the file and the fix otherwise."""
        try:
            with open(self.path, "rb") as f:
                data = f.read() if self.size is None else f.read(self.size + 1)
        except OSError as err:
            raise EngineDirError(f"{self.path}: cannot read it ({err.strerror}): {self.fix}") from None
        if self.size is not None and len(data) != self.size:
            raise EngineDirError(f"{self.path} has {'at least ' if len(data) > self.size else ''}{len(data)} bytes "
                                 f"now, the manifest says {self.size} (changed since it was verified): {self.fix}")
        if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
            raise EngineDirError(f"{self.path} does not match its sha256 in the manifest (changed since it was "
                                 f"verified): {self.fix}")
        return data
