"""The per-user cache directory of egsde-rt: ``$EGSDE_RT_CACHE``, else ``$XDG_CACHE_HOME/egsde-rt``
(``~/.cache/egsde-rt``). The demo engine, the bench's preset engines and the record of verified
engine files (``engine.verification``) live there."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("EGSDE_RT_CACHE"):
        return Path(os.environ["EGSDE_RT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "egsde-rt"
