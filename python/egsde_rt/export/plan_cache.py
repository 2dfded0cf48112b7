"""Building plans into an engine's cache (``plans/``), for every kind (see ``engine.plans``):
reuse a plan whose key (graph source, precision, batch profile, machine identity) and file hash
match (``engine.verification``: hashed once per machine and file), build what is missing (a
progress bar, stage "plans"), and record each plan in the manifest."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Callable

from ..engine import DSE_GRAD, SCORE, EngineDir
from ..engine.plans import PLANS_DIR, MachineIdentity, graph_source, plan_entry, plan_key
from ..engine.verification import hash_and_record, matches
from .progress import stage


def build_cached_plans(engine: EngineDir, *, kind: str, identity: MachineIdentity, precision: str, profile,
                       suffix: str, build_one: Callable[[object, Path], "dict | None"],
                       log: Callable[[str], None] = print) -> dict:
    """{graph name: plan path} for both graphs; ``build_one(contract, path)`` writes a missing plan
    and may return extra fields for its manifest entry (e.g. its validation errors)."""
    (engine.path / PLANS_DIR).mkdir(exist_ok=True)
    manifest = engine.manifest
    paths = {}
    with stage("plans", 2) as bar:
        for contract in (SCORE, DSE_GRAD):
            source = graph_source(engine, contract.name, kind)
            key = plan_key(kind, source, precision, tuple(profile), identity.device, identity.capability,
                           identity.runtime)
            entry = manifest.plans.get(key)
            path = paths[contract.name] = engine.file(f"{PLANS_DIR}/{contract.name}-{key}{suffix}")
            if entry and path.is_file() and matches(path, entry["sha256"]):
                log(f"{contract.name}: cached {kind} plan {path.name}")
                bar.update()
                continue
            log(f"{contract.name}: building a {precision} {kind} plan for {identity.describe()} "
                f"(batch {profile[0]}..{profile[-1]}) ...")
            extra = build_one(contract, path) or {}
            manifest.plans[key] = {**plan_entry(kind, contract.name, f"{PLANS_DIR}/{path.name}",
                                                hash_and_record(path), source, precision, profile, identity,
                                                _now()), **extra}
            manifest.write(engine.path)  # each plan is recorded as soon as it exists
            bar.update()
    return paths


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
