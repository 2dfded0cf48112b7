"""A manifest's file names as paths confined to their engine directory.

Every name the manifest lists (a graph, a weights file, a plan) is read through ``confined``: a
relative POSIX path of plain components, which refuses an empty name, an absolute path, a drive
letter or a backslash, a ``.`` or ``..`` component, a NUL, and a name whose resolved path
(symbolic links followed) is outside the resolved engine directory. An engine directory is code
(its plans are shared objects and native code): one that names files elsewhere is not loaded.
"""

from __future__ import annotations

import reprlib
from pathlib import Path, PureWindowsPath

from ..errors import EngineDirError

UNTRUSTED = ("this engine directory is not trustworthy (an engine directory is code: load only engines you "
             "exported or trust); export it again (`egsde-rt export ...`)")


def _lexical_problem(name) -> str | None:
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if "\x00" in name:
        return "contains a NUL character"
    if "\\" in name or PureWindowsPath(name).drive:
        return "is a Windows path (a backslash or a drive letter)"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "leaves the directory (a '..' component)"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    return None


def confined(root: Path, name, entry: str) -> Path:
    """The path of ``name`` (a manifest entry's file name) inside the engine directory ``root``;
    an ``EngineDirError`` naming ``entry`` (e.g. "graphs.score.file") unless it stays inside."""
    problem = _lexical_problem(name)
    path = None
    if problem is None:
        path = root / name
        try:
            inside = path.resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symbolic link loop (RuntimeError before Python 3.13)
            problem = "cannot be resolved (a symbolic link loop?)"
        else:
            if not inside:
                problem = "resolves outside the engine directory (through a symbolic link)"
    if problem is not None:
        raise EngineDirError(f"{root}: the manifest's {entry} names {reprlib.repr(name)}, which {problem}: {UNTRUSTED}")
    return path
