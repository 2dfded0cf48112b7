"""The per-user cache directory of egsde-rt: ``$EGSDE_RT_CACHE``, else ``$XDG_CACHE_HOME/egsde-rt``
(``~/.cache/egsde-rt``). The demo engine, the bench's preset engines and the record of verified
engine files (``engine.verification``) live there.

The directory is created private (mode 0700). What decides whether a file is trusted (the
records of verified files) is read only where no other user can have written it: a directory
(``private_dir``) and files (``read_private``) owned by this user and writable by no one else.
Anything else is ignored, with one warning per directory that says how to fix it.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("egsde_rt")
_warned: set[str] = set()


def cache_root() -> Path:
    """The cache directory, created with mode 0700 where missing (where it can be)."""
    if os.environ.get("EGSDE_RT_CACHE"):
        root = Path(os.environ["EGSDE_RT_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egsde-rt"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass  # a read-only home: what would be written there is not (the callers say so or recompute)
    return root


def not_private(status: os.stat_result) -> str | None:
    """Why a file or directory with this status could have been written by another user, or None
    (always None where there is no POSIX ownership to check: Windows)."""
    if not hasattr(os, "getuid"):
        return None
    if status.st_uid != os.getuid():
        return f"owned by another user (uid {status.st_uid})"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by other users (mode {stat.S_IMODE(status.st_mode):o})"
    return None


def _warn_once(directory: Path, why: str) -> None:
    if str(directory) not in _warned:
        _warned.add(str(directory))
        log.warning("egsde-rt: the cache directory %s is %s: what egsde-rt records there (which engine files "
                    "it has verified) is ignored, and every engine file is hashed at every load; make it private "
                    "(chmod 700 %s) or set EGSDE_RT_CACHE to a private directory", directory, why, directory)


def private_dir(name: str) -> Path | None:
    """``cache_root()/name``, created with mode 0700 where missing, if it and the cache root are
    this user's alone; else None (warned once; None without a warning where it cannot be created)."""
    root = cache_root()
    path = root / name
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        for directory in (root, path):
            why = not_private(directory.stat())
            if why:
                _warn_once(directory, why)
                return None
    except OSError:
        return None
    return path


def read_private(path: Path, limit: int = 4096) -> bytes | None:
    """The first ``limit`` bytes of a file in a ``private_dir`` if the file is this user's alone;
    None where it is missing, unreadable or not private (warned once)."""
    try:
        with open(path, "rb") as f:
            why = not_private(os.fstat(f.fileno()))
            if why is None:
                return f.read(limit)
    except OSError:
        return None
    _warn_once(path.parent, f"holding a file {why}")
    return None


def temporary_path(path: Path) -> Path:
    """A name of its own beside ``path`` to write it under before renaming it into place
    (``.<stem>.<random>.tmp<suffix>``: the suffix kept for writers that need it, e.g. ``.pt2``)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp{path.suffix}")


def write_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` through a temporary file of a unique name in the same directory
    (created exclusively, with ``mode`` less the umask), then ``os.replace`` it over ``path``: a
    reader sees the old file or the new one, and no other writer shares the temporary file."""
    tmp = temporary_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write a file atomically (``write_atomically``), readable and writable by this user only."""
    write_atomically(path, data, 0o600)
