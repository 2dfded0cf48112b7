"""Engine directories for the tests of their readers (tests/engine/test_engine_trust.py,
tests/reliability/test_fuzz.py)."""

import hashlib

from egsde_rt.engine import load_engine_dir
from egsde_rt.engine.plans import compiled_identity, graph_source


def with_stand_in_plans(path, manifest: dict) -> dict:
    """``manifest`` (of the engine at ``path``) with stand-in compiled plans of both graphs for this
    CPU, written under ``plans/`` and recorded with their sha256 and size (never loaded)."""
    engine = load_engine_dir(path)
    identity = compiled_identity("cpu")
    manifest["plans"] = {}
    (path / "plans").mkdir(exist_ok=True)
    for graph in ("score", "dse_grad"):
        data = f"stand-in {graph} plan".encode()
        (path / "plans" / f"{graph}.pt2").write_bytes(data)
        manifest["plans"][f"key-{graph}"] = {
            "kind": "compiled", "graph": graph, "file": f"plans/{graph}.pt2",
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "source_sha256": graph_source(engine, graph, "compiled"), "precision": "fp32", "profile": [1, 8],
            "device": identity.device, "capability": identity.capability, "runtime": identity.runtime,
            "built": "2026-11-22T00:00:00"}
    return manifest
