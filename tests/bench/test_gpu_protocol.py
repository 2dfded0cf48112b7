"""The GPU protocol (scripts/gpu_protocol.py): what comes back fits a lease (one archive and one
summary, at most 8 files, a planned budget of at most 8 minutes), a skipped GPU test fails its
step, a step out of time ends its tier and the next tier starts, and the goldens travel.

The dry run (every tier on the CPU) is run by CI once before the tests (``EGSDE_DRY_RUN_OUT``
names its output folder); without that variable the test runs it itself (about 40 s)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import ROOT

SPEC = importlib.util.spec_from_file_location("gpu_protocol", ROOT / "scripts" / "gpu_protocol.py")
protocol = sys.modules["gpu_protocol"] = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(protocol)

SUMMARY_FIELDS = {"protocol", "dry_run", "device", "started", "finished", "command", "machine", "reference_dir",
                  "archive", "planned_budget_s", "budget_limit_s", "tier_limits_s", "headline", "tiers", "counts",
                  "wall_s", "archive_files"}
TIER_NAMES = ["correctness", "headline", "sanitizer", "compiled"]
MIB16 = 16 * 2**20


def _junit(tmp_path, cases: str) -> Path:
    path = tmp_path / "report.xml"
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


PASSED = '<testcase classname="t" name="test_a"/>'
SKIPPED = '<testcase classname="t" name="test_b"><skipped message="no CUDA device"/></testcase>'
FAILED = '<testcase classname="t" name="test_c"><failure message="assert 1 == 2"/></testcase>'


def test_a_skipped_gpu_test_fails_the_step(tmp_path):
    assert protocol.gpu_test_verdict(_junit(tmp_path, PASSED * 3)) == (True, "3 GPU tests passed, none skipped")
    ok, why = protocol.gpu_test_verdict(_junit(tmp_path, PASSED + SKIPPED))
    assert not ok and "1 of 2 GPU tests skipped" in why and "test_b: no CUDA device" in why
    ok, why = protocol.gpu_test_verdict(_junit(tmp_path, PASSED + FAILED + SKIPPED))
    assert not ok and "1 failed" in why and "test_c" in why
    ok, why = protocol.gpu_test_verdict(_junit(tmp_path, ""))
    assert not ok and "no GPU test ran" in why
    ok, why = protocol.gpu_test_verdict(tmp_path / "absent.xml")
    assert not ok and "no test report" in why


def test_the_dry_run_passes_only_when_the_skip_check_fires(tmp_path):
    assert protocol.dry_run_verdict(_junit(tmp_path, SKIPPED * 2))[0]
    assert not protocol.dry_run_verdict(_junit(tmp_path, PASSED))[0]  # a "GPU test" that ran on the CPU
    assert not protocol.dry_run_verdict(_junit(tmp_path, ""))[0]  # nothing collected: a typo in the selection


def test_the_goldens_travel_in_an_ignored_folder_the_protocol_names(tmp_path):
    assert protocol.REFERENCE_DIR == ROOT / ".reference"
    ok, why = protocol.check_reference_dir(tmp_path)
    assert not ok and "copy ../shared/reference to .reference and carry it" in why
    for name in protocol.REQUIRED_GOLDENS:
        (tmp_path / name).write_bytes(b"")
    assert protocol.check_reference_dir(tmp_path)[0]
    if shutil.which("git") and (ROOT / ".git").exists():
        # ignored, so it is never committed, and travels only where the device call carries it
        ignored = subprocess.run(["git", "check-ignore", "-q", ".reference/golden_dse_small.npz"], cwd=ROOT)
        assert ignored.returncode == 0


def test_a_step_out_of_time_ends_its_tier_and_the_next_tier_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "TIER_LIMITS_S", {"slow": 2, "next": 5})
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    (work / "logs").mkdir(parents=True)
    p = protocol.Protocol(out=out, dry_run=True, work=work, reference_dir=tmp_path)
    py = sys.executable
    tiers = [protocol.Tier(1, "slow", needs_build=False, steps=[
                 protocol.Step("sleeps", [py, "-c", "import time; time.sleep(60)"], limit_s=30),
                 protocol.Step("never", [py, "-c", "pass"])]),
             protocol.Tier(2, "next", needs_build=False, steps=[protocol.Step("runs", [py, "-c", "print('hi')"])])]
    p.record["tiers"] = [{"tier": t.number, "name": t.name, "status": "pending", "steps": []} for t in tiers]
    start = time.monotonic()
    slow, following = (protocol.run_tier(t, p, say=lambda m: None) for t in tiers)
    assert time.monotonic() - start < 20
    assert slow["status"] == "timed_out" and "the end of tier slow" in slow["steps"][0]["reason"]
    assert [s["status"] for s in slow["steps"]] == ["timed_out", "not_run"]
    assert following["status"] == "passed"
    assert sorted(f.name for f in out.iterdir()) == [protocol.ARCHIVE, protocol.SUMMARY]
    summary = json.loads((out / protocol.SUMMARY).read_text())
    assert summary["counts"]["timed_out"] == 1 and summary["counts"]["passed"] == 1


def test_a_verdict_never_overrules_a_failed_command(tmp_path):
    """The sanitizer exits 1 on an error it found while every test passed: the step fails."""
    (tmp_path / "logs").mkdir()
    p = protocol.Protocol(out=tmp_path, dry_run=True, work=tmp_path, reference_dir=tmp_path)
    tier = protocol.Tier(3, "sanitizer", steps=[])
    step = protocol.Step("sanitizer-memcheck", [sys.executable, "-c", "raise SystemExit(1)"],
                         verdict=lambda: (True, "2 GPU tests passed, none skipped"))
    result = protocol.run_step(step, p, tier, time.monotonic() + 30)
    assert result["status"] == "failed" and result["reason"].startswith("exit 1: 2 GPU tests passed")
    ok = protocol.Step("ok", [sys.executable, "-c", "pass"], verdict=lambda: (False, "1 of 1 GPU tests skipped"))
    assert protocol.run_step(ok, p, tier, time.monotonic() + 30)["status"] == "failed"


def test_a_sanitizer_refused_by_the_machine_is_skipped_saying_so(tmp_path):
    log = tmp_path / "3-sanitizer-memcheck.log"
    log.write_text("========= COMPUTE-SANITIZER\n========= Error: Device not supported\n")
    ok, why = protocol.sanitizer_verdict(log, tmp_path / "absent.xml")
    assert ok is None and "cannot run on this machine" in why and "Device not supported" in why
    log.write_text("========= ERROR SUMMARY: 0 errors\n")
    assert protocol.sanitizer_verdict(log, _junit(tmp_path, PASSED))[0] is True


def test_every_test_file_the_protocol_runs_exists(tmp_path):
    """A test file moved or renamed fails here, not on a lease: the dry run skips the TensorRT
    step, so nothing else runs its path on the CPU."""
    for dry_run in (True, False):
        p = protocol.Protocol(out=tmp_path, dry_run=dry_run, work=tmp_path, reference_dir=tmp_path)
        named = {arg for tier in protocol.build_tiers(p) for step in tier.steps for arg in step.argv or ()
                 if str(arg).startswith("tests/")}
        assert set(protocol.GPU_TESTS) < named  # and the kernel, TensorRT and compiled steps' files
        assert sorted(path for path in named if not (ROOT / path).is_file()) == []


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    """The output folder of a dry run: CI's (EGSDE_DRY_RUN_OUT), or one run here."""
    if os.environ.get("EGSDE_DRY_RUN_OUT"):
        return Path(os.environ["EGSDE_DRY_RUN_OUT"])
    out = tmp_path_factory.mktemp("dry-run")
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_protocol.sh"), "--dry-run"], cwd=ROOT,
                          env={**os.environ, "OUT": str(out)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_dry_run_brings_back_one_archive_and_one_summary(dry_run):
    files = [p for p in dry_run.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == [protocol.ARCHIVE, protocol.SUMMARY]
    assert len(files) <= protocol.MAX_FILES and all(p.stat().st_size < MIB16 for p in files)


def test_the_summary_says_what_ran_and_the_planned_budget(dry_run):
    summary = json.loads((dry_run / protocol.SUMMARY).read_text())
    assert SUMMARY_FIELDS <= set(summary)
    assert summary["dry_run"] is True and summary["device"] == "cpu"
    assert summary["planned_budget_s"] == sum(summary["tier_limits_s"].values()) <= 480
    assert [t["name"] for t in summary["tiers"]] == TIER_NAMES
    tiers = {t["name"]: t for t in summary["tiers"]}
    for tier in summary["tiers"]:
        assert tier["status"] in ("passed", "failed", "timed_out", "skipped") and tier["reason"]
    assert tiers["correctness"]["status"] == "passed"
    gpu_tests = next(s for s in tiers["correctness"]["steps"] if s["name"] == "gpu-tests")
    assert "the skip check fired" in gpu_tests["reason"]
    assert tiers["headline"]["status"] == "passed"
    assert tiers["sanitizer"]["status"] == "skipped" and "dry run" in tiers["sanitizer"]["reason"]
    # the dry run gives the compiled plans' build seconds: the time-out path runs, and is recorded
    assert tiers["compiled"]["status"] == "timed_out"
    assert [s["status"] for s in tiers["compiled"]["steps"]] == ["skipped", "passed", "timed_out", "not_run", "not_run"]
    assert "TensorRT needs a GPU" in tiers["compiled"]["steps"][0]["reason"]
    assert summary["counts"] == {"run": 3, "passed": 2, "failed": 0, "timed_out": 1, "skipped": 1, "pending": 0,
                                 "running": 0}


def test_the_headline_compares_the_engine_with_the_eager_fp32_reference(dry_run):
    headline = json.loads((dry_run / protocol.SUMMARY).read_text())["headline"]
    names = [r["name"] for r in headline["runs"]]
    assert names == ["eager fp32 b1", "torch fp32 b1", "eager fp32 b2", "torch fp32 b2", "torch bf16 b1",
                     "torch bf16 b2"]
    assert headline["complete"] and "extrapolated linearly" in headline["timing"]
    for r in headline["runs"]:
        assert r["speedup_vs_eager_fp32"] > 0 and r["extrapolated"] and r["per_step_ms"]["score"] > 0
        assert r["timed_path"] == ("eager (reference.translate)" if r["name"].startswith("eager") else "uncaptured")


def test_the_archive_holds_every_log_and_record(dry_run):
    summary = json.loads((dry_run / protocol.SUMMARY).read_text())
    with tarfile.open(dry_run / protocol.ARCHIVE) as tar:
        members = set(tar.getnames())
        assert json.loads(tar.extractfile("gpu-protocol/summary.json").read())["finished"] == summary["finished"]
    logs = {f"gpu-protocol/{s['log']}" for t in summary["tiers"] for s in t["steps"] if s.get("log")}
    records = {f"gpu-protocol/{name}" for name in ("bench-fp32.json", "bench-bf16.json", "bench-fp32.png",
                                                   "kernels.json", "gpu-tests.xml")}
    assert logs and logs | records <= members
    assert set(summary["archive_files"]) | {"gpu-protocol/summary.json"} == members
