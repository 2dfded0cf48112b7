"""Building plans into an engine's cache (``plans/``), for every kind (see ``engine.plans``):
reuse a plan whose key (graph source, precision, batch profile, machine identity) and file hash
match (``engine.verification``: hashed once per machine and file), build what is missing (a
progress bar, stage "plans"), and record each plan in the manifest.

A plan is built under a temporary name of its own in ``plans/`` (``user_cache.temporary_path``:
``.<name>.<random>.tmp<suffix>``), checked there by its builder, and only then renamed to its final
name (atomically, ``os.replace``) and recorded in the manifest, in one ``format.update_manifest``
(the manifest as it is on disk then, under the engine directory's lock): a build that fails or is
interrupted leaves nothing under the final name, its temporary file is removed, and builds running
at the same time (other precisions, other processes) each keep the entries the others recorded."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Callable

from ..engine import EngineDir
from ..engine.format import Manifest, PlanEntry, update_manifest
from ..user_cache import temporary_path
from ..engine.plans import PLANS_DIR, MachineIdentity, graph_source, plan_entry, plan_key
from ..engine.verification import hash_and_record, matches
from ..errors import EgsdeError
from .progress import stage


def build_cached_plans(engine: EngineDir, *, kind: str, identity: MachineIdentity, precision: str, profile,
                       suffix: str, build_one: Callable[[object, Path], "dict | None"],
                       log: Callable[[str], None] = print) -> dict:
    """{graph name: plan path} for the engine's graphs (``EngineDir.contracts``);
    ``build_one(contract, path)`` writes a missing plan at ``path`` (a temporary name, see the
    module docstring), checks it, and may return extra fields for its manifest entry (e.g. its
    validation errors)."""
    engine.file(PLANS_DIR, "the plans directory").mkdir(exist_ok=True)
    manifest = engine.manifest
    paths = {}
    with stage("plans", len(engine.contracts)) as bar:
        for contract in engine.contracts:
            source = graph_source(engine, contract.name, kind, precision)
            key = plan_key(kind, source, precision, tuple(profile), identity.device, identity.capability,
                           identity.runtime)
            entry = manifest.plans.get(key)
            name = f"{PLANS_DIR}/{contract.name}-{key}{suffix}"
            path = paths[contract.name] = engine.file(name, f"plans.{key}.file")
            if entry and entry.file == name and path.is_file() and matches(path, entry.sha256):
                log(f"{contract.name}: cached {kind} plan {path.name}")
                bar.update()
                continue
            log(f"{contract.name}: building a {precision} {kind} plan for {identity.describe()} "
                f"(batch {profile[0]}..{profile[-1]}) ...")

            def entry_of(extra: dict) -> PlanEntry:
                """The manifest entry of the plan now at ``path`` (called at once, in this iteration)."""
                return plan_entry(kind, contract.name, name, hash_and_record(path), path.stat().st_size, source,
                                  precision, profile, identity, _now(), **extra)

            manifest.plans[key] = _build_atomically(engine, key, path, lambda tmp: build_one(contract, tmp), entry_of)
            bar.update()
    return paths


def _build_atomically(engine: EngineDir, key: str, path: Path, build: Callable[[Path], "dict | None"],
                      entry_of: Callable[[dict], PlanEntry]) -> PlanEntry:
    """``build(tmp)`` a file at a temporary name beside ``path``; then, in one update of the
    manifest (``update_manifest``: as it is on disk, under the directory's lock, so that the file
    and its entry agree whatever other builds do), rename it to ``path`` and record ``entry_of(extra)``
    under ``key``; that entry. A failed build leaves neither (an old file at ``path``, which did
    not match its record, is removed first)."""
    path.unlink(missing_ok=True)
    tmp = temporary_path(path)
    try:
        extra = build(tmp) or {}
        if not tmp.is_file():
            raise EgsdeError(f"building {path.name} wrote no file")

        def place(current: Manifest) -> None:
            os.replace(tmp, path)
            current.plans[key] = entry_of(extra)

        return update_manifest(engine.path, place).plans[key]
    finally:
        tmp.unlink(missing_ok=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
